"""Point-in-time recovery of PostgreSQL: a base backup and the WAL after it, as a data directory.

The restore does not need the server: it writes a data directory that PostgreSQL, started
on it, brings to the chosen time by itself.

1. **The plan** (:func:`plan_recovery`): a base backup, and the WAL archive of the same
   server (``pg.system``) along one history: the backup's own timeline, or one that forked
   from it after the backup's end (a server restored from this archive and archived into
   it again, whose ``0000000N.history`` says where it forked). From the backup's end on,
   the archive's segments must follow one another without a hole up to a drain whose
   ``pg.archived_until`` is at or after the target; the latest such time is as far as the
   restore can go.

   - To a time: the newest base backup that ended by then, on its own timeline if that
     reaches the time (a time names the history archived then), else on the first timeline
     forked from it that does; then the older base backups the same way.
   - To the end (no target): the newest timeline (a restored server's, once archived),
     from the newest base backup it descends from. Until the restored server has a base
     backup of its own, that is the old server's, replayed up to the fork and then along
     the new timeline; never the old history past the fork, which the restore undid.
   - One base backup (``snapshot``) needs no archive: it recovers to the backup's own end.

   A target outside what the archive covers is refused with the times it could reach,
   before anything is written.
2. **The data directory**: the base backup's tar extracted into an empty directory (owners
   kept when the process may give files away, i.e. has ``CAP_CHOWN``), mode 0700 as
   PostgreSQL demands.
3. **The WAL**: the segments the recovery replays, from the backup's start to the last one
   archived, into ``safehold-wal/`` inside the data directory (a ``.partial`` segment under
   its full name: PostgreSQL reads what it holds and stops at its end).
4. **The recovery settings**, appended to ``postgresql.auto.conf``, and ``recovery.signal``:
   ``restore_command`` copies from ``safehold-wal/`` (relative: PostgreSQL runs it in the
   data directory, wherever a pod mounts it), ``recovery_target_timeline`` (``current``, or
   the forked timeline's number), ``recovery_target_time`` (empty: replay all;
   every other target emptied, against settings an earlier restore left in the file),
   ``recovery_target_action = 'promote'`` and ``recovery_end_command`` removing
   ``safehold-wal/`` once recovery is over.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from safehold.engine.databases.client import DumpError
from safehold.engine.databases.physical import (
    BASE_FILE,
    base_source,
    parse_history,
    parse_lsn,
    segment_name,
)
from safehold.engine.databases.restore import dump_file, read_chunks
from safehold.engine.databases.wal import Segment, WalArchive, read_archive
from safehold.repo import Repository, Snapshot

__all__ = [
    "WAL_DIR",
    "RecoveryCheck",
    "RecoveryPlan",
    "RecoveryResult",
    "check_recovery",
    "check_target",
    "plan_recovery",
    "restore_pitr",
]

WAL_DIR = "safehold-wal"
_SETTINGS_MARK = "# Added by safehold restore-pitr"


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class RecoveryPlan:
    base: Snapshot
    segments: list[Segment]  # in order, from the base backup's start
    histories: list[Segment]
    target: datetime | None  # None: replay all the archive holds (or, immediate, none)
    reachable_until: datetime  # the latest time this base backup and archive reach
    #: The timeline recovered to: the base backup's own, or one forked from it after its
    #: end (a server restored from it, archived into the same source).
    timeline: int
    #: Recover to the base backup's own end (``recovery_target = 'immediate'``): the WAL
    #: its tar holds is all the recovery replays.
    immediate: bool = False
    #: What the user must know before starting a server on the result (a restore to the
    #: end that a hole in the archive stops short of its newest WAL).
    warnings: list[str] = field(default_factory=list)


@dataclass
class RecoveryResult:
    plan: RecoveryPlan
    directory: str
    bytes_written: int = 0
    files: int = 0

    def summary(self) -> dict[str, Any]:
        p = self.plan
        return {
            "base_snapshot": p.base.id,
            "base_end_time": p.base.meta.get("pg.end_time"),
            "target_time": _iso(p.target) if p.target else None,
            "immediate": p.immediate,
            "timeline": p.timeline,
            "base_timeline": int(p.base.meta["pg.timeline"]),
            "reachable_until": _iso(p.reachable_until),
            "wal_segments": len(p.segments),
            "directory": self.directory,
            "files": self.files,
            "bytes_written": self.bytes_written,
            "warnings": p.warnings,
        }


def _bases(repo: Repository, prefix: str) -> list[Snapshot]:
    found = [s for s in repo.snapshots(source=base_source(prefix)) if "pg.end_time" in s.meta]
    if not found:
        raise DumpError(
            f"no PostgreSQL base backup under source {prefix!r}: take one with "
            "'safehold pg-basebackup', after 'safehold pg-archive-wal' has run once"
        )
    return sorted(found, key=lambda s: _time(s.meta["pg.end_time"]))


@dataclass(frozen=True)
class _Leg:
    """A stretch of the history a recovery replays: timeline ``timeline`` from position
    ``begin`` (0 on the base backup's own timeline) up to ``end``, where the next timeline
    forked from it (None: as far as the archive holds it)."""

    timeline: int
    begin: int
    end: int | None


def _ancestry(repo: Repository, archive: WalArchive) -> dict[int, list[tuple[int, int]]]:
    """Each timeline's ancestors, from its history file in the archive."""
    return {
        int(name[:8], 16): parse_history(b"".join(segment.read(repo)).decode("ascii", "replace"))
        for name, segment in archive.histories.items()
    }


def _legs(
    ancestry: dict[int, list[tuple[int, int]]], base: Snapshot, timeline: int
) -> list[_Leg] | None:
    """The history from ``base`` to ``timeline``, or None when ``timeline`` does not
    descend from the base backup's timeline at or after the backup's end (a fork before
    the end: the backup holds WAL that ``timeline`` never had)."""
    own = int(base.meta["pg.timeline"])
    if timeline == own:
        return [_Leg(own, 0, None)]
    steps = ancestry.get(timeline, [])
    start = next((i for i, (parent, _) in enumerate(steps) if parent == own), None)
    if start is None or steps[start][1] < parse_lsn(base.meta["pg.end_lsn"]):
        return None
    legs, begin = [], 0
    for parent, fork in steps[start:]:
        legs.append(_Leg(parent, begin, fork))
        begin = fork
    return [*legs, _Leg(timeline, begin, None)]


def _file_timeline(legs: list[_Leg], number: int, size: int) -> int:
    """Whose file a recovery along ``legs`` reads for segment ``number``: the newest
    timeline begun by the segment's start (PostgreSQL's rule; the file of the segment a
    timeline forked in holds the parent's WAL up to the fork, then the child's)."""
    timeline = legs[0].timeline
    for leg in legs[1:]:
        if leg.begin // size <= number:
            timeline = leg.timeline
    return timeline


def _chain(
    archive: WalArchive, base: Snapshot, legs: list[_Leg]
) -> tuple[list[Segment], datetime | None]:
    """The archive's segments a recovery from ``base`` along ``legs`` replays, and the
    latest time they reach (None: nothing past the backup's end).

    The base backup's tar holds the WAL from its start segment to its end segment; the
    archive must go on from there, segment after segment, each of the timeline ``legs``
    reads it from: its first hole ends the chain. A drain's ``archived_until`` is
    reachable when it drained a timeline of ``legs``, ended inside the chain, and ended
    before that timeline forked (a drain past the fork holds a history the recovery
    leaves).
    """
    size = int(base.meta["pg.wal_segment_size"])
    start, end = parse_lsn(base.meta["pg.start_lsn"]), parse_lsn(base.meta["pg.end_lsn"])
    first = start // size

    def name(number: int) -> str:
        return segment_name(_file_timeline(legs, number, size), number * size, size)

    # WAL up to a position lies in the segments of the bytes before it: a position at a
    # segment's first byte (after a switch) needs nothing of that segment
    last = (end - 1) // size  # the tar's last segment, unless a child forked in it
    if _file_timeline(legs, last, size) != legs[0].timeline and name(last) not in archive.segments:
        last -= 1
    while name(last + 1) in archive.segments:
        last += 1
    reach: datetime | None = None
    for snap in archive.snapshots:
        leg = next((g for g in legs if g.timeline == int(snap.meta.get("pg.timeline", "0"))), None)
        drained = parse_lsn(snap.meta["pg.end_lsn"])
        if leg is None or drained < end or (drained - 1) // size > last:
            continue
        if leg.end is not None and drained > leg.end:
            continue
        until = _time(snap.meta["pg.archived_until"])
        reach = until if reach is None or until > reach else reach
    chain = [
        archive.segments[name(n)] for n in range(first, last + 1) if name(n) in archive.segments
    ]
    return chain, reach


def _chosen_base(bases: list[Snapshot], prefix: str, snapshot: str) -> Snapshot:
    found = [b for b in bases if b.id.startswith(snapshot.lower())]
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise DumpError(
            f"{what} base backup of source {prefix!r} has an id beginning {snapshot!r}: "
            "'safehold snapshots --source PREFIX/pg/base' lists them"
        )
    return found[0]


@dataclass
class _Archive:
    """One server's archive as a recovery reads it: segments, histories, ancestry."""

    wal: WalArchive
    ancestry: dict[int, list[tuple[int, int]]]

    @classmethod
    def read(cls, repo: Repository, prefix: str, system: str) -> _Archive:
        wal = read_archive(repo, prefix, system)
        return cls(wal, _ancestry(repo, wal))

    def histories(self) -> list[Segment]:
        return sorted(self.wal.histories.values(), key=lambda s: s.name)

    def newest_timeline(self, bases: list[Snapshot]) -> int:
        """The timeline of the server archived last: timelines only grow, a restored
        server's is higher than every one in the archive it was restored from."""
        kept = [*self.wal.snapshots, *bases]
        return max(int(s.meta.get("pg.timeline", "0")) for s in kept)

    def archived_until(self, timeline: int) -> datetime | None:
        """The newest time archived of ``timeline``, hole or not."""
        times = [
            _time(s.meta["pg.archived_until"])
            for s in self.wal.snapshots
            if int(s.meta.get("pg.timeline", "0")) == timeline
        ]
        return max(times, default=None)

    def plan(
        self, base: Snapshot, timeline: int, target: datetime | None
    ) -> tuple[RecoveryPlan, datetime | None] | None:
        """A recovery from ``base`` along the history to ``timeline`` and the latest time
        its WAL reaches (None: nothing past the backup's end), or None when that timeline
        does not descend from the base backup."""
        legs = _legs(self.ancestry, base, timeline)
        if legs is None:
            return None
        segments, reach = _chain(self.wal, base, legs)
        reachable = reach or _time(base.meta["pg.end_time"])
        plan = RecoveryPlan(base, segments, self.histories(), target, reachable, timeline)
        return plan, reach


def _plan_to_the_end(repo: Repository, prefix: str, bases: list[Snapshot]) -> RecoveryPlan:
    """As far as the archive goes, on the newest timeline: after a restore, the restored
    server's history, from the old server's base backups until it has its own."""
    system = bases[-1].meta["pg.system"]
    ours = [b for b in bases if b.meta["pg.system"] == system]
    archive = _Archive.read(repo, prefix, system)
    timeline = archive.newest_timeline(ours)
    for base in reversed(ours):
        found = archive.plan(base, timeline, None)
        if found is not None:
            plan = found[0]
            archived = archive.archived_until(timeline)
            if archived is not None and archived > plan.reachable_until:
                plan.warnings.append(
                    f"the archive holds timeline {timeline}'s WAL up to {_iso(archived)}, but "
                    f"a hole stops a restore from base backup {base.id[:12]} at "
                    f"{_iso(plan.reachable_until)}: take a base backup of that server "
                    "('safehold pg-basebackup') so that restores reach its newest WAL"
                )
            return plan
    raise DumpError(
        f"the archive under source {prefix!r} ends on timeline {timeline} (a restored "
        "server's), which forked from no base backup it holds: take a base backup of that "
        "server ('safehold pg-basebackup'), or restore an earlier time with --to"
    )


def _plan_to(
    repo: Repository, prefix: str, bases: list[Snapshot], target: datetime
) -> RecoveryPlan:
    """To ``target``, from the newest base backup ended by then: on its own timeline when
    that reaches the target (a time names the history that was archived then), else on
    the first timeline that descends from it and does (a server restored from it)."""
    usable = [b for b in bases if _time(b.meta["pg.end_time"]) <= target]
    if not usable:
        raise DumpError(
            f"no base backup under source {prefix!r} ended by {_iso(target)}: the oldest "
            f"ended at {bases[0].meta['pg.end_time']}, the earliest time a restore can reach"
        )
    archives: dict[str, _Archive] = {}
    best: RecoveryPlan | None = None
    for base in reversed(usable):
        system = base.meta["pg.system"]
        if system not in archives:
            archives[system] = _Archive.read(repo, prefix, system)
        archive, own = archives[system], int(base.meta["pg.timeline"])
        for timeline in [own, *sorted(t for t in archive.ancestry if t > own)]:
            found = archive.plan(base, timeline, target)
            if found is None:
                continue
            plan, reach = found
            if reach is not None and reach >= target:
                return plan
            if best is None or plan.reachable_until > best.reachable_until:
                best = plan
    assert best is not None  # a base backup's own timeline always plans
    raise DumpError(
        f"the WAL archive under source {prefix!r} reaches up to {_iso(best.reachable_until)} "
        f"from base backup {best.base.id[:12]} (ended {best.base.meta['pg.end_time']}), not "
        f"{_iso(target)}: choose an earlier time, or run 'safehold pg-archive-wal' and try again"
    )


def plan_recovery(
    repo: Repository, prefix: str, target: datetime | None, *, snapshot: str | None = None
) -> RecoveryPlan:
    """The base backup and WAL that bring the server to ``target`` (None: as far as the
    archive goes), or a DumpError naming the times that can be reached. With ``snapshot``
    (a base backup's id or its beginning), that base backup to its own end, no archive
    needed."""
    bases = _bases(repo, prefix)
    if snapshot is None:
        return (
            _plan_to(repo, prefix, bases, target)
            if target is not None
            else _plan_to_the_end(repo, prefix, bases)
        )
    base = _chosen_base(bases, prefix, snapshot)
    archive = _Archive.read(repo, prefix, base.meta["pg.system"])
    end = _time(base.meta["pg.end_time"])
    timeline = int(base.meta["pg.timeline"])
    return RecoveryPlan(base, [], archive.histories(), None, end, timeline, immediate=True)


class _ChunkStream(io.RawIOBase):
    """Chunks as a readable stream, for tarfile."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            nxt = next(self._chunks, None)
            if nxt is None:
                return 0
            self._rest = nxt
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


def _base_tar(repo: Repository, base: Snapshot) -> io.BufferedReader:
    """The base backup's ``base.tar`` as a stream, each chunk checked as it is read."""
    name, ids = dump_file(repo, base)
    if name != BASE_FILE:
        raise DumpError(f"snapshot {base.id[:12]} holds {name!r}, not a base backup's {BASE_FILE}")
    return io.BufferedReader(_ChunkStream(read_chunks(repo, ids)), 1 << 20)


def _extract(
    repo: Repository, base: Snapshot, directory: str, keep_owners: bool
) -> tuple[int, int]:
    """The base backup's tar into ``directory``; files and bytes written."""
    files = size = 0
    with tarfile.open(fileobj=_base_tar(repo, base), mode="r|") as tar:
        for member in tar:
            # the data filter's checks (no path out of the directory, no device), but the
            # directories' own modes: PostgreSQL's are 0700, and new files follow them
            safe = tarfile.data_filter(member, directory)
            if member.isdir():
                safe = safe.replace(mode=member.mode & 0o777)
            if keep_owners:  # the filter leaves owners out
                safe = safe.replace(uid=member.uid, gid=member.gid)  # numeric_owner: ids only
            tar.extract(safe, directory, numeric_owner=True, filter="fully_trusted")
            if member.isfile():
                files += 1
                size += member.size
    os.chmod(directory, 0o700)
    if keep_owners:
        _give_to_server(directory)
    return files, size


def _give_to_server(directory: str) -> None:
    """Give everything in the data directory to the owner of its ``PG_VERSION``: the server's
    user, which must own all of it (pg_basebackup's tar gives its manifest another)."""
    st = os.stat(os.path.join(directory, "PG_VERSION"))
    os.chown(directory, st.st_uid, st.st_gid)
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            os.chown(os.path.join(root, name), st.st_uid, st.st_gid, follow_symlinks=False)


def _write_segment(repo: Repository, segment: Segment, path: str) -> int:
    written = 0
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        for chunk in segment.read(repo):
            f.write(chunk)
            written += len(chunk)
    return written


def _settings(plan: RecoveryPlan) -> str:
    """The recovery settings, every target among them: the last setting of a name in the
    file wins, and a base backup of a server that was itself restored carries that
    restore's settings (its ``recovery_target_time`` would stop this recovery there).

    The targets not used are set empty *before* the one used: PostgreSQL applies the
    settings in the file's order and refuses any target, even an empty one, that comes
    after another target was set ("multiple recovery targets specified")."""
    targets = dict.fromkeys(
        ("recovery_target", "recovery_target_name", "recovery_target_lsn",
         "recovery_target_xid", "recovery_target_time"), "",
    )  # fmt: skip
    chosen = None
    if plan.immediate:
        chosen, value = "recovery_target", "immediate"
    elif plan.target is not None:
        # PostgreSQL's own timestamp form: its check of this setting refuses ISO 8601's "T...Z"
        chosen = "recovery_target_time"
        value = plan.target.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")
    if chosen is not None:
        del targets[chosen]
        targets[chosen] = value
    # 'current' needs no history file (retention may have forgotten it, and PostgreSQL
    # refuses a numbered timeline whose history it cannot read); a timeline forked from the
    # base backup's is named
    own = plan.timeline == int(plan.base.meta["pg.timeline"])
    timeline = "current" if own else str(plan.timeline)
    lines = [
        f"{_SETTINGS_MARK} from base backup {plan.base.id[:12]}: they act only while "
        "recovery.signal exists",
        f"restore_command = 'cp {WAL_DIR}/%f \"%p\" 2>/dev/null'",
        f"recovery_end_command = 'rm -rf {WAL_DIR}'",
        "recovery_target_action = 'promote'",
        f"recovery_target_timeline = '{timeline}'",
        "recovery_target_inclusive = on",
        *(f"{name} = '{value}'" for name, value in targets.items()),
    ]
    return "\n".join(lines) + "\n"


def check_target(directory: str, *, keep_owners: bool) -> None:
    """Refuse, before writing anything, a ``directory`` that cannot become a data directory:
    one that holds anything (a data directory is written whole), or, without the right to
    give files away (``keep_owners``), one that belongs to another user: PostgreSQL starts
    only on a data directory of its own user, mode 0700, and a claim's root is root's."""
    if os.path.lexists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise DumpError(f"{directory} is not an empty directory: a data directory is written whole")
    owner = os.stat(directory).st_uid if os.path.isdir(directory) else os.geteuid()
    if owner != os.geteuid() and not keep_owners:
        raise DumpError(
            f"{directory} belongs to uid {owner}, and a data directory must be the server's "
            "own (mode 0700): write it into a new directory inside (a RestoreRequest's "
            "target.path, e.g. pgdata), or restore as root"
        )


def restore_pitr(
    repo: Repository,
    prefix: str,
    target: datetime | None,
    directory: str,
    *,
    keep_owners: bool,
    snapshot: str | None = None,
) -> RecoveryResult:
    """Write a data directory that recovers to ``target``, or to the end of base backup
    ``snapshot`` (see the module's steps)."""
    plan = plan_recovery(repo, prefix, target, snapshot=snapshot)
    check_target(directory, keep_owners=keep_owners)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    result = RecoveryResult(plan, directory)
    result.files, result.bytes_written = _extract(repo, plan.base, directory, keep_owners)
    wal = os.path.join(directory, WAL_DIR)
    os.mkdir(wal, 0o700)
    for segment in [*plan.histories, *plan.segments]:
        result.bytes_written += _write_segment(repo, segment, os.path.join(wal, segment.name))
        result.files += 1
    with open(os.path.join(directory, "postgresql.auto.conf"), "a") as f:
        f.write(_settings(plan))
    os.close(os.open(os.path.join(directory, "recovery.signal"), os.O_WRONLY | os.O_CREAT, 0o600))
    if keep_owners:
        _give_to_server(directory)
    return result


@dataclass
class RecoveryCheck:
    """What :func:`check_recovery` read: the newest base backup whole, and its WAL."""

    plan: RecoveryPlan
    files: int = 0
    bytes: int = 0

    def summary(self) -> dict[str, Any]:
        p = self.plan
        return {
            "base_snapshot": p.base.id,
            "base_end_time": p.base.meta.get("pg.end_time"),
            "reachable_until": _iso(p.reachable_until),
            "wal_segments": len(p.segments),
            "files": self.files,
            "bytes": self.bytes,
            "warnings": p.warnings,
        }


def check_recovery(repo: Repository, prefix: str) -> RecoveryCheck:
    """A test restore without a server or disk: the plan to the end of the archive, the
    newest base backup's tar read to its end (every member, every chunk checked against its
    id), and every WAL segment the recovery would replay. A DumpError (or the repository's
    own error for a damaged object) says what is missing or broken."""
    plan = plan_recovery(repo, prefix, None)
    result = RecoveryCheck(plan)
    names: set[str] = set()
    try:
        with tarfile.open(fileobj=_base_tar(repo, plan.base), mode="r|") as tar:
            for member in tar:
                names.add(member.name.removeprefix("./"))
                data = tar.extractfile(member)
                if data is not None:
                    while chunk := data.read(1 << 20):
                        result.bytes += len(chunk)
                result.files += 1
    except tarfile.TarError as exc:
        raise DumpError(
            f"the base backup {plan.base.id[:12]} is not a whole tar after {result.files} "
            f"members: {exc}"
        ) from exc
    missing = sorted({"PG_VERSION", "backup_label", "global/pg_control"} - names)
    if missing:
        raise DumpError(
            f"the base backup {plan.base.id[:12]} lacks {', '.join(missing)}: it is not a "
            "whole PostgreSQL data directory"
        )
    for segment in [*plan.histories, *plan.segments]:
        for chunk in segment.read(repo):
            result.bytes += len(chunk)
        result.files += 1
    return result
