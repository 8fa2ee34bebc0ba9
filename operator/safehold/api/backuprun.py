"""``BackupRun``: one execution of a policy, made by its schedule or by hand.

Its status is the record of the run: a phase, the ``Complete`` condition that
``kubectl wait --for=condition=Complete`` waits for, one result per source, one
replication state per recovery site, and byte progress while it runs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from safehold.api.base import ApiModel
from safehold.api.conditions import Conditions
from safehold.api.enums import BackupType, RunPhase, SourceKind
from safehold.api.meta import CrdInfo, CustomResource, PrinterColumn
from safehold.api.references import LocalObjectReference
from safehold.api.reports import ErrorDetail, Progress

__all__ = [
    "BackupRun",
    "BackupRunSpec",
    "BackupRunStatus",
    "HookResult",
    "ReplicationResult",
    "SourceResult",
]


class BackupRunSpec(ApiModel):
    """Which policy to run, and how."""

    policy_ref: LocalObjectReference
    """The BackupPolicy whose sources, location and settings are used."""
    type: BackupType = "incremental"
    """full, incremental or differential, for volume and clusterResources sources; a source
    without a parent snapshot is backed up in full whatever the type. Database sources are
    dumped whole every time (deduplication stores only what changed)."""
    sources: list[str] = Field(default_factory=list, max_length=64)
    """Only these sources of the policy (by name); empty means all."""
    tags: list[str] = Field(default_factory=list, max_length=16)
    """Tags on the snapshots, e.g. ``before-upgrade``; retention keepTags keeps them."""


class HookResult(ApiModel):
    """One hook's run: in the backup Job (``pod`` empty) or in an application pod."""

    name: str = Field(max_length=253)
    """The hook's name (Job-side hooks: ``pre-0``, ``post-0``, ...)."""
    phase: Literal["pre", "post"]
    """Before or after the backup."""
    pod: str | None = Field(default=None, max_length=253)
    """The application pod it ran in, for exec hooks."""
    container: str | None = Field(default=None, max_length=63)
    """The container it ran in, for exec hooks."""
    exit_code: int | None = None
    """The command's exit code; empty when it timed out or could not start."""
    duration_seconds: float | None = Field(default=None, ge=0)
    """How long it ran."""
    timed_out: bool = False
    """It ran past its timeout and was stopped."""
    output: str | None = Field(default=None, max_length=1024)
    """The tail of its output, with secret values replaced by ``***``."""
    on_error: Literal["Fail", "Continue"] = "Fail"
    """What its failure does."""
    error: str | None = Field(default=None, max_length=1024)
    """Why it could not run (no matching pod, exec refused)."""
    succeeded: bool = False
    """It exited 0 within its timeout."""


class SourceResult(ApiModel):
    """The outcome for one source."""

    name: str = Field(max_length=253)
    """The source's name."""
    kind: SourceKind
    """volume, database or clusterResources."""
    phase: Literal["Pending", "Running", "Succeeded", "Failed", "Skipped"] = "Pending"
    """The source's state."""
    type: BackupType | None = None
    """The type actually made (incremental falls back to full without a parent)."""
    job: str | None = Field(default=None, max_length=253)
    """The Job that backs up this source."""
    snapshot_id: str | None = Field(default=None, max_length=128)
    """The snapshot made, for restores."""
    parent_snapshot_id: str | None = Field(default=None, max_length=128)
    """The snapshot this one is incremental to."""
    files: int | None = Field(default=None, ge=0)
    """Files (or database objects) in the snapshot."""
    bytes_read: int | None = Field(default=None, ge=0)
    """Bytes read from the source."""
    bytes_new: int | None = Field(default=None, ge=0)
    """Bytes not yet in the repository before this run (before compression)."""
    bytes_stored: int | None = Field(default=None, ge=0)
    """Bytes added to storage (compressed, encrypted)."""
    duration_seconds: float | None = Field(default=None, ge=0)
    """How long the backup of this source took."""
    errors: int | None = Field(default=None, ge=0)
    """Items the backup could not read and skipped (the first are in `warnings`)."""
    cpu_seconds: float | None = Field(default=None, ge=0)
    """CPU seconds the Job's command used, its children (dump tools, hooks) included."""
    peak_memory_bytes: int | None = Field(default=None, ge=0)
    """The Job's peak resident memory (of its largest process), as the command measured it."""
    start_time: datetime | None = None
    """When the source's Job started."""
    completion_time: datetime | None = None
    """When it finished."""
    error: ErrorDetail | None = None
    """Why the source failed."""
    warnings: list[str] = Field(default_factory=list, max_length=32)
    """Things to look at, e.g. files that vanished while being read."""
    hooks: list[HookResult] = Field(default_factory=list, max_length=16)
    """The source's Job-side hooks (``sources[].hooks`` of the policy)."""
    verified: bool | None = None
    """The new snapshot's structure was checked at the end of the Job (the policy's
    `verification.afterBackup`): true when its index entries, trees and chunks are whole;
    false fails the source (reason SnapshotDamaged); empty when not checked."""


class ReplicationResult(ApiModel):
    """The copy of this run's snapshots to one recovery site."""

    location: str = Field(max_length=253)
    """The recovery site's BackupLocation."""
    phase: Literal["Pending", "Running", "Succeeded", "Failed"] = "Pending"
    """The copy's state; Failed is retried with back-off (`attempts`), and the next
    successful run's replication copies whatever is still missing."""
    attempts: int = Field(default=0, ge=0)
    """Replication Jobs started for this run and site."""
    start_time: datetime | None = None
    """When the current attempt started."""
    bytes_transferred: int | None = Field(default=None, ge=0)
    """Bytes copied to the site."""
    completion_time: datetime | None = None
    """When the copy finished."""
    error: ErrorDetail | None = None
    """Why the copy failed."""


class BackupRunStatus(ApiModel):
    """The record of the run, written by the controller."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The ``metadata.generation`` this status describes."""
    phase: RunPhase | None = None
    """Pending, Running, Succeeded, PartiallyFailed (some sources failed) or Failed."""
    conditions: Conditions = Field(default_factory=list)
    """Complete is True once the run has finished, whatever the outcome; Failed is True
    when some or all of the work failed."""
    location: str | None = Field(default=None, max_length=253)
    """The BackupLocation written to."""
    schedule_time: datetime | None = None
    """The schedule slot this run was made for; empty for runs made by hand."""
    start_time: datetime | None = None
    """When the first Job started."""
    completion_time: datetime | None = None
    """When the run finished."""
    bytes_read: int | None = Field(default=None, ge=0)
    """Bytes read from all sources."""
    bytes_stored: int | None = Field(default=None, ge=0)
    """Bytes added to storage by all sources."""
    sources: list[SourceResult] = Field(default_factory=list, max_length=256)
    """One result per source."""
    replication: list[ReplicationResult] = Field(default_factory=list, max_length=8)
    """One state per recovery site."""
    hooks: list[HookResult] = Field(default_factory=list, max_length=64)
    """The policy's application-pod hooks (``spec.hooks``), one entry per hook and pod."""
    progress: Progress | None = None
    """Byte progress while running."""


class BackupRun(CustomResource):
    """One execution of a BackupPolicy."""

    crd = CrdInfo(
        kind="BackupRun",
        plural="backupruns",
        singular="backuprun",
        short_names=("br", "brun"),
        printer_columns=(
            PrinterColumn("Policy", "string", ".spec.policyRef.name", "The BackupPolicy"),
            PrinterColumn("Type", "string", ".spec.type", "full, incremental or differential"),
            PrinterColumn("Phase", "string", ".status.phase", "The run's state"),
            PrinterColumn("Stored", "integer", ".status.bytesStored", "Bytes added to storage"),
            PrinterColumn("Progress", "integer", ".status.progress.percent", "Percent done"),
            PrinterColumn("Location", "string", ".status.location", "The BackupLocation"),
            PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Age"),
        ),
    )

    kind: Literal["BackupRun"] = "BackupRun"
    """``BackupRun``."""
    spec: BackupRunSpec
    """The policy and type."""
    status: BackupRunStatus | None = None
    """Written by the controller."""
