"""Back up a namespace's configuration with ``safehold export-resources``, delete it
(its CRD too), and bring it back with ``apply-resources``: into the same namespace and
into a second one. The restored objects' clean manifests must equal the backed-up ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from safehold.engine.cluster.apply import map_namespace
from testground.kube import Cluster, Namespace

pytestmark = pytest.mark.e2e
CRD_NAME = "widgets.example.com"

EXPECTED = (
    "namespaces/{ns}/core/Namespace/{ns}.yaml",
    "namespaces/{ns}/core/ConfigMap/web-config.yaml",
    "namespaces/{ns}/core/Secret/web-credentials.yaml",
    "namespaces/{ns}/core/PersistentVolumeClaim/web-data.yaml",
    "namespaces/{ns}/core/Service/web.yaml",
    "namespaces/{ns}/apps/Deployment/web.yaml",
    "namespaces/{ns}/example.com/Widget/blue-widget.yaml",
    f"cluster/apiextensions.k8s.io/CustomResourceDefinition/{CRD_NAME}.yaml",
)


def _gone(cluster: Cluster, kind: str, name: str, ns: str | None = None) -> None:
    cluster.kubectl(
        "delete", kind, name, "--ignore-not-found", "--wait=false", *(["-n", ns] if ns else [])
    )
    cluster.wait_for(
        lambda: cluster.get(kind, name, ns) is None,
        timeout=120,
        what=f"{kind} {name} to be deleted",
    )


def _moved(tree: dict[str, str], old: str, new: str) -> dict[str, str]:
    """``tree`` as it must look after a restore with the mapping old -> new."""
    out = {}
    for path, text in tree.items():
        obj: dict[str, Any] = yaml.safe_load(text)
        moved = map_namespace(obj, {old: new})
        out[
            path.replace(f"namespaces/{old}/", f"namespaces/{new}/").replace(
                f"Namespace/{old}.yaml", f"Namespace/{new}.yaml"
            )
        ] = yaml.safe_dump(moved, sort_keys=True)
    return out


def _norm(tree: dict[str, str]) -> dict[str, str]:
    return {p: yaml.safe_dump(yaml.safe_load(t), sort_keys=True) for p, t in tree.items()}


def test_namespace_deleted_and_restored_twice(
    cluster: Cluster, namespace: Namespace, cli: Any, kit: Any, tmp_path: Path
) -> None:
    ns = str(namespace)
    kit.install_crd()
    kit.apply_app(ns)
    before = kit.live_tree(tmp_path / "before", ns, include_cluster_scoped=True)
    for path in EXPECTED:
        assert path.format(ns=ns) in before, sorted(before)
    deployment = yaml.safe_load(before[f"namespaces/{ns}/apps/Deployment/web.yaml"])
    for key in ("uid", "resourceVersion", "managedFields", "creationTimestamp", "generation"):
        assert key not in deployment["metadata"]
    assert "status" not in deployment
    assert "deployment.kubernetes.io/revision" not in (
        deployment["metadata"].get("annotations") or {}
    )
    service = yaml.safe_load(before[f"namespaces/{ns}/core/Service/web.yaml"])
    assert "clusterIP" not in service["spec"]
    assert "clusterIPs" not in service["spec"]
    claim = yaml.safe_load(before[f"namespaces/{ns}/core/PersistentVolumeClaim/web-data.yaml"])
    assert "volumeName" not in claim["spec"]
    assert not any("ReplicaSet" in p for p in before), "owned objects are not exported"
    assert not any("kube-root-ca.crt" in p for p in before)

    first = cli("export-resources", "-n", ns, "--include-secrets", "--cluster-scoped")
    assert first["ok"]
    assert first["objects"] == len(before)
    second = cli("export-resources", "-n", ns, "--include-secrets", "--cluster-scoped")
    # unchanged objects give the same bytes: the second snapshot stores no manifest again,
    # only its directory metadata (times and inodes of the fresh temporary tree)
    same = cli("diff-resources", first["snapshot"], second["snapshot"])
    assert same["changed"] == same["added"] == same["removed"] == []
    assert same["unchanged"] == len(before)
    print("export sizes", {k: first[k] for k in ("total_bytes", "bytes_new")}, second["bytes_new"])
    assert second["bytes_new"] <= first["bytes_new"] - first["total_bytes"] + 1024
    assert second["objects"] == first["objects"]

    # without --include-secrets no Secret is stored
    plain = cli("export-resources", "-n", ns, "--source", "no-secrets")
    assert "secrets" not in plain["by_type"]

    # delete everything, the CRD included, and look at the plan first
    _gone(cluster, "namespace", ns)
    _gone(cluster, "crd", CRD_NAME)
    plan = cli("apply-resources", first["snapshot"], "--dry-run")
    assert plan["dry_run"]
    assert plan["failed"] == 0
    # the claim's StorageClass (a cluster-scoped dependency) is there still: skipped
    assert [a["target"] for a in plan["actions"] if a["action"] == "skip"] == [
        "storageclass.storage.k8s.io local-path"
    ]
    assert plan["created"] == len(before) - 1
    assert cluster.get("namespace", ns) is None
    assert cluster.get("crd", CRD_NAME) is None

    done = cli("apply-resources", first["snapshot"])
    assert done["failed"] == 0, done["actions"]
    # the default ServiceAccount is made by the cluster as soon as the namespace exists
    assert done["created"] + done["skipped"] == len(before)
    kinds = [a["target"].split()[0] for a in done["actions"]]
    assert (
        kinds.index("customresourcedefinition.apiextensions.k8s.io")
        < kinds.index("namespace")
        < kinds.index("configmap")
        < kinds.index("deployment.apps")
        < kinds.index("widget.example.com")
    )
    apply_wait = cluster.wait_for(
        lambda: (
            (cluster.get("pvc", "web-data", ns) or {}).get("status", {}).get("phase") == "Bound"
            or None
        ),
        timeout=60,
        what="the restored claim to be bound",
    )
    assert apply_wait
    after = kit.live_tree(tmp_path / "after", ns, include_cluster_scoped=True)
    assert _norm(after) == _norm(before)

    # the same backup into a second namespace
    copy = f"{ns}-copy"
    try:
        moved = cli(
            "apply-resources", first["snapshot"], "-n", ns, "--map-namespace", f"{ns}={copy}"
        )
        assert moved["failed"] == 0, moved["actions"]
        copied = kit.live_tree(tmp_path / "copy", copy, include_cluster_scoped=True)
        assert _norm(copied) == _norm(_moved(before, ns, copy))
    finally:
        cluster.delete_namespace(copy)


def test_diff_shows_what_changed(
    cluster: Cluster, namespace: Namespace, cli: Any, kit: Any
) -> None:
    ns = str(namespace)
    kit.install_crd()
    kit.apply_app(ns)
    old = cli("export-resources", "-n", ns)
    namespace.kubectl(
        "patch", "configmap", "web-config", "--type=merge", "-p", '{"data":{"mode":"maintenance"}}'
    )
    namespace.kubectl("delete", "widget", "blue-widget")
    new = cli("export-resources", "-n", ns)
    diff = cli("diff-resources", old["snapshot"], new["snapshot"])
    assert diff["changed"] == [f"namespaces/{ns}/core/ConfigMap/web-config.yaml"]
    assert diff["removed"] == [f"namespaces/{ns}/example.com/Widget/blue-widget.yaml"]
    assert diff["added"] == []
