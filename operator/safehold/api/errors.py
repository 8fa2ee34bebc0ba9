"""Validation errors that name the field: ``spec.schedule.slots[0].cron: ...``.

Checks that span several fields (``bucket`` is required unless the provider is
``filesystem``) run in model validators, which pydantic reports at the model's
location. :func:`invalid` carries the offending field's wire name along, so the
error path still ends at that field.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic_core import PydanticCustomError

__all__ = ["FIELD_ERROR", "FieldError", "invalid"]

#: The pydantic error type of :func:`invalid`; its context holds ``field``.
FIELD_ERROR = "safehold_field"


@dataclass(frozen=True)
class FieldError:
    """One problem in a resource: where (``spec.retention.keepLast``) and what to fix."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def invalid(field: str, message: str) -> PydanticCustomError:
    """An error about ``field`` (its camelCase name, or a dotted path below the model)."""
    return PydanticCustomError(FIELD_ERROR, "{message}", {"field": field, "message": message})
