"""What every custom resource has: apiVersion, kind, metadata, and its CRD's names.

Each kind's model carries a :class:`CrdInfo` so that the CRD generator, the docs and
the controller all read the plural, short names and printer columns from one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import ConfigDict, Field

from safehold.api.base import ApiModel

__all__ = ["CrdInfo", "CustomResource", "ObjectMeta", "PrinterColumn"]


class ObjectMeta(ApiModel):
    """The part of ``metav1.ObjectMeta`` Safehold reads; other fields are kept as they are."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    """The object's name."""
    namespace: str | None = None
    """The object's namespace."""
    labels: dict[str, str] = Field(default_factory=dict)
    """The object's labels."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """The object's annotations."""
    uid: str | None = None
    """The object's unique id, used in owner references."""
    generation: int | None = None
    """Incremented by the apiserver on every change of the spec."""
    resource_version: str | None = None
    """The version for optimistic concurrency."""
    creation_timestamp: datetime | None = None
    """When the object was created."""


@dataclass(frozen=True)
class PrinterColumn:
    """A column of ``kubectl get``."""

    name: str
    type: str
    json_path: str
    description: str
    priority: int = 0
    format: str | None = None


@dataclass(frozen=True)
class CrdInfo:
    """The names and table columns of a kind's CustomResourceDefinition."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    printer_columns: tuple[PrinterColumn, ...]
    categories: tuple[str, ...] = field(default=("safehold",))


class CustomResource(ApiModel):
    """A whole object as stored by the apiserver; kinds add ``kind``, ``spec`` and ``status``."""

    crd: ClassVar[CrdInfo]

    api_version: Literal["safehold.io/v1alpha1"] = "safehold.io/v1alpha1"
    """``safehold.io/v1alpha1``."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""
