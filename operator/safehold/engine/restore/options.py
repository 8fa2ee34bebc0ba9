"""What a restore is asked to do (:class:`RestoreOptions`) and what it did
(:class:`RestoreResult`, whose ``summary()`` is the command's JSON summary)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from safehold.repo import Snapshot

if TYPE_CHECKING:
    from safehold.engine.restore.check import RestoreCheck

__all__ = ["RestoreOptions", "RestoreResult"]


@dataclass
class RestoreOptions:
    #: Patterns of the paths inside the snapshot to restore, and to leave out (the backup's
    #: language, :mod:`safehold.engine.restore.select`); none: everything.
    includes: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    workers: int = 0  # threads decoding and writing; 0: one per available CPU
    #: Reads in flight (shared out between processes); 0: as suits the storage (state.py).
    fetchers: int = 0
    #: Most processes to use; 0: one per available CPU. More than one only for a restore
    #: into a new (or empty) directory without a download limit.
    processes: int = 0
    owners: bool | None = None  # None: restore owners when the process may (safe_fs.may_chown)
    #: Then read every restored file back and check it against the snapshot
    #: (:mod:`safehold.engine.restore.check`): ``RestoreResult.check``.
    verify: bool = False


@dataclass
class RestoreResult:
    snapshot: Snapshot
    files: int = 0
    files_skipped: int = 0  # already complete from an earlier run
    dirs: int = 0
    links: int = 0
    special: int = 0
    bytes_written: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    processes: int = 1  # that restored in parallel (restore.parts)
    #: include patterns that matched nothing (others did), with the paths closest to each
    unmatched: list[dict[str, Any]] = field(default_factory=list)
    #: with ``RestoreOptions.verify``: what reading the restored files back found
    check: RestoreCheck | None = None
    #: seconds the restore took, its read-back included
    duration_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        doc = {
            "snapshot": self.snapshot.id,
            "source": self.snapshot.source,
            "files": self.files,
            "files_skipped": self.files_skipped,
            "dirs": self.dirs,
            "links": self.links,
            "special": self.special,
            "bytes_written": self.bytes_written,
            "errors": len(self.errors),
            "processes": self.processes,
            "unmatched_includes": self.unmatched,
            "duration_s": round(self.duration_s, 3),
        }
        if self.check is not None:
            doc["verify"] = self.check.summary()
        return doc
