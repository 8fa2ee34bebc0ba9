"""What the Jobs report while and after they work: byte progress, and errors with a reason.

Both BackupRun and RestoreRequest statuses use these. Error reasons are CamelCase words
that programs and alerts can match on; the message is for people and says what to fix.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from safehold.api.base import ApiModel

__all__ = ["ErrorDetail", "Progress"]


class ErrorDetail(ApiModel):
    """Why something failed."""

    reason: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9]*$", max_length=128)
    """A CamelCase cause: NotFound, PermissionDenied, DeadlineExceeded, HookFailed, ..."""
    message: str = Field(default="", max_length=4096)
    """What went wrong and what to fix; never contains a secret."""


class Progress(ApiModel):
    """How far a running Job has come, updated every few seconds."""

    bytes_done: int = Field(default=0, ge=0)
    """Bytes processed so far."""
    bytes_total: int | None = Field(default=None, ge=0)
    """Bytes to process in all, once known."""
    files_done: int = Field(default=0, ge=0)
    """Files processed so far."""
    percent: int | None = Field(default=None, ge=0, le=100)
    """bytesDone as a percentage of bytesTotal."""
    eta: datetime | None = None
    """When the work is expected to finish, at the current speed."""
    update_time: datetime | None = None
    """When this progress was reported."""
