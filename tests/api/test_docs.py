"""docs/resources.md is generated, lists every field, and its YAML examples are valid."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from safehold.api import KINDS, resource_model, validate_object
from safehold.api.crd import resource_schema
from safehold.api.docs import reference_markdown

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "resources.md"
_YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.DOTALL)


def _examples() -> list[str]:
    return _YAML_BLOCK.findall(DOC.read_text())


def test_reference_is_up_to_date() -> None:
    assert DOC.read_text() == reference_markdown(), "run python -m safehold.api.crdgen"


def test_one_example_per_kind() -> None:
    kinds = [yaml.safe_load(block)["kind"] for block in _examples()]
    assert sorted(kinds) == sorted(KINDS)


@pytest.mark.parametrize("block", _examples(), ids=lambda b: str(yaml.safe_load(b)["kind"]))
def test_example_is_valid(block: str) -> None:
    manifest = yaml.safe_load(block)
    assert validate_object(manifest) == []
    model = resource_model(manifest["kind"])
    parsed = model.model_validate(manifest)
    assert parsed.metadata.name == manifest["metadata"]["name"]


def test_every_field_is_documented() -> None:
    text = DOC.read_text()

    def walk(schema: dict[str, object], path: str) -> list[str]:
        paths = [path]
        props = schema.get("properties", {})
        assert isinstance(props, dict)
        for name, sub in props.items():
            paths += walk(sub, f"{path}.{name}")
        items = schema.get("items")
        if isinstance(items, dict) and "properties" in items:
            paths += walk(items, f"{path}[]")[1:]
        return paths

    for model in KINDS.values():
        schema = resource_schema(model)
        for part in ("spec", "status"):
            for path in walk(schema["properties"][part], part)[1:]:
                assert f"| `{path}` |" in text, f"{model.crd.kind}: {path} is not documented"
