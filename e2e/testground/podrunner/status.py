"""Pod and container status documents, shaped like the kubelet's.

The Job controller reads ``phase`` and the containers' ``restartCount``; ``kubectl wait`` and
the ReplicaSet controller read the ``Ready`` condition; people read ``state.terminated`` with
its exit code, reason and termination message. Pure functions, tested without a cluster.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

__all__ = ["conditions", "now", "running", "terminated", "waiting"]

Json = dict[str, Any]


def now() -> str:
    """The current time in the RFC 3339 form the apiserver stores."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def waiting(reason: str, message: str = "") -> Json:
    state: Json = {"reason": reason}
    if message:
        state["message"] = message
    return {"waiting": state}


def running(started_at: str) -> Json:
    return {"running": {"startedAt": started_at}}


def terminated(
    exit_code: int, started_at: str, finished_at: str, container_id: str, message: str = ""
) -> Json:
    """A ``terminated`` state: reason Completed for 0, Error otherwise (as the kubelet says)."""
    state: Json = {
        "exitCode": exit_code,
        "reason": "Completed" if exit_code == 0 else "Error",
        "startedAt": started_at,
        "finishedAt": finished_at,
        "containerID": container_id,
    }
    if exit_code < 0:  # killed by a signal: report it the way a shell would
        state["exitCode"] = 128 - exit_code
        state["signal"] = -exit_code
    if message:
        state["message"] = message
    return {"terminated": state}


def conditions(*, initialized: bool, ready: bool, done: bool, since: str) -> list[Json]:
    """The four pod conditions. A finished pod is not Ready, with reason PodCompleted."""

    def cond(kind: str, status: bool, reason: str | None = None) -> Json:
        c: Json = {
            "type": kind,
            "status": "True" if status else "False",
            "lastProbeTime": None,
            "lastTransitionTime": since,
        }
        if reason and not status:
            c["reason"] = reason
        return c

    not_ready = "PodCompleted" if done else "ContainersNotReady"
    return [
        cond("Initialized", initialized, "ContainersNotInitialized"),
        cond("Ready", ready, not_ready),
        cond("ContainersReady", ready, not_ready),
        cond("PodScheduled", True),
    ]
