"""Byte progress of a running Job, read from the tail of its pod's log.

``safehold --json`` prints a progress event as a JSON line on stderr every half second
(docs/cli.md). The operator reads the last lines of the pod's log every few seconds,
so the Job's pod needs no API rights at all to report progress.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from safehold.api import Progress
from safehold.controller.common import now
from safehold.controller.kube import ApiException
from safehold.controller.status import last_json_object

if TYPE_CHECKING:  # the Runtime holds the progress read so far, and imports this module
    from safehold.controller.runtime import Runtime

__all__ = [
    "PROGRESS_INTERVAL",
    "combine_progress",
    "last_progress_event",
    "read_progress",
    "to_progress",
]

log = logging.getLogger(__name__)

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


def read_progress(rt: Runtime, ns: str, job: str, pod: str | None) -> Progress | None:
    """The job's latest progress, reading its pod's log at most every ``rt.progress_interval``."""
    cached = rt.progress.get(job)
    if pod is None:
        return cached
    last = rt.progress_read.get(job, 0.0)
    if time.monotonic() - last < rt.progress_interval and cached is not None:
        return cached
    rt.progress_read[job] = time.monotonic()
    try:
        tail = rt.kube.read_log(ns, pod, 20)
    except (ApiException, OSError) as exc:
        log.debug("no log of pod %s/%s: %s", ns, pod, exc)
        return cached
    event = last_progress_event(tail)
    if event is not None:
        rt.progress[job] = to_progress(event, now())
    return rt.progress.get(job)


def combine_progress(parts: list[Progress], at: datetime) -> Progress | None:
    """The progress of several Jobs as one: bytes and files summed, the latest ETA."""
    if not parts:
        return None
    done = sum(p.bytes_done for p in parts)
    totals = [p.bytes_total for p in parts]
    total = sum(t for t in totals if t is not None) if all(t is not None for t in totals) else None
    etas = [p.eta for p in parts if p.eta is not None]
    return Progress(
        bytes_done=done,
        bytes_total=total,
        files_done=sum(p.files_done for p in parts),
        percent=max(0, min(100, int(done * 100 / total))) if total else None,
        eta=max(etas) if etas else None,
        update_time=at,
    )
