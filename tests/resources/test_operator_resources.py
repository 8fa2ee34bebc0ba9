"""Cluster resources through the custom resources, as docs/cluster-resources.md shows
them: a BackupPolicy with a clusterResources source, a BackupRun whose export Job runs
as the user's ServiceAccount, and RestoreRequests (a dry run, then a restore into a
second namespace) whose apply Job runs as another one."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from safehold.engine.cluster.apply import map_namespace
from testground.kube import Cluster, Namespace
from testground.objectstores import RunningStore

pytestmark = pytest.mark.e2e


def _doc(kit: Any, name: str, ns: str) -> str:
    """A block of the guide, with its namespace ``shop`` replaced by the test's."""
    return str(kit.doc_block(name)).replace("shop", ns)


def _location(namespace: Namespace, store: RunningStore) -> None:
    bucket = f"b-{secrets.token_hex(4)}"
    store.make_bucket(bucket)
    options = dict(store.options)
    endpoint = options.pop("endpoint")
    region = options.pop("region", None)
    namespace.apply(
        [
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "primary-storage"},
             "stringData": options},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "primary-password"},
             "stringData": {"password": secrets.token_hex(12)}},
            {
                "apiVersion": "safehold.io/v1alpha1",
                "kind": "BackupLocation",
                "metadata": {"name": "primary"},
                "spec": {
                    "provider": "s3", "bucket": bucket, "prefix": "repo", "endpoint": endpoint,
                    **({"region": region} if region else {}),
                    "credentialsSecretRef": {"name": "primary-storage"},
                    "repositoryPasswordSecretRef": {"name": "primary-password"},
                },
            },
        ]
    )  # fmt: skip
    namespace.wait_condition("backuplocation", "primary", "Available", timeout=120)


def _norm(tree: dict[str, str]) -> dict[str, str]:
    return {p: yaml.safe_dump(yaml.safe_load(t), sort_keys=True) for p, t in tree.items()}


def test_policy_run_and_restore_requests(
    cluster: Cluster,
    namespace: Namespace,
    s3_store: RunningStore,
    operator: Any,
    kit: Any,
    tmp_path: Path,
) -> None:
    ns = str(namespace)
    copy = f"{ns}-copy"
    operator()
    kit.install_crd()
    kit.apply_app(ns)
    _location(namespace, s3_store)
    cluster.apply(_doc(kit, "rbac-backup", ns))
    cluster.apply(_doc(kit, "rbac-restore", ns))
    try:
        policy = yaml.safe_load(_doc(kit, "policy", ns))
        # spec.job reaches the export Job like every other backup Job
        policy["spec"]["job"] = {
            "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
            "tolerations": [{"key": "backups", "operator": "Exists"}],
        }
        namespace.apply(policy)
        namespace.apply(
            {
                "apiVersion": "safehold.io/v1alpha1",
                "kind": "BackupRun",
                "metadata": {"name": f"{ns}-config-1"},
                "spec": {"policyRef": {"name": f"{ns}-config"}, "type": "full"},
            }
        )
        run = namespace.wait_condition("backuprun", f"{ns}-config-1", "Complete", timeout=180)
        assert run["status"]["phase"] == "Succeeded", run["status"]
        (source,) = run["status"]["sources"]
        assert source["name"] == "resources"
        assert source["kind"] == "clusterResources"
        assert len(source["snapshotId"]) == 64
        job = namespace.get("job", source["job"])
        assert job is not None
        pod = job["spec"]["template"]["spec"]
        assert pod["tolerations"] == [{"key": "backups", "operator": "Exists"}]
        assert pod["containers"][0]["resources"]["requests"] == {"cpu": "10m", "memory": "64Mi"}
        live = kit.live_tree(tmp_path / "before", ns)
        # what the account may read (its Role: the core group, apps, example.com) is
        # exported; the rest (RBAC, safehold.io, batch) is left out with a warning
        before = {
            p: t for p, t in live.items() if p.split("/")[2] in ("core", "apps", "example.com")
        }
        assert len(before) < len(live)
        assert source["files"] == len(before), sorted(before)

        # restoring into another namespace without its owners' grant is denied
        plan = yaml.safe_load(_doc(kit, "restore", ns))
        namespace.apply(plan)
        rr = namespace.wait_condition(
            "restorerequest", plan["metadata"]["name"], "Failed", timeout=60
        )
        failed = next(c for c in rr["status"]["conditions"] if c["type"] == "Failed")
        assert failed["reason"] == "NamespaceNotFound", failed
        assert f"namespace {copy}, which does not exist" in failed["message"]
        # as the guide says: the namespace and its grant first
        cluster.kubectl("create", "namespace", copy)
        cluster.kubectl(
            "create", "configmap", "safehold-restore-grant", "-n", copy,
            f"--from-literal=fromNamespaces={ns}",
        )  # fmt: skip

        # a dry run lists and writes nothing
        plan["metadata"]["name"] = f"{ns}-config-copy-dry"
        namespace.apply(plan)
        rr = namespace.wait_condition(
            "restorerequest", plan["metadata"]["name"], "Complete", timeout=180
        )
        assert rr["status"]["phase"] == "Succeeded", rr["status"]
        (item,) = rr["status"]["restored"]
        assert item["kind"] == "clusterResources"
        # the namespace and its default ServiceAccount exist already: skipped
        assert item["files"] + item["skipped"] == source["files"]
        assert item["skipped"] == 2
        assert cluster.get("deployment", "web", copy) is None

        # the real restore into the second namespace
        plan["metadata"]["name"] = f"{ns}-config-copy-real"
        plan["spec"]["dryRun"] = False
        namespace.apply(plan)
        rr = namespace.wait_condition(
            "restorerequest", plan["metadata"]["name"], "Complete", timeout=180
        )
        assert rr["status"]["phase"] == "Succeeded", rr["status"]
        (item,) = rr["status"]["restored"]
        # the copy's default ServiceAccount is made by the cluster: it exists, skipped
        assert item["files"] + item["skipped"] == source["files"]
        copied = kit.live_tree(tmp_path / "copy", copy)
        # the grant was made by the copy's owners, not restored
        del copied[f"namespaces/{copy}/core/ConfigMap/safehold-restore-grant.yaml"]
        expected = {}
        for path, text in before.items():
            moved = map_namespace(yaml.safe_load(text), {ns: copy})
            new_path = path.replace(f"namespaces/{ns}/", f"namespaces/{copy}/").replace(
                f"Namespace/{ns}.yaml", f"Namespace/{copy}.yaml"
            )
            expected[new_path] = yaml.safe_dump(moved, sort_keys=True)
        assert _norm(copied) == _norm(expected)
    finally:
        cluster.delete_namespace(copy)
        cluster.kubectl(
            "delete",
            "clusterrolebinding,clusterrole",
            f"{ns}-resources-backup",
            f"{ns}-resources-restore",
            "--ignore-not-found",
            check=False,
        )
