"""``apply-resources`` over objects that exist: skip leaves them, update brings the
backup's fields back, fail writes nothing; a dry run changes nothing; selection by type,
name and label."""

from __future__ import annotations

from typing import Any

import pytest

from testground.kube import Cluster, Namespace

pytestmark = pytest.mark.e2e


def _mode(namespace: Namespace) -> str:
    cm = namespace.get("configmap", "web-config") or {}
    return str(cm["data"]["mode"])


def test_existing_objects_per_policy(
    cluster: Cluster, namespace: Namespace, cli: Any, kit: Any
) -> None:
    ns = str(namespace)
    kit.install_crd()
    kit.apply_app(ns)
    snap = cli("export-resources", "-n", ns, "--include-secrets")["snapshot"]
    namespace.kubectl(
        "patch",
        "configmap",
        "web-config",
        "--type=merge",
        "-p",
        '{"data":{"mode":"maintenance","extra":"kept"}}',
    )
    namespace.kubectl("delete", "service", "web")
    rv = namespace.get("configmap", "web-config")["metadata"]["resourceVersion"]  # type: ignore[index]

    plan = cli("apply-resources", snap, "--dry-run", "--existing", "update")
    assert plan["dry_run"]
    assert plan["created"] == 1
    assert plan["failed"] == 0
    targets = {a["target"]: a["action"] for a in plan["actions"]}
    assert targets[f"service {ns}/web"] == "create"
    assert targets[f"configmap {ns}/web-config"] == "update"
    assert namespace.get("service", "web") is None, "a dry run creates nothing"
    cm = namespace.get("configmap", "web-config") or {}
    assert cm["metadata"]["resourceVersion"] == rv, "nor updates"

    failed = cli("apply-resources", snap, "--existing", "fail", code=1)
    assert "exist already" in failed["error"]
    assert "policy is fail" in failed["error"]
    assert namespace.get("service", "web") is None, "fail writes nothing"

    skipped = cli("apply-resources", snap)
    assert skipped["created"] == 1
    assert skipped["updated"] == 0
    assert namespace.get("service", "web") is not None
    assert _mode(namespace) == "maintenance"

    updated = cli(
        "apply-resources", snap, "--existing", "update", "--include-resources", "configmaps"
    )
    assert updated["updated"] == 1, updated["actions"]
    assert updated["skipped"] == 1, "the namespace comes along, and is left as it is"
    cm = namespace.get("configmap", "web-config") or {}
    assert cm["data"]["mode"] == "production"
    assert cm["data"]["extra"] == "kept", "server-side apply keeps fields the backup lacks"


def test_selection_by_name_and_label(
    cluster: Cluster, namespace: Namespace, cli: Any, kit: Any
) -> None:
    ns = str(namespace)
    kit.install_crd()
    kit.apply_app(ns)
    namespace.kubectl("create", "configmap", "other", "--from-literal=a=b")
    snap = cli("export-resources", "-n", ns, "-l", "app=web")
    assert snap["by_type"].get("configmaps") == 1, snap["by_type"]
    full = cli("export-resources", "-n", ns)["snapshot"]
    namespace.kubectl("delete", "configmap", "web-config", "other")
    by_name = cli("apply-resources", full, "--name", "other", "--dry-run")
    # the namespace comes along with what is in it (and exists: skipped)
    assert [(a["target"], a["action"]) for a in by_name["actions"]] == [
        (f"namespace {ns}", "skip"),
        (f"configmap {ns}/other", "create"),
    ]
    by_label = cli("apply-resources", full, "-l", "app=web", "--include-resources", "cm")
    assert [a["target"] for a in by_label["actions"]][1:] == [f"configmap {ns}/web-config"]
    assert by_label["created"] == 1
    bad = cli("apply-resources", full, "-l", "app==(", code=2)
    assert "--selector" in bad["error"]
