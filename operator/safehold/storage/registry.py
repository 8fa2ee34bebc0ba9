"""From a location URL to a storage: the scheme names the provider.

``file:///path``, ``s3://bucket/prefix``, ``gs://bucket/prefix`` and
``azure://container/prefix``. Providers are imported only when used, so a
machine without an extra installed can still use the others; asking for one
whose SDK is missing raises :class:`MissingExtra` naming the extra.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import unquote, urlsplit

from safehold.storage.base import Storage
from safehold.storage.errors import InvalidLocation, MissingExtra

__all__ = ["PROVIDERS", "Location", "open_storage", "parse_location"]


@dataclass(frozen=True)
class Location:
    """A parsed location URL plus provider options (endpoint, region, credentials)."""

    scheme: str
    bucket: str
    prefix: str
    options: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def url(self) -> str:
        """The URL, which never holds a secret: credentials travel only in ``options``."""
        if self.scheme == "file":
            return f"file://{self.bucket}{'/' + self.prefix if self.prefix else ''}"
        return f"{self.scheme}://{self.bucket}{'/' + self.prefix if self.prefix else ''}"


class _Factory(Protocol):
    def __call__(self, location: Location) -> Storage: ...


@dataclass(frozen=True)
class _Provider:
    module: str
    extra: str | None  # the pip extra that brings its SDK; None when built in


#: scheme -> provider module (which exposes ``open(location) -> Storage``).
PROVIDERS: Mapping[str, _Provider] = {
    "file": _Provider("safehold.storage.providers.filesystem", None),
    "s3": _Provider("safehold.storage.providers.s3", "s3"),
    "gs": _Provider("safehold.storage.providers.gcs", "gcs"),
    "azure": _Provider("safehold.storage.providers.azure", "azure"),
}


def parse_location(url: str, options: Mapping[str, str] | None = None) -> Location:
    """Split ``url`` into scheme, bucket (or directory) and prefix."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in PROVIDERS:
        known = ", ".join(f"{s}://" for s in PROVIDERS)
        raise InvalidLocation(
            _redact(url),
            f"unknown scheme {parts.scheme + '://' if parts.scheme else '(none)'}; "
            f"use one of {known}",
        )
    if parts.username or parts.password or parts.query:
        raise InvalidLocation(
            _redact(url),
            "credentials and query parameters do not belong in the URL; pass them as options",
        )
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidLocation(url, "a file URL has an absolute path: file:///path/to/dir")
        path = unquote(parts.path).rstrip("/") or "/"  # file:///my%20repo is "/my repo"
        if not path.startswith("/"):
            raise InvalidLocation(url, "a file URL has an absolute path: file:///path/to/dir")
        return Location("file", path, "", dict(options or {}))
    if not parts.netloc:
        raise InvalidLocation(url, f"no bucket or container: {scheme}://BUCKET/PREFIX")
    return Location(scheme, parts.netloc, parts.path.strip("/"), dict(options or {}))


def open_storage(
    url: str, options: Mapping[str, str] | None = None, *, wrap: bool = False
) -> Storage:
    """Open the storage that ``url`` names, with provider ``options``.

    With ``wrap=True`` the storage comes inside the standard wrappers (retries with backoff,
    a concurrency limit, Prometheus metrics): see :func:`safehold.storage.wrappers.wrap`.
    """
    location = parse_location(url, options)
    from safehold.storage.options import option_retry_seconds  # (imports this module)

    retry_seconds = option_retry_seconds(location)  # checked even unwrapped: a typo fails early
    provider = PROVIDERS[location.scheme]
    try:
        module = importlib.import_module(provider.module)
    except ImportError as exc:
        if provider.extra is None:
            raise
        raise MissingExtra(
            location.url,
            f"the {location.scheme}:// provider needs an extra that is not installed "
            f"({exc.name} is missing): pip install 'safehold[{provider.extra}]'",
        ) from exc
    factory: _Factory = module.open
    storage = factory(location)
    if wrap:
        from safehold.storage.wrappers import RetryPolicy
        from safehold.storage.wrappers import wrap as standard_wrappers

        if retry_seconds is None:
            return standard_wrappers(storage)
        return standard_wrappers(storage, retry=RetryPolicy(budget=retry_seconds))
    return storage


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password or parts.username or parts.query:
        host = parts.hostname or ""
        return f"{parts.scheme}://{host}{parts.path}"
    return url
