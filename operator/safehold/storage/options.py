"""Reading a location's options: known names only, typed values, errors that name the option.

Options are strings (they come from a Kubernetes Secret, a CLI flag or a test), so every
provider reads them through these helpers: an unknown or malformed option is an
:class:`InvalidLocation` that names the option, never its value (which may be a secret).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from urllib.parse import urlsplit

from safehold.storage.errors import InvalidLocation
from safehold.storage.object_lock import LOCK_MODES, ObjectLock
from safehold.storage.registry import Location

__all__ = [
    "COMMON_OPTIONS",
    "LOCAL_OPTIONS",
    "check_options",
    "option",
    "option_bool",
    "option_float",
    "option_int",
    "option_object_lock",
    "option_retry_seconds",
    "option_timeouts",
    "redact_endpoint",
]

#: Options every cloud provider understands (see docs/storage.md).
COMMON_OPTIONS = frozenset(
    {
        "endpoint",
        "ca_file",
        "multipart_threshold",
        "page_size",
        "timeout",
        "object_lock_mode",
        "object_lock_days",
        "retry_seconds",
    }
)

#: The options a local directory (file://) understands: what the repository layer reads of
#: every location (its retries, its object lock, which a directory refuses with a message).
LOCAL_OPTIONS = frozenset({"object_lock_mode", "object_lock_days", "retry_seconds"})

#: The environment variable that sets ``retry_seconds`` when the options do not.
RETRY_SECONDS_ENV = "SAFEHOLD_RETRY_SECONDS"


def check_options(
    location: Location, allowed: Iterable[str], common: frozenset[str] = COMMON_OPTIONS
) -> None:
    """Reject option names the provider does not know, listing the ones it does."""
    known = set(allowed) | common
    unknown = sorted(set(location.options) - known)
    if unknown:
        raise InvalidLocation(
            location.url,
            f"unknown option(s) {', '.join(unknown)} for {location.scheme}://; "
            f"known options: {', '.join(sorted(known))}",
        )


def option(location: Location, key: str, *env: str) -> str | None:
    """The option's value, else the first environment variable of ``env`` that is set."""
    value = location.options.get(key)
    if value:
        return value
    for name in env:
        if os.environ.get(name):
            return os.environ[name]
    return None


def option_int(location: Location, key: str, default: int, minimum: int = 1) -> int:
    raw = location.options.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise InvalidLocation(location.url, f"option {key} must be an integer >= {minimum}")
    return value


def option_float(location: Location, key: str, default: float) -> float:
    raw = location.options.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise InvalidLocation(location.url, f"option {key} must be a number of seconds > 0")
    return value


def option_timeouts(location: Location) -> tuple[float, float]:
    """Seconds to connect and seconds a read may stall (option ``timeout``, default 60;
    connecting gets at most 10 s), as every cloud provider's client takes them."""
    timeout = option_float(location, "timeout", 60.0)
    return min(timeout, 10.0), timeout


def option_bool(location: Location, key: str) -> bool:
    raw = location.options.get(key, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise InvalidLocation(location.url, f"option {key} must be true or false")


def redact_endpoint(url: str) -> str:
    """The endpoint without user info or query (a SAS token may hide there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else url.split("?")[0]


def option_object_lock(location: Location) -> ObjectLock | None:
    """The object lock that options ``object_lock_mode`` and ``object_lock_days`` ask for.

    Both or neither: a mode without days (or days without a mode) is an error naming them.
    """
    mode = location.options.get("object_lock_mode") or ""
    days = location.options.get("object_lock_days") or ""
    if not mode and not days:
        return None
    if mode not in LOCK_MODES or not days:
        raise InvalidLocation(
            location.url,
            "options object_lock_mode (governance or compliance) and object_lock_days "
            "(an integer >= 1) go together: set both",
        )
    return ObjectLock(mode, option_int(location, "object_lock_days", 1), exempt=("locks/",))


def option_retry_seconds(location: Location) -> float | None:
    """How long each storage operation retries transient failures (option ``retry_seconds``,
    else ``SAFEHOLD_RETRY_SECONDS``); None: the retry wrapper's default (10 minutes)."""
    raw = location.options.get("retry_seconds") or os.environ.get(RETRY_SECONDS_ENV) or ""
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise InvalidLocation(
            location.url,
            f"option retry_seconds (or {RETRY_SECONDS_ENV}) must be a number of seconds >= 0",
        )
    return value
