"""TLS: the CA a location's server is trusted by, and a certificate it is not trusted by.

Servers behind a private CA (MinIO or Ceph in a data centre, an internal proxy) present
certificates the system's CAs do not sign. Option ``ca_file`` names a PEM file of the CA
certificates to trust for the location's endpoint instead (a BackupLocation's
``spec.caCert`` becomes that file in its Jobs); every provider hands it to its HTTP client.

A certificate that does not verify is no outage: retrying cannot help, so
:func:`untrusted_certificate` turns it into :class:`CertificateNotTrusted` (a
:class:`PermanentError`, never retried) that says what to set, instead of the transient
"cannot reach" of a refused connection.
"""

from __future__ import annotations

import ssl

from safehold.storage.errors import CertificateNotTrusted, InvalidLocation
from safehold.storage.registry import Location

__all__ = ["ca_file", "untrusted_certificate"]

_VERIFY_FAILED = "CERTIFICATE_VERIFY_FAILED"


def ca_file(location: Location) -> str | None:
    """Option ``ca_file``, checked: a readable file holding at least one certificate."""
    path = location.options.get("ca_file") or None
    if path is None:
        return None
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        # ssl.SSLError is an OSError too, with a strerror of its own
        missing = not isinstance(exc, ssl.SSLError) and exc.strerror
        why = exc.strerror if missing else "no PEM certificate"
        raise InvalidLocation(
            location.url, f"option ca_file: {why} in {path} (give the CA's certificates, PEM)"
        ) from exc
    return path


def _verify_message(exc: BaseException) -> str | None:
    """Why ``exc`` (or what it wraps) failed a certificate check, or None."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ssl.SSLCertVerificationError):
            return str(item.verify_message or "certificate verify failed")
        # urllib3's MaxRetryError.reason, botocore's kwargs["error"], requests' args
        todo += [item.__cause__, item.__context__, getattr(item, "reason", None), *item.args]
        todo += list((getattr(item, "kwargs", None) or {}).values())
    text = str(exc)
    if _VERIFY_FAILED in text:
        return text[text.index(_VERIFY_FAILED) :].split(")")[0][:200]
    return None


def untrusted_certificate(
    location: str, exc: BaseException, endpoint: str, name: str | None = None
) -> CertificateNotTrusted | None:
    """The error to report when ``exc`` is a server certificate that did not verify
    (``location``: the URL errors start with)."""
    why = _verify_message(exc)
    if why is None:
        return None
    return CertificateNotTrusted(
        location,
        f"the TLS certificate of {endpoint} is not trusted ({why}): set option ca_file to "
        "the certificates of the CA that signed it (a BackupLocation's spec.caCert), or "
        "check the endpoint",
        name=name,
    )
