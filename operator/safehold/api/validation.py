"""Validate a resource the way the controller needs: every problem, each at its field.

:func:`validate_spec` returns a list of :class:`FieldError` instead of raising, so the
controller can put all of them in a condition message and an Event at once. Input is
checked strictly, as the apiserver does (``"5"`` is not a number; ``field: null`` is the
same as leaving the field out), after a JSON round trip so that YAML timestamps and
Python objects are treated like wire data.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from safehold.api.errors import FIELD_ERROR, FieldError
from safehold.api.kinds import KINDS
from safehold.api.meta import CustomResource

__all__ = ["resource_model", "spec_model", "validate_model", "validate_object", "validate_spec"]


def resource_model(kind: str) -> type[CustomResource]:
    """The model of ``kind``; :class:`ValueError` naming the known kinds otherwise."""
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(
            f"unknown kind {kind!r}: Safehold's kinds are {', '.join(KINDS)}"
        ) from None


def spec_model(kind: str) -> type[BaseModel]:
    """The spec model of ``kind``."""
    annotation = resource_model(kind).model_fields["spec"].annotation
    if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
        raise TypeError(f"{kind}.spec is not a model")
    return annotation


def validate_spec(kind: str, spec: Any) -> list[FieldError]:
    """Every problem in ``spec`` (a kind's ``spec`` mapping), with paths from ``spec``."""
    model = spec_model(kind)
    if not isinstance(spec, Mapping):
        return [FieldError("spec", f"must be a mapping of fields, got {_type_name(spec)}")]
    return _validate(model, spec, "spec")


def validate_object(obj: Any) -> list[FieldError]:
    """Every problem in a whole manifest: apiVersion, kind and spec (status is ignored)."""
    if not isinstance(obj, Mapping):
        return [FieldError("(document)", f"must be a mapping, got {_type_name(obj)}")]
    kind = obj.get("kind")
    if kind not in KINDS:
        return [
            FieldError("kind", f"{kind!r} is not a Safehold kind: use one of {', '.join(KINDS)}")
        ]
    manifest = {k: v for k, v in obj.items() if k != "status"}
    return _validate(KINDS[str(kind)], manifest, "")


def validate_model(model: type[BaseModel], data: Any, prefix: str) -> list[FieldError]:
    """Every problem in ``data`` read as ``model`` (a part of a resource kept elsewhere: the
    chart's ``jobDefaults`` is a policy's ``spec.job``), with paths from ``prefix``."""
    if not isinstance(data, Mapping):
        return [FieldError(prefix, f"must be a mapping of fields, got {_type_name(data)}")]
    return _validate(model, data, prefix)


def _validate(model: type[BaseModel], data: Mapping[str, Any], prefix: str) -> list[FieldError]:
    try:
        model.model_validate_json(
            json.dumps(_without_nulls(data), default=_wire_value), strict=True
        )
    except ValidationError as exc:
        return [_field_error(model, error, prefix) for error in exc.errors()]
    return []


def _without_nulls(value: Any) -> Any:
    """Drop ``field: null`` as the apiserver does (no field is nullable): null means absent."""
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _wire_value(value: object) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{_type_name(value)} cannot appear in a manifest")


def _field_error(model: type[BaseModel], error: ErrorDetails, prefix: str) -> FieldError:
    loc: list[str | int] = list(error["loc"])
    ctx = error.get("ctx") or {}
    if error["type"] == FIELD_ERROR:
        loc.extend(str(ctx["field"]).split("."))
        message = str(ctx["message"])
    elif error["type"] == "missing":
        message = "is required"
    elif error["type"] == "extra_forbidden":
        known = _known_fields(model, loc[:-1])
        message = "is not a known field: check its spelling and indentation" + (
            f" (fields here: {', '.join(known)})" if known else ""
        )
    else:
        message = error["msg"]
        if error["type"] not in _CUSTOM_TYPES and _is_scalar(error.get("input")):
            message += f", got {error['input']!r}"
    return FieldError(_path(prefix, loc), message)


_CUSTOM_TYPES = frozenset(
    {
        "cron",
        "duration",
        "time_zone",
        "quantity",
        "resource_name",
        "namespace_name",
        "secret_key",
        "source_name",
        "label_key",
        "label_value",
        "taint_key",
        "compute_resource",
        "storage_class_name",
    }
)


def _path(prefix: str, loc: list[str | int]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int) or (isinstance(part, str) and part.startswith("[")):
            path += f"[{part}]" if isinstance(part, int) else part
        else:
            path += f".{part}" if path else str(part)
    return path or "(document)"


def _known_fields(model: type[BaseModel], loc: list[str | int]) -> list[str]:
    """The wire names of the fields of the model found at ``loc`` (best effort)."""
    current: Any = model
    for part in loc:
        current = _unwrap(current, part)
        if current is None:
            return []
    for candidate in (current, *typing.get_args(current)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return [field.alias or name for name, field in candidate.model_fields.items()]
    return []


def _unwrap(annotation: Any, part: str | int) -> Any:
    """The type one step down from ``annotation`` along ``part``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _unwrap(arg, part)
            if found is not None:
                return found
        return None
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0], part)
    if origin is list and isinstance(part, int):
        return typing.get_args(annotation)[0]
    if origin is dict and isinstance(part, str):
        return typing.get_args(annotation)[1]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            if part in (name, field.alias):
                return field.annotation
    return None


def _is_scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool) and len(repr(value)) <= 80


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__
