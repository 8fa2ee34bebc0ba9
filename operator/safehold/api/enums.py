"""Small vocabularies shared by several kinds: backup types and run phases."""

from __future__ import annotations

from typing import Literal

__all__ = ["BackupType", "RunPhase", "SourceKind"]

BackupType = Literal["full", "incremental", "differential"]
"""full reads every byte again; incremental's parent is the source's previous snapshot;
differential's parent is its last full snapshot. Every snapshot restores on its own."""

RunPhase = Literal["Pending", "Running", "Succeeded", "PartiallyFailed", "Failed"]
"""The life of a BackupRun or RestoreRequest; the last three are final."""

SourceKind = Literal["volume", "database", "clusterResources"]
"""What a source is: a PersistentVolumeClaim, a database dump, or resource manifests."""
