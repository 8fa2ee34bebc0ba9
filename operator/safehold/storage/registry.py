"""The one registry of storage providers, and from a location URL to a storage.

Each :class:`Provider` says everything Safehold keys by provider: its name (as a
BackupLocation's ``spec.provider`` says it, and its module under ``providers/``), its URL
scheme (``file:///path``, ``s3://bucket/prefix``, ``gs://bucket/prefix``,
``azure://container/prefix``), the options it takes besides the common ones, and the pip
extra that brings its SDK. Every table by scheme or name is derived from :data:`PROVIDERS`.

Providers are imported only when used, so a machine without an extra installed can still
use the others; asking for one whose SDK is missing raises :class:`MissingExtra` naming the
extra. (The controller, which may not import storage, keeps its own name-to-scheme map in
``controller/repository.py``; the CRD's provider names are in ``api/backuplocation.py``.)
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlsplit

from safehold.storage.base import Storage
from safehold.storage.errors import InvalidLocation, MissingExtra

if TYPE_CHECKING:
    from safehold.storage.wrappers import Bandwidth

__all__ = ["BY_SCHEME", "PROVIDERS", "Location", "Provider", "open_storage", "parse_location"]


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
        return f"{self.scheme}://{self.bucket}{'/' + self.prefix if self.prefix else ''}"


class _Factory(Protocol):
    def __call__(self, location: Location) -> Storage: ...


@dataclass(frozen=True)
class Provider:
    """One storage provider; its module ``safehold.storage.providers.<name>`` exposes
    ``open(location) -> Storage``."""

    #: As a BackupLocation's ``spec.provider`` names it, and its module's name.
    name: str
    #: The URL scheme of its locations.
    scheme: str
    #: The pip extra that brings its SDK; None when built in.
    extra: str | None
    #: The options it takes besides ``COMMON_OPTIONS`` (``LOCAL_OPTIONS`` for a directory);
    #: an unknown one is refused. None: options are not checked (a test's provider).
    options: frozenset[str] | None
    #: Its URL names a local directory (``file:///path``), not a bucket and prefix.
    directory: bool = False

    @property
    def module(self) -> str:
        return f"safehold.storage.providers.{self.name}"

    def open(self, location: Location) -> Storage:
        """Import the provider (:class:`MissingExtra` without its SDK), check the location's
        option names, open the storage, and set the object lock its options ask for (a
        provider that cannot lock refuses one)."""
        try:
            module = importlib.import_module(self.module)
        except ImportError as exc:
            if self.extra is None:
                raise
            raise MissingExtra(
                location.url,
                f"the {location.scheme}:// provider needs an extra that is not installed "
                f"({exc.name} is missing): pip install 'safehold[{self.extra}]'",
            ) from exc
        from safehold.storage.options import (  # (they import us)
            COMMON_OPTIONS,
            LOCAL_OPTIONS,
            check_options,
            option_object_lock,
        )

        if self.options is not None:
            check_options(
                location, self.options, LOCAL_OPTIONS if self.directory else COMMON_OPTIONS
            )
        factory: _Factory = module.open
        storage = factory(location)
        storage.set_object_lock(option_object_lock(location))
        return storage


#: Every provider, in the order error messages list them.
PROVIDERS: tuple[Provider, ...] = (
    Provider("filesystem", "file", extra=None, options=frozenset(), directory=True),
    Provider(
        "s3",
        "s3",
        extra="s3",
        options=frozenset(
            {
                "region",
                "access_key_id",
                "secret_access_key",
                "session_token",
                "profile",
                "anonymous",
                "addressing_style",
                "sse",
                "sse_kms_key_id",
            }
        ),
    ),
    Provider(
        "gcs", "gs", extra="gcs", options=frozenset({"project", "credentials_file", "anonymous"})
    ),
    Provider(
        "azure",
        "azure",
        extra="azure",
        options=frozenset({"connection_string", "account_name", "account_key", "sas_token"}),
    ),
)
#: URL scheme -> provider.
BY_SCHEME: Mapping[str, Provider] = {p.scheme: p for p in PROVIDERS}


def parse_location(url: str, options: Mapping[str, str] | None = None) -> Location:
    """Split ``url`` into scheme, bucket (or directory) and prefix."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    provider = BY_SCHEME.get(scheme)
    if provider is None:
        known = ", ".join(f"{p.scheme}://" for p in PROVIDERS)
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
    if provider.directory:
        if parts.netloc not in ("", "localhost"):
            raise InvalidLocation(url, "a file URL has an absolute path: file:///path/to/dir")
        path = unquote(parts.path).rstrip("/") or "/"  # file:///my%20repo is "/my repo"
        if not path.startswith("/"):
            raise InvalidLocation(url, "a file URL has an absolute path: file:///path/to/dir")
        return Location(scheme, path, "", dict(options or {}))
    if not parts.netloc:
        raise InvalidLocation(url, f"no bucket or container: {scheme}://BUCKET/PREFIX")
    return Location(scheme, parts.netloc, parts.path.strip("/"), dict(options or {}))


def open_storage(
    url: str,
    options: Mapping[str, str] | None = None,
    *,
    wrap: bool = False,
    bandwidth: Bandwidth | None = None,
) -> Storage:
    """Open the storage that ``url`` names, with provider ``options``.

    With ``wrap=True`` the storage comes inside the standard wrappers (retries with backoff,
    a concurrency limit, Prometheus metrics, and the ``bandwidth`` throttle when given):
    see :func:`safehold.storage.wrappers.wrap`.
    """
    if bandwidth is not None and not wrap:
        raise ValueError("a bandwidth throttle is one of the standard wrappers: wrap=True")
    location = parse_location(url, options)
    from safehold.storage.options import option_retry_seconds  # (imports this module)

    retry_seconds = option_retry_seconds(location)  # checked even unwrapped: a typo fails early
    storage = BY_SCHEME[location.scheme].open(location)
    if wrap:
        from safehold.storage.wrappers import RetryPolicy
        from safehold.storage.wrappers import wrap as standard_wrappers

        retry = None if retry_seconds is None else RetryPolicy(budget=retry_seconds)
        return standard_wrappers(storage, retry=retry, bandwidth=bandwidth)
    return storage


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password or parts.username or parts.query:
        host = parts.hostname or ""
        return f"{parts.scheme}://{host}{parts.path}"
    return url
