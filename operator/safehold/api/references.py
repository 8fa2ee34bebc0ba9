"""References from one object to another in the same namespace, and to Secrets.

Secrets are always referenced, never inlined: the controller passes the reference on
to a Job, so neither the operator's process nor any status ever holds their contents.
"""

from __future__ import annotations

from pydantic import Field

from safehold.api.base import ApiModel
from safehold.api.types import ResourceName, SecretKey

__all__ = [
    "DatabaseCredentials",
    "LocalObjectReference",
    "SecretKeyReference",
    "SecretReference",
]


class LocalObjectReference(ApiModel):
    """A reference to an object of the expected kind in the same namespace."""

    name: ResourceName
    """The object's name."""


class SecretReference(ApiModel):
    """A Secret in the same namespace; the keys it must hold depend on where it is used."""

    name: ResourceName
    """The Secret's name."""


class SecretKeyReference(ApiModel):
    """One key of a Secret in the same namespace."""

    name: ResourceName
    """The Secret's name."""
    key: SecretKey = "password"
    """The key inside the Secret whose value is used."""


class DatabaseCredentials(ApiModel):
    """A Secret with the user name and password a dump connects with."""

    name: ResourceName
    """The Secret's name."""
    username_key: str = Field(default="username", max_length=253)
    """The key holding the user name."""
    password_key: str = Field(default="password", max_length=253)
    """The key holding the password."""
