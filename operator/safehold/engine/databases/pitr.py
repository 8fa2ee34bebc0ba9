"""Point-in-time recovery of PostgreSQL: a base backup and the WAL after it, as a data directory.

The restore does not need the server: it writes a data directory that PostgreSQL, started
on it, brings to the chosen time by itself.

1. **The plan** (:func:`plan_recovery`): the newest base backup of the prefix that ended at
   or before the target time, and the WAL archive of the same server (``pg.system``) and
   timeline. From the backup's end on, the archive's segments must follow one another
   without a hole up to a drain whose ``pg.archived_until`` is at or after the target; the
   latest such time is as far as any restore can go. A target outside what the archive
   covers is refused with the times it could reach, before anything is written. A restore
   of one base backup (``snapshot``) needs no archive: it recovers to the backup's own end.
2. **The data directory**: the base backup's tar extracted into an empty directory (owners
   kept when the process may give files away, i.e. has ``CAP_CHOWN``), mode 0700 as
   PostgreSQL demands.
3. **The WAL**: the segments the recovery replays, from the backup's start to the last one
   archived, into ``safehold-wal/`` inside the data directory (a ``.partial`` segment under
   its full name: PostgreSQL reads what it holds and stops at its end).
4. **The recovery settings**, appended to ``postgresql.auto.conf``, and ``recovery.signal``:
   ``restore_command`` copies from ``safehold-wal/`` (relative: PostgreSQL runs it in the
   data directory, wherever a pod mounts it), ``recovery_target_time`` (empty: replay all;
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
    parse_lsn,
    segment_name,
    segment_number,
)
from safehold.engine.databases.restore import dump_file, read_chunks
from safehold.engine.databases.wal import Segment, read_archive
from safehold.repo import Repository, Snapshot

__all__ = [
    "WAL_DIR",
    "RecoveryCheck",
    "RecoveryPlan",
    "RecoveryResult",
    "check_recovery",
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
    #: Recover to the base backup's own end (``recovery_target = 'immediate'``): the WAL
    #: its tar holds is all the recovery replays.
    immediate: bool = False


@dataclass
class RecoveryResult:
    plan: RecoveryPlan
    directory: str
    bytes_written: int = 0
    files: int = 0
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        p = self.plan
        return {
            "base_snapshot": p.base.id,
            "base_end_time": p.base.meta.get("pg.end_time"),
            "target_time": _iso(p.target) if p.target else None,
            "immediate": p.immediate,
            "reachable_until": _iso(p.reachable_until),
            "wal_segments": len(p.segments),
            "directory": self.directory,
            "files": self.files,
            "bytes_written": self.bytes_written,
            "warnings": self.warnings,
        }


def _bases(repo: Repository, prefix: str) -> list[Snapshot]:
    found = [s for s in repo.snapshots(source=base_source(prefix)) if "pg.end_time" in s.meta]
    if not found:
        raise DumpError(
            f"no PostgreSQL base backup under source {prefix!r}: take one with "
            "'safehold pg-basebackup', after 'safehold pg-archive-wal' has run once"
        )
    return sorted(found, key=lambda s: _time(s.meta["pg.end_time"]))


def _chain(
    repo: Repository, prefix: str, base: Snapshot
) -> tuple[list[Segment], list[Segment], datetime | None]:
    """The archive's segments a recovery from ``base`` replays, its timeline history files,
    and the latest time they reach (None: the archive holds nothing past the backup's end).

    The base backup's tar holds the WAL from its start segment to its end segment; the
    archive must go on from there, segment after segment: its first hole ends the chain. A
    drain's ``archived_until`` is reachable when its end position lies inside the chain.
    """
    system, timeline = base.meta["pg.system"], int(base.meta["pg.timeline"])
    size = int(base.meta["pg.wal_segment_size"])
    start, end = parse_lsn(base.meta["pg.start_lsn"]), parse_lsn(base.meta["pg.end_lsn"])
    first = segment_number(segment_name(timeline, start, size), size)
    # WAL up to a position lies in the segments of the bytes before it: a position at a
    # segment's first byte (after a switch) needs nothing of that segment
    after = segment_number(segment_name(timeline, end - 1, size), size)  # the tar's last
    archive = read_archive(repo, prefix, system)
    own = {
        segment_number(name, size): seg
        for name, seg in archive.segments.items()
        if int(name[:8], 16) == timeline
    }
    last = after
    while last + 1 in own:
        last += 1
    reach: datetime | None = None
    for snap in archive.snapshots:
        if int(snap.meta.get("pg.timeline", "0")) != timeline:
            continue
        drained = parse_lsn(snap.meta["pg.end_lsn"])
        if drained < end or segment_number(segment_name(timeline, drained - 1, size), size) > last:
            continue
        until = _time(snap.meta["pg.archived_until"])
        reach = until if reach is None or until > reach else reach
    chain = [own[n] for n in sorted(own) if first <= n <= last]
    return chain, sorted(archive.histories.values(), key=lambda s: s.name), reach


def _chosen_base(bases: list[Snapshot], prefix: str, snapshot: str) -> Snapshot:
    found = [b for b in bases if b.id.startswith(snapshot.lower())]
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise DumpError(
            f"{what} base backup of source {prefix!r} has an id beginning {snapshot!r}: "
            "'safehold snapshots --source PREFIX/pg/base' lists them"
        )
    return found[0]


def plan_recovery(
    repo: Repository, prefix: str, target: datetime | None, *, snapshot: str | None = None
) -> RecoveryPlan:
    """The base backup and WAL that bring the server to ``target`` (None: as far as the
    archive goes), or a DumpError naming the times that can be reached. With ``snapshot``
    (a base backup's id or its beginning), that base backup to its own end, no archive
    needed."""
    bases = _bases(repo, prefix)
    if snapshot is not None:
        base = _chosen_base(bases, prefix, snapshot)
        histories = sorted(read_archive(repo, prefix, base.meta["pg.system"]).histories.values(),
                           key=lambda s: s.name)  # fmt: skip
        end = _time(base.meta["pg.end_time"])
        return RecoveryPlan(base, [], histories, None, end, immediate=True)
    if target is None:
        base = bases[-1]
    else:
        usable = [b for b in bases if _time(b.meta["pg.end_time"]) <= target]
        if not usable:
            raise DumpError(
                f"no base backup under source {prefix!r} ended by {_iso(target)}: the oldest "
                f"ended at {bases[0].meta['pg.end_time']}, the earliest time a restore can reach"
            )
        base = usable[-1]
    segments, histories, reach = _chain(repo, prefix, base)
    reachable = reach or _time(base.meta["pg.end_time"])
    if target is not None and (reach is None or target > reach):
        raise DumpError(
            f"the WAL archive under source {prefix!r} reaches up to {_iso(reachable)} from "
            f"base backup {base.id[:12]} (ended {base.meta['pg.end_time']}), not "
            f"{_iso(target)}: choose an earlier time, or run 'safehold pg-archive-wal' and "
            "try again"
        )
    return RecoveryPlan(base, segments, histories, target, reachable)


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
    lines = [
        f"{_SETTINGS_MARK} from base backup {plan.base.id[:12]}: they act only while "
        "recovery.signal exists",
        f"restore_command = 'cp {WAL_DIR}/%f \"%p\" 2>/dev/null'",
        f"recovery_end_command = 'rm -rf {WAL_DIR}'",
        "recovery_target_action = 'promote'",
        "recovery_target_timeline = 'current'",
        "recovery_target_inclusive = on",
        *(f"{name} = '{value}'" for name, value in targets.items()),
    ]
    return "\n".join(lines) + "\n"


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
    if os.path.lexists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise DumpError(f"{directory} is not an empty directory: a data directory is written whole")
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
