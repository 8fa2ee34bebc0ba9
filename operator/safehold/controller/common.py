"""Helpers every kind's module uses: now, reading status, writing it, Events, and the
exception that fails an object.

Status is written as a whole merge patch of the fields the controller owns, and only
when it differs from what is stored, so re-reconciling an unchanged object writes
nothing. Every phase (or Available/Ready status) change also posts an Event.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from safehold.api import (
    BackupLocation,
    BackupLocationStatus,
    BackupPolicyStatus,
    FieldError,
    find_condition,
    set_condition,
    validate_spec,
)
from safehold.api.conditions import ConditionStatus
from safehold.controller.kube import Kube

__all__ = [
    "Stop",
    "dump_status",
    "field_errors_message",
    "load_location",
    "not_primary_message",
    "now",
    "parse_time",
    "running_jobs",
    "write_condition",
    "write_status",
]


class Stop(Exception):
    """The object cannot go on: fail it with this reason and message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None


def dump_status(status: BaseModel) -> dict[str, Any]:
    """The status as JSON for the apiserver (camelCase, RFC 3339 times, no nulls)."""
    out: dict[str, Any] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return out


def _same(stored: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    def norm(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: norm(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [norm(v) for v in value]
        if isinstance(value, str) and len(value) > 18 and value[10:11] == "T":
            # a time, as the apiserver or the model writes it; any other text (a message
            # that ends in a time's "Z", say) is compared as it is
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).isoformat()
            except ValueError:
                return value
        return value

    return bool(norm(dict(stored or {})) == norm(dict(new)))


def write_status(
    kube: Kube, plural: str, body: Mapping[str, Any], status: BaseModel
) -> dict[str, Any]:
    """Patch ``status`` when it changed; returns the new status JSON. Fields the controller
    owns but left empty are removed by sending null (a merge patch's delete)."""
    new = dump_status(status)
    stored = body.get("status") or {}
    if _same(stored, new):
        return new
    patch: dict[str, Any] = dict(new)
    for key in stored:
        if key not in new:
            patch[key] = None
    meta = body["metadata"]
    kube.patch_status(plural, meta["namespace"], meta["name"], patch)
    return new


def write_condition(
    kube: Kube,
    plural: str,
    body: Mapping[str, Any],
    status: BackupLocationStatus | BackupPolicyStatus,
    type_: str,
    state: ConditionStatus,
    reason: str,
    message: str,
) -> None:
    """Set condition ``type_`` for the object's generation and write the status; an Event
    when the condition's status or reason changed."""
    gen = body["metadata"].get("generation")
    before = find_condition(status.conditions, type_)
    status.conditions = set_condition(
        status.conditions, type_, state, reason, message, now=now(), observed_generation=gen
    )
    status.observed_generation = gen
    write_status(kube, plural, body, status)
    if before is None or before.status != state or before.reason != reason:
        kube.event(body, reason, message, warning=state == "False")


def field_errors_message(errors: list[FieldError]) -> str:
    return "; ".join(str(e) for e in errors)


def running_jobs(kube: Kube, namespace: str, selector: str) -> list[str]:
    """The names of the Jobs matching the label ``selector`` that have not ended."""
    out = []
    for job in kube.list_jobs(namespace, selector):
        ended = {
            c.get("type")
            for c in (job.get("status") or {}).get("conditions") or []
            if c.get("status") == "True"
        }
        if not ended & {"Complete", "Failed"}:
            out.append(job["metadata"]["name"])
    return out


def not_primary_message(location: str, role: str) -> str:
    """Why a policy cannot back up to ``location`` of ``role`` (not primary)."""
    return (
        f"spec.location.name: BackupLocation {location} has role {role}: backups go only to "
        "a location of role primary (a recovery site is written by replication); to fail "
        "over to it, change its role to primary (docs/disaster-recovery.md)"
    )


def load_location(kube: Kube, ns: str, name: str) -> BackupLocation | None:
    """The BackupLocation ``name``, or None when it is missing or its spec is not valid
    (its own status says what is wrong)."""
    body = kube.get_cr("backuplocations", ns, name)
    if body is None or validate_spec("BackupLocation", body.get("spec")):
        return None
    return BackupLocation.model_validate(body)
