"""Status conditions as the Kubernetes API conventions define them (``metav1.Condition``).

``kubectl wait --for=condition=Complete`` reads these, so the shape is the upstream one:
type, status, reason, message, lastTransitionTime and observedGeneration. The condition
lists are map-typed lists keyed by ``type`` so that each type appears once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from safehold.api.base import ApiModel

__all__ = [
    "AVAILABLE",
    "COMPLETE",
    "FAILED",
    "READY",
    "REPLICATED",
    "RESTORE_TESTED",
    "VERIFIED",
    "Condition",
    "ConditionStatus",
    "Conditions",
    "find_condition",
    "set_condition",
]

#: A BackupLocation could be reached with its credentials and holds a repository.
AVAILABLE = "Available"
#: A BackupRun or RestoreRequest has finished, whatever its outcome.
COMPLETE = "Complete"
#: A BackupRun or RestoreRequest has finished without doing (all of) its work.
FAILED = "Failed"
#: A BackupPolicy is valid and scheduled.
READY = "Ready"
#: A BackupRun's snapshots (or a BackupPolicy's newest successful run) reached every
#: recovery site of ``replicateTo``.
REPLICATED = "Replicated"
#: A BackupPolicy's last scheduled verification (``spec.verification.cron``) found every
#: location's repository intact.
VERIFIED = "Verified"
#: A BackupPolicy's last scheduled test restore (``spec.testRestore.cron``) restored and
#: checked every tested source.
RESTORE_TESTED = "RestoreTested"

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """One aspect of the object's state, following the Kubernetes API conventions."""

    type: str = Field(
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        max_length=316,
    )
    """The aspect, in CamelCase: Available, Complete, Failed, Ready."""
    status: ConditionStatus
    """Whether the condition holds: True, False or Unknown."""
    reason: str = Field(
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", min_length=1, max_length=1024
    )
    """A CamelCase word for the cause of the last transition, for programs to match on."""
    message: str = Field(default="", max_length=32768)
    """What happened, for people: what failed and what to fix."""
    last_transition_time: datetime
    """When the status last changed."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The ``metadata.generation`` the condition was computed from."""


Conditions = Annotated[
    list[Condition],
    Field(
        max_length=32,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    ),
]
"""A condition list, each type at most once (a map-typed list keyed by type)."""


def find_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    """The condition of ``type_``, or None."""
    return next((c for c in conditions if c.type == type_), None)


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    now: datetime,
    observed_generation: int | None = None,
) -> list[Condition]:
    """A copy of ``conditions`` with ``type_`` set; other types keep their place.

    ``lastTransitionTime`` moves only when the status changes, as the conventions ask,
    so re-reconciling an unchanged object does not rewrite its history.
    """
    previous = find_condition(conditions, type_)
    changed = previous is None or previous.status != status
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=now if changed or previous is None else previous.last_transition_time,
        observed_generation=observed_generation,
    )
    if previous is None:
        return [*conditions, updated]
    return [updated if c.type == type_ else c for c in conditions]
