"""What replication is asked (:class:`ReplicateOptions`), what it counts and reports
(:class:`ReplicateResult`), and its error."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from safehold.repo.errors import RepositoryError

__all__ = ["KINDS", "ObjectCounts", "ReplicateOptions", "ReplicateResult", "ReplicationError"]

#: The kinds of object replication copies, in the order it writes them.
KINDS = ("keys", "config", "data", "index", "snapshots")


class ReplicationError(RepositoryError):
    """Replication cannot proceed (a different repository at the site) or did not finish."""


@dataclass
class ReplicateOptions:
    """What to copy and how.

    ``sources`` (exact names) and ``source_prefixes`` (beginnings of names, such as the
    operator's ``namespace/policy/``) and ``tags`` filter the primary's snapshots (any of the
    sources or prefixes, all of the tags); ``newest`` then keeps the newest N of each
    source; ``only_newer`` skips a snapshot older than the site's newest of its source and
    host (so a site's own retention is not undone by the next run).
    """

    sources: list[str] = field(default_factory=list)
    source_prefixes: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    newest: int | None = None
    only_newer: bool = False
    jobs: int = 4
    server_side: bool = True
    read_back: bool = False
    dry_run: bool = False
    #: A fresh index object at the site after every this many arrived packs (and at the end).
    index_every: int = 64


@dataclass
class ObjectCounts:
    """Objects and bytes of one kind: copied (server side or streamed) and skipped."""

    copied: int = 0
    copied_bytes: int = 0
    server_side: int = 0
    skipped: int = 0
    skipped_bytes: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "copied": self.copied,
            "copied_bytes": self.copied_bytes,
            "server_side": self.server_side,
            "skipped": self.skipped,
            "skipped_bytes": self.skipped_bytes,
        }


@dataclass
class ReplicateResult:
    source: str
    target: str
    repository: str
    site_created: bool = False
    dry_run: bool = False
    selected: int = 0
    snapshots_copied: list[str] = field(default_factory=list)
    snapshots_present: list[str] = field(default_factory=list)
    snapshots_older: list[str] = field(default_factory=list)
    #: snapshots that cannot be copied because the primary is damaged: id -> why
    snapshots_failed: dict[str, str] = field(default_factory=dict)
    counts: dict[str, ObjectCounts] = field(
        default_factory=lambda: {kind: ObjectCounts() for kind in KINDS}
    )
    duration_s: float = 0.0
    #: source -> time of the newest snapshot the site holds after the run, for every source
    #: the source options select (the operator's replication lag); empty when no site exists
    site_newest: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.snapshots_failed

    def total(self) -> ObjectCounts:
        total = ObjectCounts()
        for c in self.counts.values():
            total.copied += c.copied
            total.copied_bytes += c.copied_bytes
            total.server_side += c.server_side
            total.skipped += c.skipped
            total.skipped_bytes += c.skipped_bytes
        return total

    def summary(self) -> dict[str, Any]:
        """A compact summary (fits a Kubernetes termination message)."""
        return {
            "ok": self.ok,
            "source": self.source,
            "target": self.target,
            "repository": self.repository,
            "site_created": self.site_created,
            "dry_run": self.dry_run,
            "snapshots_selected": self.selected,
            "snapshots_copied": len(self.snapshots_copied),
            "snapshots_present": len(self.snapshots_present),
            "snapshots_older": len(self.snapshots_older),
            "snapshots_failed": dict(list(self.snapshots_failed.items())[:5]),
            "copied": [s[:12] for s in self.snapshots_copied[:20]],
            "objects": {kind: c.to_dict() for kind, c in self.counts.items()},
            "total": self.total().to_dict(),
            "duration_s": round(self.duration_s, 3),
            "site_newest": dict(sorted(self.site_newest.items())),
        }
