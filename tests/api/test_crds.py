"""The committed CRDs are what the models generate, and they are structural.

The structural checks here read the committed YAML files, not the generator's
internals, and apply Kubernetes' rules for apiextensions.k8s.io/v1 schemas themselves,
so a generator bug cannot hide behind its own checker.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from safehold.api import GROUP, KINDS, VERSION
from safehold.api.crdgen import DEFAULT_CRD_DIRS, crd_files, main
from safehold.api.schema import structural_problems

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"


def _committed() -> dict[str, dict[str, Any]]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(CRDS.glob("*.yaml"))}


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path or "(root)", schema
    for name, sub in schema.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}.*")


@pytest.mark.parametrize("directory", DEFAULT_CRD_DIRS, ids=str)
def test_committed_crds_equal_the_generator_output(directory: Path) -> None:
    generated = crd_files()
    committed = {p.name: p.read_text() for p in (REPO / directory).glob("*.yaml")}
    assert sorted(committed) == sorted(generated), "run python -m safehold.api.crdgen"
    for name, text in generated.items():
        assert committed[name] == text, f"{directory}/{name} is stale: run crdgen"


def test_check_mode_fails_on_a_stale_or_extra_file(tmp_path: Path) -> None:
    crds, docs = tmp_path / "crds", tmp_path / "resources.md"
    args = ["--crds", str(crds), "--docs", str(docs)]
    assert main(["--check", *args]) == 1  # nothing written yet
    assert main(args) == 0
    assert main(["--check", *args]) == 0
    stale = crds / "backupruns.safehold.io.yaml"
    stale.write_text(stale.read_text().replace("maxLength: 253", "maxLength: 254", 1))
    assert main(["--check", *args]) == 1
    assert main(args) == 0
    (crds / "olds.safehold.io.yaml").write_text("kind: CustomResourceDefinition\n")
    assert main(["--check", *args]) == 1


def test_one_crd_per_kind_with_names_and_status_subresource() -> None:
    committed = _committed()
    assert len(committed) == len(KINDS)
    short_names: list[str] = []
    for kind, model in KINDS.items():
        crd = committed[f"{model.crd.plural}.{GROUP}.yaml"]
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
        assert crd["metadata"]["name"] == f"{model.crd.plural}.{GROUP}"
        spec = crd["spec"]
        assert spec["group"] == GROUP
        assert spec["scope"] == "Namespaced"
        assert spec["names"]["kind"] == kind
        assert spec["names"]["plural"] == model.crd.plural
        assert spec["names"]["shortNames"]
        short_names += spec["names"]["shortNames"]
        [version] = spec["versions"]
        assert (version["name"], version["served"], version["storage"]) == (VERSION, True, True)
        assert version["subresources"] == {"status": {}}
        assert _schema(crd)["required"] == ["spec"]
    assert len(short_names) == len(set(short_names)), "short names must not clash"


@pytest.mark.parametrize("name", sorted(p.name for p in CRDS.glob("*.yaml")))
def test_schema_is_structural(name: str) -> None:
    schema = _schema(_committed()[name])
    text = (CRDS / name).read_text()
    assert "$ref" not in text
    assert "x-kubernetes-validations" not in text, "CEL needs Kubernetes 1.25+; we support 1.20"
    assert "uniqueItems" not in text
    assert "x-kubernetes-preserve-unknown-fields" not in text
    assert schema["properties"]["metadata"] == {"type": "object"}
    for path, node in _nodes(schema):
        int_or_string = node.get("x-kubernetes-int-or-string") is True
        if int_or_string:
            assert "type" not in node, path
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        else:
            assert node.get("type") in {
                "object",
                "array",
                "string",
                "integer",
                "number",
                "boolean",
            }, path
        assert "additionalProperties" not in node or "properties" not in node, path
        assert node.get("additionalProperties") is not False, path
        if node.get("type") == "array":
            assert isinstance(node.get("items"), dict), path
        if "default" in node:
            assert not isinstance(node["default"], dict | list), path
        for junctor in ("oneOf", "anyOf", "allOf", "not"):
            if junctor in node and not int_or_string:
                for branch in node[junctor]:
                    assert not {"type", "description", "default", "nullable"} & set(branch), path
                    assert set(branch.get("properties", {})) <= set(node["properties"]), path
        for required in node.get("required", []):
            assert required in node["properties"], f"{path}: {required}"
        if "description" in node:
            assert "\n" not in node["description"], path
    assert structural_problems(schema) == []


def test_every_spec_field_is_described() -> None:
    for name, crd in _committed().items():
        for path, node in _nodes(_schema(crd)):
            if path.startswith((".spec.", ".status.")) and not path.endswith((".*", "[]")):
                assert node.get("description"), f"{name}: {path} has no description"


def test_printer_columns_point_at_real_fields() -> None:
    for name, crd in _committed().items():
        schema = _schema(crd)
        columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        assert [c["name"] for c in columns][-1] == "Age"
        for column in columns:
            path = column["jsonPath"]
            if path.startswith(".metadata."):
                continue
            node = schema
            for part in re.sub(r"\[[^]]*\]", "", path).lstrip(".").split("."):
                node = node["properties"][part]
                if node.get("type") == "array":
                    node = node["items"]
            assert column["type"] in {"string", "integer", "boolean", "date", "number"}, name


def test_enums_ranges_and_patterns_reach_the_schema() -> None:
    policy = _schema(_committed()["backuppolicies.safehold.io.yaml"])["properties"]["spec"]
    spec = policy["properties"]
    assert spec["concurrencyPolicy"]["enum"] == ["Forbid", "Allow", "Replace"]
    assert spec["concurrencyPolicy"]["default"] == "Forbid"
    assert spec["retention"]["properties"]["keepLast"]["minimum"] == 0
    slot = spec["schedule"]["properties"]["slots"]["items"]["properties"]
    assert slot["cron"]["pattern"].startswith("^(@(yearly")
    assert slot["type"]["enum"] == ["full", "incremental", "differential"]
    assert spec["schedule"]["properties"]["slots"]["minItems"] == 1
    assert set(policy["required"]) == {"sources", "location"}
    volume = spec["sources"]["properties"]["volumes"]["items"]
    assert volume["oneOf"] == [{"required": ["claimName"]}, {"required": ["selector"]}]
    location = _schema(_committed()["backuplocations.safehold.io.yaml"])["properties"]["spec"]
    assert location["properties"]["provider"]["enum"] == ["s3", "gcs", "azure", "filesystem"]
    assert {tuple(b["required"]) for b in location["anyOf"]} == {("bucket",), ("claimName",)}
    run = _schema(_committed()["backupruns.safehold.io.yaml"])["properties"]["status"]
    conditions = run["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["items"]["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert run["properties"]["phase"]["enum"] == [
        "Pending",
        "Running",
        "Succeeded",
        "PartiallyFailed",
        "Failed",
    ]


def test_the_checker_catches_what_kubernetes_rejects() -> None:
    assert structural_problems({"properties": {"a": {"type": "string"}}})[0] == "(root): no type"
    assert any("$ref" in p for p in structural_problems({"type": "object", "$ref": "#/x"}))
    assert structural_problems(
        {
            "type": "object",
            "properties": {"a": {"type": "string"}},
            "additionalProperties": {"type": "string"},
        }
    ) == ["(root): properties and additionalProperties together"]
    assert structural_problems(
        {"type": "object", "properties": {"a": {"type": "string"}}, "anyOf": [{"type": "string"}]}
    ) == ["(root).anyOf[0]: 'type' is not allowed inside a junctor"]
    assert structural_problems({"type": "array"}) == ["(root): an array without items"]
    assert structural_problems({"type": "string", "uniqueItems": True}) == [
        "(root): key 'uniqueItems' is not allowed"
    ]


def test_several_crd_directories_stay_in_step(tmp_path: Path) -> None:
    repo, chart = tmp_path / "crds", tmp_path / "chart" / "crds"
    args = ["--crds", str(repo), "--crds", str(chart), "--no-docs"]
    assert main(args) == 0
    assert sorted(p.name for p in chart.iterdir()) == sorted(p.name for p in repo.iterdir())
    assert main(["--check", *args]) == 0
    (chart / "backupruns.safehold.io.yaml").unlink()
    assert main(["--check", *args]) == 1
