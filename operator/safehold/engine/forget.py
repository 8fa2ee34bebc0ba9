"""Forget: apply retention policies to a repository's snapshots, deleting snapshot objects.

The decision is :mod:`safehold.engine.retention` (pure, property-tested); this module
reads the snapshots, asks for the decisions and, unless it is a dry run, deletes the
snapshot objects of the snapshots that go, and nothing else: the data they used stays
until ``prune`` (format section 10: snapshots are never referenced by anything, so
removing one never breaks another). One exception to the rules: the drains of a
PostgreSQL WAL archive follow the base backups that stay (``databases.walretention``).
It runs under an exclusive lock so that a running backup's parent snapshot does not
vanish under it.

Under an object lock (docs/immutability.md) a snapshot object cannot be deleted before
its lock expires: forget leaves it, and reports it as locked with the expiry time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from safehold.engine.databases.walretention import follow_bases, is_wal
from safehold.engine.retention import RetentionPolicy, SnapshotFacts, apply_policies
from safehold.repo.layout import SNAPSHOTS, object_id, snapshot_name
from safehold.repo.locks import RepositoryLock
from safehold.repo.repository import Repository
from safehold.repo.snapshot import Snapshot, source_filter
from safehold.storage import ObjectLocked

__all__ = ["ForgetItem", "ForgetReport", "forget_snapshots", "source_filter"]


@dataclass
class ForgetItem:
    """One snapshot and what happens to it."""

    snapshot: Snapshot
    keep: bool
    #: every rule that keeps it, or for each rule why it passed it over
    reasons: tuple[str, ...]
    removed: bool = False
    #: the snapshot goes but its object lock lasts until this time (RFC 3339)
    locked_until: str | None = None

    def to_dict(self) -> dict[str, Any]:
        s = self.snapshot
        return {
            "id": s.id,
            "time": s.time,
            "source": s.source,
            "host": s.host,
            "tags": s.tags,
            "keep": self.keep,
            "reasons": list(self.reasons),
            "removed": self.removed,
            "locked_until": self.locked_until,
        }


@dataclass
class ForgetReport:
    dry_run: bool
    items: list[ForgetItem] = field(default_factory=list)

    @property
    def kept(self) -> list[ForgetItem]:
        return [i for i in self.items if i.keep]

    @property
    def forgotten(self) -> list[ForgetItem]:
        return [i for i in self.items if not i.keep]

    @property
    def removed(self) -> list[ForgetItem]:
        return [i for i in self.items if i.removed]

    @property
    def locked(self) -> list[ForgetItem]:
        return [i for i in self.items if i.locked_until]

    def summary(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "snapshots": len(self.items),
            "keep": len(self.kept),
            "forget": len(self.forgotten),
            "removed": len(self.removed),
            "locked": len(self.locked),
        }


def _decide(
    snapshots: list[Snapshot],
    policies: Mapping[str, RetentionPolicy],
    default: RetentionPolicy | None,
) -> list[ForgetItem]:
    by_id = {s.id: s for s in snapshots}
    facts = [
        SnapshotFacts(s.id, s.datetime, s.source, frozenset(s.tags), s.host) for s in snapshots
    ]
    decisions = apply_policies(policies, facts, default=default)
    return [ForgetItem(by_id[d.snapshot.id], d.keep, d.reasons) for d in decisions]


def _follow_bases(items: list[ForgetItem], every: list[Snapshot]) -> list[ForgetItem]:
    """A WAL archive's drains kept or forgotten by the base backups that stay
    (:mod:`safehold.engine.databases.walretention`), whatever the rules said of them."""
    drains = [i.snapshot for i in items if is_wal(i.snapshot)]
    if not drains:
        return items
    going = {i.snapshot.id for i in items if not i.keep}
    decisions = follow_bases(drains, [s for s in every if s.id not in going])
    for item in items:
        decision = decisions.get(item.snapshot.id)
        if decision is not None:
            item.keep, item.reasons = decision.keep, (decision.reason,)
    return items


def forget_snapshots(
    repo: Repository,
    policy: RetentionPolicy | None,
    *,
    policies: Mapping[str, RetentionPolicy] | None = None,
    sources: Iterable[str] = (),
    source_prefixes: Iterable[str] = (),
    tags: Iterable[str] = (),
    dry_run: bool = False,
) -> ForgetReport:
    """Decide for every snapshot (of ``sources`` and with all ``tags``, when given) and,
    unless ``dry_run``, delete the snapshot objects of those that go.

    ``sources`` are exact source names, ``source_prefixes`` beginnings of names (the
    operator's ``<namespace>/<policy>/``); a snapshot is selected when it matches either,
    and every snapshot when neither is given. ``policies`` maps a source to its own
    policy; ``policy`` is the default for the others (None: they are all kept). The
    items come oldest first.
    """
    selected = source_filter(sources, source_prefixes)
    report = ForgetReport(dry_run=dry_run)

    wanted = set(tags)

    def run() -> None:
        every = repo.snapshots()
        snaps = [s for s in every if selected(s.source) and wanted <= set(s.tags)]
        report.items = _follow_bases(_decide(snaps, policies or {}, policy), every)
        if dry_run:
            return
        lock = repo.object_lock_days
        modified = (
            {object_id(i.name): i.modified for i in repo.storage.list(SNAPSHOTS)} if lock else {}
        )
        now = datetime.now(UTC)
        for item in report.forgotten:
            if lock:
                written = modified.get(item.snapshot.id)
                expiry = (written or now) + timedelta(days=lock)
                if expiry > now:
                    item.locked_until = expiry.isoformat(timespec="seconds").replace("+00:00", "Z")
                    continue
            try:
                repo.storage.delete(snapshot_name(item.snapshot.id))
            except ObjectLocked:
                item.locked_until = "unknown (the server refused the delete)"
                continue
            item.removed = True

    if dry_run:
        run()
    else:
        with RepositoryLock(repo, exclusive=True, operation="forget"):
            run()
    return report
