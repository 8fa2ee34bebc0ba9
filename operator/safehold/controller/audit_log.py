"""One structured JSON log line per action the operator takes on the cluster (created a
Job, created or deleted a custom resource, recorded a final phase), on the logger
``safehold.audit``, so that a cluster's log pipeline can keep them (docs/monitoring.md)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

__all__ = ["AUDIT_LOGGER", "FINAL_PHASES", "JsonLines", "kind_of", "log_action"]

AUDIT_LOGGER = "safehold.audit"
#: The phases a run ends in: recording one is an action worth a line (api.enums.RunPhase).
FINAL_PHASES = frozenset({"Succeeded", "PartiallyFailed", "Failed"})
log = logging.getLogger(AUDIT_LOGGER)


class JsonLines(logging.Formatter):
    """The record's message as it is: the JSON document :func:`log_action` built."""

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


def kind_of(plural: str) -> str:
    """The kind of a custom resource's plural (``backupruns`` -> ``BackupRun``)."""
    from safehold.api import KINDS

    return next((k for k, m in KINDS.items() if m.crd.plural == plural), plural)


def _stderr_lines() -> logging.Handler:
    """Bare JSON lines on stderr, not through kopf's formatter (and not twice: the logger
    does not propagate)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines())
    return handler


log.addHandler(_stderr_lines())
log.setLevel(logging.INFO)
log.propagate = False


def log_action(kind: str, obj: Mapping[str, Any], action: str, **fields: Any) -> None:
    """Log that the operator did ``action`` (``created``, ``deleted``, ``phase``) to the
    object ``obj`` (a manifest or a resource: its metadata gives namespace, name, uid) of
    ``kind``; ``fields`` add what else matters (a phase, a reason). Never secrets."""
    meta = obj.get("metadata") or {}
    doc = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "logger": AUDIT_LOGGER,
        "action": action,
        "kind": kind,
        "namespace": meta.get("namespace", ""),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        **fields,
    }
    log.info(json.dumps(doc, sort_keys=False, default=str))
