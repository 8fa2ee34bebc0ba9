"""The CustomResourceDefinition of a kind, as a dict ready to be written as YAML."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel

from safehold.api.base import GROUP, VERSION
from safehold.api.meta import CustomResource
from safehold.api.schema import JsonSchema, model_schema

__all__ = ["crd_manifest", "crd_name", "resource_schema"]


def crd_name(model: type[CustomResource]) -> str:
    """``backuppolicies.safehold.io``."""
    return f"{model.crd.plural}.{GROUP}"


def _part_model(model: type[CustomResource], part: str) -> type[BaseModel]:
    annotation = model.model_fields[part].annotation
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    raise TypeError(f"{model.__name__}.{part} is not a model")


def resource_schema(model: type[CustomResource]) -> JsonSchema:
    """The whole object's schema: apiVersion, kind, metadata, spec and status."""
    fields = model.model_fields
    spec = model_schema(_part_model(model, "spec"))
    spec["description"] = fields["spec"].description or spec.get("description", "")
    status = model_schema(_part_model(model, "status"))
    status["description"] = fields["status"].description or status.get("description", "")
    return {
        "description": " ".join((model.__doc__ or "").split()),
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this "
                "representation of an object: safehold.io/v1alpha1.",
                "type": "string",
            },
            "kind": {
                "description": f"Kind is the type of this object: {model.crd.kind}.",
                "type": "string",
            },
            "metadata": {"type": "object"},
            "spec": dict(sorted(spec.items())),
            "status": dict(sorted(status.items())),
        },
        "required": ["spec"],
        "type": "object",
    }


def crd_manifest(model: type[CustomResource]) -> dict[str, Any]:
    """The apiextensions.k8s.io/v1 CRD of ``model``, valid on Kubernetes 1.20 and later."""
    info = model.crd
    columns = [
        {
            "name": column.name,
            "type": column.type,
            "jsonPath": column.json_path,
            "description": column.description,
            **({"priority": column.priority} if column.priority else {}),
            **({"format": column.format} if column.format else {}),
        }
        for column in info.printer_columns
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": crd_name(model),
            "labels": {
                "app.kubernetes.io/name": "safehold",
                "app.kubernetes.io/part-of": "safehold",
            },
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": list(info.categories),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": resource_schema(model)},
                }
            ],
        },
    }
