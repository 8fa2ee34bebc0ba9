"""From a pydantic model to a structural OpenAPI v3 schema that the apiserver accepts.

Pydantic writes JSON Schema 2020-12; a CRD needs Kubernetes' structural subset of
OpenAPI v3 (valid on 1.20 and on current clusters):

- every ``$ref`` is inlined (Kubernetes rejects references);
- ``X | None`` (``anyOf`` with ``null``) becomes plain ``X``, deliberately without
  ``nullable: true``: the apiserver prunes a null it does not allow (so ``null`` still
  means "absent", as in the models), while 1.20 publishes nullable fields to kubectl
  without their type and sub-fields, which empties ``kubectl explain`` and switches
  off kubectl's own checks for the whole subtree;
- the one union Kubernetes allows, integer-or-string, keeps its ``anyOf`` and gains
  ``x-kubernetes-int-or-string``; any other union is an error, not a silent guess;
- ``title``, ``additionalProperties: false``, ``null``, empty-string and non-scalar
  defaults, and
  numeric ``exclusiveMinimum`` (a boolean in OpenAPI v3) are rewritten or dropped;
- descriptions come from the attribute docstrings, joined into single lines.

:func:`structural_problems` checks the result against the structural rules, so a
model that cannot be expressed is caught by the generator and its test.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["SchemaError", "model_schema", "structural_problems"]

JsonSchema = dict[str, Any]

# Keys a structural schema node may carry (apiextensions.k8s.io/v1 JSONSchemaProps).
_ALLOWED = frozenset(
    {
        "description",
        "type",
        "format",
        "enum",
        "default",
        "nullable",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "properties",
        "required",
        "items",
        "additionalProperties",
        "anyOf",
        "oneOf",
        "allOf",
        "not",
        "x-kubernetes-int-or-string",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-list-type",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-map-type",
        "x-kubernetes-embedded-resource",
    }
)
_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean"})
_JUNCTORS = ("anyOf", "oneOf", "allOf", "not")


class SchemaError(ValueError):
    """A model uses a construct that a structural CRD schema cannot express."""


def model_schema(model: type[BaseModel]) -> JsonSchema:
    """The structural schema of ``model`` (wire names, descriptions, constraints)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, JsonSchema] = raw.pop("$defs", {})
    return _convert(raw, defs, model.__name__)


def _convert(node: JsonSchema, defs: dict[str, JsonSchema], path: str) -> JsonSchema:
    node = dict(node)
    if "$ref" in node:
        name = node.pop("$ref").rsplit("/", 1)[-1]
        base = _convert(defs[name], defs, path)
        node = {**base, **{k: v for k, v in node.items() if k != "title"}}
    if "anyOf" in node and not _is_value_validation(node["anyOf"]):
        node = _union(node, defs, path)
    out: JsonSchema = {}
    for key, value in node.items():
        if key in ("title", "examples", "$defs"):
            continue
        if key == "description":
            # docstrings use reST ``literals``; kubectl explain and Markdown read `literals`
            out[key] = " ".join(str(value).split()).replace("``", "`")
        elif key == "const":
            out["enum"] = [value]
        elif key == "default":
            # An empty string is dropped too: kube-apiserver 1.20 reads ``default: ""`` as
            # null and rejects the CRD; absent and empty mean the same to the controller.
            if value is None or value == "" or isinstance(value, list | dict):
                continue
            out[key] = value
        elif key == "additionalProperties":
            if value is False:
                continue  # pruning drops unknown fields; false is not allowed beside properties
            out[key] = _convert(value, defs, f"{path}.*") if isinstance(value, dict) else value
        elif key == "properties":
            out[key] = {name: _convert(sub, defs, f"{path}.{name}") for name, sub in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs, f"{path}[]")
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key in _ALLOWED:
            out[key] = value
        else:
            raise SchemaError(f"{path}: {key!r} has no place in a structural CRD schema")
    return {key: out[key] for key in sorted(out)}


def _is_value_validation(branches: list[JsonSchema]) -> bool:
    """Junctor branches that only constrain values (``required``, ``enum``), not types."""
    return all(not {"type", "$ref", "anyOf"} & set(branch) for branch in branches)


def _union(node: JsonSchema, defs: dict[str, JsonSchema], path: str) -> JsonSchema:
    options = node.pop("anyOf")
    concrete = [o for o in options if o.get("type") != "null"]
    if len(concrete) == 1:
        inner = _convert(concrete[0], defs, path)
        return {**inner, **node}
    if sorted(o.get("type", "") for o in concrete) == ["integer", "string"]:
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        node["x-kubernetes-int-or-string"] = True
        return node
    raise SchemaError(
        f"{path}: a union of {[o.get('type', o.get('$ref')) for o in concrete]} cannot be "
        "expressed in a structural schema; use separate optional fields instead"
    )


def structural_problems(schema: JsonSchema, path: str = "") -> list[str]:
    """Where ``schema`` breaks Kubernetes' structural-schema rules (empty when it is fine).

    The rules checked: every node has a ``type`` (except integer-or-string and
    preserve-unknown-fields nodes); no ``$ref``; only known keys; ``properties`` and
    ``additionalProperties`` not together; junctors (``anyOf``...) carry no ``type``,
    ``description``, ``default``, ``nullable`` or ``additionalProperties`` and only
    name properties the node itself declares; no ``uniqueItems``; defaults only where
    pruning cannot remove them; list-map keys are required properties of the items.
    """
    problems: list[str] = []
    here = path or "(root)"
    for key in schema:
        if key not in _ALLOWED:
            problems.append(f"{here}: key {key!r} is not allowed")
    int_or_string = schema.get("x-kubernetes-int-or-string") is True
    preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
    node_type = schema.get("type")
    if node_type is None and not (int_or_string or preserve):
        problems.append(f"{here}: no type")
    if node_type is not None and node_type not in _TYPES:
        problems.append(f"{here}: type {node_type!r} is not a Kubernetes type")
    if int_or_string and node_type is not None:
        problems.append(f"{here}: an int-or-string node has no type")
    if schema.get("default") == "" or isinstance(schema.get("default"), list | dict):
        problems.append(f"{here}: default {schema['default']!r} (1.20 rejects it; omit it)")
    if "properties" in schema and "additionalProperties" in schema:
        problems.append(f"{here}: properties and additionalProperties together")
    if ("properties" in schema or "additionalProperties" in schema) and node_type != "object":
        problems.append(f"{here}: properties on a node of type {node_type!r}")
    if "items" in schema and node_type != "array":
        problems.append(f"{here}: items on a node of type {node_type!r}")
    if node_type == "array" and "items" not in schema:
        problems.append(f"{here}: an array without items")
    for name, sub in schema.get("properties", {}).items():
        problems += structural_problems(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        problems += structural_problems(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        problems += structural_problems(schema["additionalProperties"], f"{path}.*")
    elif "additionalProperties" in schema:
        problems.append(f"{here}: additionalProperties must be a schema")
    for junctor in _JUNCTORS:
        branches = schema.get(junctor)
        if branches is None:
            continue
        for index, branch in enumerate(branches if isinstance(branches, list) else [branches]):
            problems += _junctor_problems(
                branch, schema, f"{here}.{junctor}[{index}]", int_or_string
            )
    for key in schema.get("required", []):
        if key not in schema.get("properties", {}):
            problems.append(f"{here}: required {key!r} is not a property")
    if schema.get("x-kubernetes-list-type") == "map":
        item = schema.get("items", {})
        for key in schema.get("x-kubernetes-list-map-keys", []):
            if key not in item.get("required", []) and "default" not in item.get(
                "properties", {}
            ).get(key, {}):
                problems.append(f"{here}: list-map key {key!r} is neither required nor defaulted")
    return problems


def _junctor_problems(
    branch: JsonSchema, owner: JsonSchema, where: str, int_or_string: bool
) -> list[str]:
    problems: list[str] = []
    if int_or_string and branch in ({"type": "integer"}, {"type": "string"}):
        return problems
    for key in ("type", "description", "default", "nullable", "additionalProperties", "$ref"):
        if key in branch:
            problems.append(f"{where}: {key!r} is not allowed inside a junctor")
    for name, sub in branch.get("properties", {}).items():
        if name not in owner.get("properties", {}):
            problems.append(f"{where}: property {name!r} is not declared outside the junctor")
        problems += _junctor_problems(sub, owner.get("properties", {}).get(name, {}), where, False)
    return problems
