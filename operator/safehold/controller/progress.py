"""Byte progress of a running Job, read from the tail of its pod's log.

``safehold --json`` prints a progress event as a JSON line on stderr every half second
(docs/cli.md). The operator reads the last lines of the pod's log every few seconds,
so the Job's pod needs no API rights at all to report progress.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from safehold.api import Progress
from safehold.controller.status import last_json_object

__all__ = ["PROGRESS_INTERVAL", "last_progress_event", "to_progress"]

#: How often (seconds) a running Job's log is read.
PROGRESS_INTERVAL = 10.0


def last_progress_event(log_tail: str) -> dict[str, Any] | None:
    """The newest ``{"event": "progress", ...}`` line of ``log_tail``."""
    return last_json_object(log_tail, lambda doc: doc.get("event") == "progress")


def to_progress(event: dict[str, Any], now: datetime) -> Progress:
    """The status ``progress`` for a progress event read at ``now``."""
    done = max(0, int(event.get("bytes_done") or 0))
    total_raw = event.get("bytes_total")
    total = max(0, int(total_raw)) if isinstance(total_raw, int | float) else None
    percent = None
    if total:
        percent = max(0, min(100, int(done * 100 / total)))
    elif total == 0:
        percent = 100
    eta_s = event.get("eta_s")
    eta = now + timedelta(seconds=float(eta_s)) if isinstance(eta_s, int | float) else None
    return Progress(
        bytes_done=done,
        bytes_total=total,
        files_done=max(0, int(event.get("files_done") or 0)),
        percent=percent,
        eta=eta,
        update_time=now,
    )
