"""What a backup is asked to do and what it returns."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from safehold.repo import (
    Snapshot,
)

__all__ = ["BackupError", "BackupOptions", "BackupResult"]


class BackupError(Exception):
    """The backup could not run at all (bad paths, name clashes, bad patterns)."""


@dataclass
class BackupOptions:
    source: str | None = None
    type: str | None = None  # None: incremental when a parent exists, else full
    tags: list[str] = field(default_factory=list)
    time: datetime | None = None
    workers: int = 0  # threads compressing and sealing chunks; 0: one per available CPU
    #: Worker processes walking directories (engine.backup.shares); 0: one per available
    #: CPU when there are two or more; 1: none, all in this process.
    processes: int = 0
    #: Patterns (engine.patterns) of paths under each backed-up directory, relative to it:
    #: only matching files are stored (and the directories leading to them); empty: all.
    include: list[str] = field(default_factory=list)
    #: Patterns of paths left out; an excluded directory is not read. Wins over include.
    exclude: list[str] = field(default_factory=list)
    #: The snapshot's metadata (format section 9: what re-creates the source elsewhere).
    meta: dict[str, str] = field(default_factory=dict)
    #: The host the snapshot belongs to (format section 9); None: this machine's host
    #: name. The parent is the newest snapshot of the same source and host.
    host: str | None = None

    @property
    def snapshot_host(self) -> str:
        """``host``, or this machine's host name."""
        return self.host or socket.gethostname()


@dataclass
class BackupResult:
    snapshot: Snapshot
    errors: list[dict[str, str]]

    def summary(self) -> dict[str, Any]:
        s = self.snapshot
        return {
            "snapshot": s.id,
            "source": s.source,
            "type": s.type,
            "parent": s.parent,
            "host": s.host,
            "time": s.time,
            **s.summary,
        }
