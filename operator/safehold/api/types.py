"""String types with a Kubernetes meaning: durations, cron expressions, time zones, names.

Each type carries two checks. Its OpenAPI schema (a ``pattern`` and ``maxLength``) is
what the apiserver enforces when someone applies YAML; its pydantic validator says the
same thing in Python and more than a regex can (``croniter`` parses the expression,
``zoneinfo`` looks the zone up), with a message that says what to write instead.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from croniter import CroniterBadDateError, croniter
from pydantic import AfterValidator, BeforeValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

__all__ = [
    "COMPUTE_RESOURCES",
    "CRON_PATTERN",
    "DURATION_PATTERN",
    "QUANTITY_PATTERN",
    "RETENTION_SPAN_PATTERN",
    "CronExpression",
    "Duration",
    "LabelKey",
    "LabelValue",
    "Labels",
    "NamespaceName",
    "Quantity",
    "ResourceList",
    "ResourceName",
    "RetentionSpan",
    "SecretKey",
    "SourceName",
    "StorageClassName",
    "TaintKey",
    "TimeZone",
    "parse_duration",
    "quantity_value",
]

#: Five cron fields, or one of the macros Kubernetes CronJobs accept.
CRON_PATTERN = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
    r"|([0-9A-Za-z*?,/#-]+[ \t]+){4}[0-9A-Za-z*?,/#-]+)$"
)
#: One or more ``<number><unit>`` parts: ``30d``, ``12h``, ``1h30m``.
DURATION_PATTERN = r"^([0-9]{1,6}(s|m|h|d|w))+$"
#: A retention span (``keepWithin``): units y, mo (months), w, d, h, min (minutes), largest
#: first, each once; the engine's ``retention.Duration.parse`` reads the same grammar.
RETENTION_SPAN_PATTERN = (
    r"^([0-9]{1,6}y)?([0-9]{1,6}mo)?([0-9]{1,6}w)?([0-9]{1,6}d)?([0-9]{1,6}h)?([0-9]{1,6}min)?$"
)
#: A Kubernetes resource quantity (``500m``, ``2Gi``, ``1.5``), as the apiserver writes it;
#: never negative (no amount of CPU, memory or disk is).
QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_SECRET_KEY = r"^[-._a-zA-Z0-9]+$"  # noqa: S105 - a pattern, not a password
#: A label's or taint's key: a name of up to 63 letters, digits, '-', '_' and '.' (a letter
#: or digit at each end), with an optional DNS subdomain and '/' before it.
_LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
#: A taint key may also be empty (a toleration of every taint).
_TAINT_KEY = "^$|" + _LABEL_KEY
#: A label's value: empty, or up to 63 letters, digits, '-', '_' and '.', a letter or digit
#: at each end.
_LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
_TIME_ZONE = r"^[A-Za-z0-9_+/-]+$"

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_PART = re.compile(r"([0-9]+)([smhdw])")


def parse_duration(text: str) -> timedelta:
    """``"1h30m"`` -> ``timedelta(hours=1, minutes=30)``; units s, m, h, d (days), w (weeks)."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r}")
    seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


def _check_duration(value: str) -> str:
    if not re.fullmatch(DURATION_PATTERN, value):
        raise PydanticCustomError(
            "duration",
            "'{value}' is not a duration: write a number and a unit, such as 30d, 12h or 1h30m "
            "(units s, m, h, d, w)",
            {"value": value},
        )
    return value


def _check_retention_span(value: str) -> str:
    bare_m = re.search(r"([0-9]+)m(?![a-z])", value)
    if bare_m:
        number = bare_m.group(1)
        raise PydanticCustomError(
            "retention_span",
            "'{value}' is ambiguous: 'm' means minutes in Kubernetes durations and months in "
            "restic's --keep-within; write '{number}mo' for months or '{number}min' for minutes",
            {"value": value, "number": number},
        )
    if not value or not re.fullmatch(RETENTION_SPAN_PATTERN, value):
        raise PydanticCustomError(
            "retention_span",
            "'{value}' is not a retention span: write numbers with units y, mo (months), w, d, "
            "h, min (minutes), largest first, such as 30d, 12h or 1y6mo",
            {"value": value},
        )
    if not any(int(n) for n in re.findall(r"[0-9]+", value)):
        raise PydanticCustomError(
            "retention_span",
            "'{value}' is zero: a retention span must be positive",
            {"value": value},
        )
    return value


def _check_cron(value: str) -> str:
    """Every cron expression parses (croniter) and fires on some date."""
    expression = value
    if not re.fullmatch(CRON_PATTERN, expression):
        raise PydanticCustomError(
            "cron",
            "'{value}' is not a cron expression: write five fields (minute hour day-of-month "
            "month day-of-week, e.g. '0 3 * * *') or a macro such as @hourly or @daily",
            {"value": value},
        )
    if not croniter.is_valid(expression):
        raise PydanticCustomError(
            "cron",
            "'{value}' is not a valid cron expression: a field is out of range or malformed "
            "(minute 0-59, hour 0-23, day of month 1-31, month 1-12, day of week 0-6)",
            {"value": value},
        )
    try:
        croniter(expression, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except CroniterBadDateError:
        raise PydanticCustomError(
            "cron",
            "'{value}' never fires (no such date, e.g. 31 February): pick a date that exists",
            {"value": value},
        ) from None
    return expression


def _check_time_zone(value: str) -> str:
    """Every time zone is one the IANA time zone database (zoneinfo) knows."""
    try:
        ok = bool(re.fullmatch(_TIME_ZONE, value)) and zoneinfo.ZoneInfo(value) is not None
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        ok = False
    if not ok:
        raise PydanticCustomError(
            "time_zone",
            "'{value}' is not a known IANA time zone: write a name such as UTC, "
            "Europe/Berlin or America/New_York",
            {"value": value},
        )
    return value


def _pattern_check(pattern: str, max_length: int, error: str, what: str) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if len(value) > max_length or not compiled.fullmatch(value):
            raise PydanticCustomError(
                error,
                "'{value}' is not " + what,
                {"value": value},
            )
        return value

    return AfterValidator(check)


def _check_quantity(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        raise PydanticCustomError(
            "quantity", "{value} is not a quantity: amounts are never negative", {"value": value}
        )
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise PydanticCustomError(
            "quantity",
            "'{value}' is not a quantity: write a number or a string such as 500m, 2Gi or 1.5",
            {"value": value},
        )
    if isinstance(value, str) and not re.fullmatch(QUANTITY_PATTERN, value):
        raise PydanticCustomError(
            "quantity",
            "'{value}' is not a quantity: write a number with an optional suffix, such as "
            "500m (CPU), 2Gi or 512Mi (memory)",
            {"value": value},
        )
    return value


def _string_schema(pattern: str, max_length: int) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": pattern, "maxLength": max_length})


Duration = Annotated[str, AfterValidator(_check_duration), _string_schema(DURATION_PATTERN, 32)]
"""A length of time such as ``30d``, ``12h`` or ``1h30m`` (see :func:`parse_duration`)."""

RetentionSpan = Annotated[
    str,
    AfterValidator(_check_retention_span),
    WithJsonSchema(
        {"type": "string", "pattern": RETENTION_SPAN_PATTERN, "minLength": 2, "maxLength": 48}
    ),
]
"""A span to keep snapshots for, such as ``30d``, ``12h`` or ``1y6mo`` (no bare ``m``)."""

CronExpression = Annotated[str, AfterValidator(_check_cron), _string_schema(CRON_PATTERN, 128)]
"""Five cron fields or an ``@hourly``-style macro, checked by ``croniter``."""

TimeZone = Annotated[str, AfterValidator(_check_time_zone), _string_schema(_TIME_ZONE, 64)]
"""An IANA time zone name that ``zoneinfo`` knows."""

ResourceName = Annotated[
    str,
    _pattern_check(
        _DNS_SUBDOMAIN,
        253,
        "resource_name",
        "a Kubernetes object name: lower-case letters, digits, '-' and '.', starting and "
        "ending with a letter or digit, at most 253 characters",
    ),
    _string_schema(_DNS_SUBDOMAIN, 253),
]
"""The name of a Kubernetes object (PVC, Secret, BackupLocation...): a DNS subdomain."""

NamespaceName = Annotated[
    str,
    _pattern_check(
        _DNS_LABEL,
        63,
        "namespace_name",
        "a namespace name: lower-case letters, digits and '-', starting and ending with a "
        "letter or digit, at most 63 characters",
    ),
    _string_schema(_DNS_LABEL, 63),
]
"""The name of a namespace: a DNS label."""

SourceName = Annotated[
    str,
    _pattern_check(
        _DNS_LABEL,
        63,
        "source_name",
        "a valid name: lower-case letters, digits and '-', starting and ending with a "
        "letter or digit, at most 63 characters",
    ),
    _string_schema(_DNS_LABEL, 63),
]
"""The name of a source or hook, used in results and restores: a DNS label."""

SecretKey = Annotated[
    str,
    _pattern_check(
        _SECRET_KEY,
        253,
        "secret_key",
        "a Secret key: letters, digits, '-', '_' and '.', at most 253 characters",
    ),
    _string_schema(_SECRET_KEY, 253),
]
"""A key inside a Secret's ``data``."""

StorageClassName = Annotated[
    str,
    _pattern_check(
        "^$|" + _DNS_SUBDOMAIN,
        253,
        "storage_class_name",
        "a StorageClass name: lower-case letters, digits, '-' and '.', starting and ending "
        "with a letter or digit, at most 253 characters (or empty)",
    ),
    _string_schema("^$|" + _DNS_SUBDOMAIN, 253),
]
"""The name of a StorageClass, as a claim names it (empty: none named)."""

_KEY_RULE = (
    "a name of letters, digits, '-', '_' and '.' (at most 63, a letter or digit at each "
    "end), with an optional DNS prefix and '/', such as topology.kubernetes.io/zone"
)

LabelKey = Annotated[
    str,
    _pattern_check(_LABEL_KEY, 317, "label_key", "a label key: " + _KEY_RULE),
    _string_schema(_LABEL_KEY, 317),
]
"""The key of a label: ``app``, ``app.kubernetes.io/name``."""

TaintKey = Annotated[
    str,
    _pattern_check(_TAINT_KEY, 317, "taint_key", "a taint key: " + _KEY_RULE),
    _string_schema(_TAINT_KEY, 317),
]
"""The key of a taint, or empty (with operator Exists, every taint)."""

LabelValue = Annotated[
    str,
    _pattern_check(
        _LABEL_VALUE,
        63,
        "label_value",
        "a label or taint value: empty, or at most 63 letters, digits, '-', '_' and '.', "
        "a letter or digit at each end",
    ),
    _string_schema(_LABEL_VALUE, 63),
]
"""The value of a label or a taint (may be empty)."""

_LABEL_KEY_CHECK = re.compile(_LABEL_KEY)


def _check_label_keys(labels: dict[str, str]) -> dict[str, str]:
    """A node selector's keys are label keys (a name of up to 63 letters, digits, '-', '_'
    and '.', with an optional DNS prefix and '/'): a structural CRD schema cannot say so."""
    for key in labels:
        if len(key) > 317 or not _LABEL_KEY_CHECK.fullmatch(key):
            raise PydanticCustomError(
                "label_key", "'{value}' is not a label key: " + _KEY_RULE, {"value": key}
            )
    return labels


Labels = Annotated[dict[str, LabelValue], AfterValidator(_check_label_keys)]
"""Labels (or a node selector): label keys to label values. The keys are checked here only:
a structural CRD schema has no place for a pattern of its keys."""

Quantity = Annotated[
    int | str,
    BeforeValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "minimum": 0,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes quantity: ``500m``, ``2Gi``, ``1``."""

#: What a backup or restore Job's container may ask for (``requests``, ``limits``).
COMPUTE_RESOURCES = ("cpu", "memory", "ephemeral-storage")


def _check_resource_names(resources: dict[str, Any]) -> dict[str, Any]:
    """A Job's container asks for cpu, memory or ephemeral-storage only (a name the
    apiserver does not know, `CPU` say, fails every Job)."""
    for name in resources:
        if name not in COMPUTE_RESOURCES:
            raise PydanticCustomError(
                "compute_resource",
                "'{value}' is not a resource a Job's container asks for here: write cpu, "
                "memory or ephemeral-storage",
                {"value": name},
            )
    return resources


ResourceList = Annotated[dict[str, Quantity], AfterValidator(_check_resource_names)]
"""Amounts of CPU, memory and local disk by name, as a container's requests or limits."""

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def quantity_value(quantity: int | str) -> Decimal:
    """The amount a valid :data:`Quantity` stands for: ``500m`` is 0.5, ``1Ki`` 1024,
    ``1e3`` 1000."""
    text = str(quantity)
    if text[-2:] in _BINARY:
        return Decimal(text[:-2]) * _BINARY[text[-2:]]
    if text[-1:] in _DECIMAL:
        return Decimal(text[:-1]).scaleb(_DECIMAL[text[-1]])
    return Decimal(text)  # a plain number, or one with an exponent (e3, E-2)
