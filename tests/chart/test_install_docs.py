"""docs/install.md: every YAML block parses, and each one that can be checked is.

- values snippets (blocks starting with ``# values.yaml``) render with the chart, so they
  pass values.schema.json;
- the production example pins the image by digest, watches listed namespaces, adds the
  NetworkPolicies, limits what policies may name, keeps exec hooks off and limits memory;
- the Argo CD Application and the Flux objects point at the chart's real path, their values
  render, and the HelmRelease's source is one the page defines;
- the values table lists exactly the chart's values, and the RBAC table exactly the rules the
  chart renders;
- the repository paths the shell commands use exist.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "install.md"
CHART = REPO / "charts" / "safehold"
TEXT = DOC.read_text()
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
BLOCKS: list[tuple[str, str]] = BLOCK.findall(TEXT)
YAML_BLOCKS = [body for lang, body in BLOCKS if lang == "yaml"]
VALUES_BLOCKS = [body for body in YAML_BLOCKS if body.startswith("# values.yaml")]
OBJECTS: list[dict[str, Any]] = [
    doc
    for body in YAML_BLOCKS
    if not body.startswith("# values.yaml")
    for doc in yaml.safe_load_all(body)
    if doc
]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [o for o in OBJECTS if o["kind"] == kind]


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", TEXT, re.M | re.S)
    assert match, f"docs/install.md has no section {title!r}"
    return match.group(1)


def test_every_yaml_block_parses() -> None:
    assert len(YAML_BLOCKS) >= 7
    for body in YAML_BLOCKS:
        assert list(yaml.safe_load_all(body))


@pytest.mark.parametrize("index", range(len(VALUES_BLOCKS)))
def test_values_snippet_is_accepted_by_the_chart(render: Any, index: int) -> None:
    values = yaml.safe_load(VALUES_BLOCKS[index])
    assert values, VALUES_BLOCKS[index]
    render(values)


def test_argo_cd_application_installs_the_chart(render: Any) -> None:
    [app] = of_kind("Application")
    assert app["apiVersion"] == "argoproj.io/v1alpha1"
    source = app["spec"]["source"]
    assert (REPO / source["path"] / "Chart.yaml").is_file()
    assert source["path"] == "charts/safehold"
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert source["repoURL"].removesuffix(".git") in chart["sources"]
    assert source["targetRevision"] == f"v{chart['version']}"
    assert app["spec"]["destination"]["namespace"] == "safehold-system"
    assert "CreateNamespace=true" in app["spec"]["syncPolicy"]["syncOptions"]
    render(source["helm"]["valuesObject"])


def test_flux_release_installs_the_chart_from_a_defined_source(render: Any) -> None:
    releases = of_kind("HelmRelease")
    assert len(releases) == 2
    sources = {
        (o["kind"], o["metadata"]["name"]) for o in OBJECTS if o["kind"].endswith("Repository")
    }
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    for release in releases:
        assert release["apiVersion"] == "helm.toolkit.fluxcd.io/v2"
        spec = release["spec"]
        ref = spec["chart"]["spec"]["sourceRef"]
        assert (ref["kind"], ref["name"]) in sources
        if ref["kind"] == "GitRepository":
            assert (REPO / spec["chart"]["spec"]["chart"] / "Chart.yaml").is_file()
        else:
            assert spec["chart"]["spec"]["chart"] == chart["name"]
            assert spec["chart"]["spec"]["version"] == chart["version"]
        assert spec["targetNamespace"] == "safehold-system"
        assert spec["install"]["crds"] == spec["upgrade"]["crds"] == "CreateReplace"
        render(spec.get("values"))
    [git] = of_kind("GitRepository")
    assert git["spec"]["url"] in chart["sources"]
    assert git["spec"]["ref"]["tag"] == f"v{chart['version']}"
    [oci] = of_kind("HelmRepository")
    assert oci["spec"]["type"] == "oci"


def _leaves(values: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= {path} | _leaves(value, f"{path}.")
        else:
            out.add(path)
    return out


def test_values_table_lists_exactly_the_charts_values() -> None:
    documented = set(re.findall(r"^\| `([\w.]+)` \|", section("Values"), re.M))
    paths = _leaves(yaml.safe_load((CHART / "values.yaml").read_text()))
    assert documented <= paths, f"documented but not in values.yaml: {documented - paths}"
    for path in paths:
        parts = path.split(".")
        covered = any(".".join(parts[:i]) in documented for i in range(1, len(parts) + 1))
        children = any(d.startswith(path + ".") for d in documented)
        assert covered or children, f"values.yaml's {path} is not in the table"


def test_rbac_table_is_what_the_chart_grants(render: Any) -> None:
    table: set[tuple[str, str, str]] = set()
    for row in re.findall(
        r"^\| `([^`]*)`[^|]*\| ([^|]+) \| ([^|]+) \|", section("RBAC, rule by rule"), re.M
    ):
        group, resources, verbs = row
        group = "" if group == '""' else group
        for resource in re.findall(r"`([\w/]+)`", resources):
            for verb in verbs.replace(" ", "").split(","):
                table.add((group, resource, verb))
    # The table lists every rule the chart can grant; pods/exec only with execHooks.enabled.
    [role] = [o for o in render({"execHooks": {"enabled": True}}) if o["kind"] == "ClusterRole"]
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert table == granted


def test_paths_in_commands_exist() -> None:
    commands = "\n".join(body for lang, body in BLOCKS if lang == "sh")
    paths = set(re.findall(r"(?<![\w/])((?:charts|deploy)/[\w./-]*\w)", commands))
    assert paths >= {"charts/safehold", "deploy/safehold.yaml", "charts/safehold/crds"}
    for path in paths:
        assert (REPO / path).exists(), path


def test_uninstall_selector_spares_the_crds_and_the_namespace() -> None:
    """``kubectl delete -f deploy/safehold.yaml -l app.kubernetes.io/component=operator``."""
    assert "kubectl delete -f deploy/safehold.yaml -l app.kubernetes.io/component=operator" in TEXT
    docs = [d for d in yaml.safe_load_all((REPO / "deploy" / "safehold.yaml").read_text()) if d]
    selected = {
        d["kind"]
        for d in docs
        if (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "operator"
    }
    assert selected == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",  # the leader election's, in the operator's namespace
        "RoleBinding",
        "Service",
        "Deployment",
    }


def test_production_example_is_a_hardened_install(render: Any) -> None:
    """The "Production example" renders and does what the page says it does."""
    [body] = [b for lang, b in re.findall(BLOCK, section("Production example")) if lang == "yaml"]
    values = yaml.safe_load(body)
    objects = render(values)
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    # pinned by digest, for the operator and the Jobs it starts
    pinned = f"{values['image']['repository']}@{values['image']['digest']}"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", values["image"]["digest"])
    assert container["image"] == env["SAFEHOLD_IMAGE"] == pinned
    # only the listed namespaces: Roles there, no cluster-wide rule on namespaced resources
    assert values["watchNamespaces"]
    roles = [
        o
        for o in objects
        if o["kind"] in ("Role", "ClusterRole")
        and not o["metadata"]["name"].endswith("-leader-election")  # its own Lease only
    ]
    assert {o["metadata"]["namespace"] for o in roles if o["kind"] == "Role"} == set(
        values["watchNamespaces"]
    )
    for role in roles:
        granted = {r for rule in role["rules"] for r in rule["resources"]}
        assert "pods/exec" not in granted, role["metadata"]
        if role["kind"] == "ClusterRole":
            assert not granted & {"jobs", "pods", "persistentvolumeclaims", "backupruns"}
    assert env["SAFEHOLD_EXEC_HOOKS"] == "false"
    assert env["SAFEHOLD_ALLOWED_SERVICE_ACCOUNTS"]
    assert env["SAFEHOLD_ALLOWED_DATABASE_HOSTS"]
    # NetworkPolicies: the operator's, and the Jobs' in every watched namespace
    policies = {
        (o["metadata"]["namespace"], o["metadata"]["name"])
        for o in objects
        if o["kind"] == "NetworkPolicy"
    }
    assert ("safehold-system", "safehold") in policies
    for namespace in values["watchNamespaces"]:
        assert (namespace, "safehold-jobs") in policies
    # memory limits on the operator and on its Jobs
    assert container["resources"]["limits"]["memory"]
    assert json.loads(env["SAFEHOLD_JOB_DEFAULTS"])["resources"]["limits"]["memory"]
