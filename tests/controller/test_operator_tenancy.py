"""Tenancy: a RestoreRequest in one namespace writes into another only when that
namespace's owners allowed it (ConfigMap safehold-restore-grant, docs/security.md).

On the test ground: a claim of namespace A is backed up; RestoreRequests in A aimed at
namespace B's claim (by spec.target.namespace and by namespaceMapping, with Overwrite)
fail saying what B's owners must create, and B's bytes stay as they were; a grant for
another namespace does not count; with B's grant the same restore succeeds; a grant
removed after the plan stops the Job from being created.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from safehold.controller import runtime as runtime_module
from testground.kube import Namespace
from testground.objectstores import RunningStore

GRANT = "safehold-restore-grant"


def _failed(kit: Any, namespace: Namespace, name: str) -> dict[str, Any]:
    kit.kubectl_wait(namespace, f"restorerequest/{name}", "Failed")
    rr = kit.get(namespace, "restorerequest", name)
    assert rr["status"]["phase"] == "Failed", rr["status"]
    return next(c for c in rr["status"]["conditions"] if c["type"] == "Failed")


def _grant(target: Namespace, allowed: str) -> None:
    target.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": GRANT},
            "data": {"fromNamespaces": allowed},
        }
    )


def _jobs(target: Namespace) -> list[str]:
    out = target.kubectl("get", "jobs", "-o", "json").stdout
    return [j["metadata"]["name"] for j in json.loads(out)["items"]]


def test_restore_into_another_namespace_needs_its_owners_grant(
    namespace: Namespace,
    s3_store: RunningStore,
    operator: Any,
    kit: Any,
    request: pytest.FixtureRequest,
) -> None:
    operator()
    original = kit.write_data(kit.make_claim(namespace, "data"), seed=11, files=6)
    kit.store_location(namespace, s3_store)
    kit.policy(namespace, "pol", "loc", ["data"])
    kit.backup_run(namespace, "run", "pol")
    other = namespace.cluster.create_namespace(f"{namespace}-b")
    request.addfinalizer(lambda: namespace.cluster.delete_namespace(other))
    # B's own data, at the same paths as some of A's
    theirs_dir = kit.make_claim(other, "data")
    theirs = kit.write_data(theirs_dir, seed=99, files=4)
    # B's owners copy the location's Secrets (the Job runs in B and mounts them by name)
    secrets = namespace.kubectl("get", "secret", "loc-storage", "loc-password", "-o", "yaml")
    text = secrets.stdout.replace(f"namespace: {namespace}\n", f"namespace: {other}\n")
    other.kubectl("apply", "-f", "-", input=text)
    kit.kubectl_wait(namespace, "backuprun/run", "Complete")
    run = {"name": "run"}

    # denied by default, whichever field names B
    kit.restore_request(
        namespace, "by-target", backupRunRef=run, existingResourcePolicy="Overwrite",
        target={"claimName": "data", "namespace": str(other)},
    )  # fmt: skip
    kit.restore_request(
        namespace, "by-mapping", backupRunRef=run, existingResourcePolicy="Overwrite",
        namespaceMapping={str(namespace): str(other)},
    )  # fmt: skip
    for name, field in (("by-target", "spec.target.namespace"),
                        ("by-mapping", "spec.namespaceMapping")):  # fmt: skip
        failed = _failed(kit, namespace, name)
        assert failed["reason"] == "CrossNamespaceDenied", failed
        message = failed["message"]
        assert field in message, message
        assert f"into namespace {other}" in message, message
        assert f"ConfigMap {GRANT}" in message, message
        assert f"--from-literal=fromNamespaces={namespace}" in message, message
        assert f"-n {other}" in message, message
    # kubectl describe shows it as a Warning Event of the request
    events = json.loads(namespace.kubectl("get", "events", "-o", "json").stdout)["items"]
    denied = [e for e in events if e["reason"] == "CrossNamespaceDenied"]
    assert {e["involvedObject"]["name"] for e in denied} == {"by-target", "by-mapping"}
    assert all(e["type"] == "Warning" for e in denied)
    assert _jobs(other) == []
    assert kit.read_tree(theirs_dir) == theirs

    # a namespace that does not exist says so
    kit.restore_request(
        namespace, "nowhere", backupRunRef=run,
        namespaceMapping={str(namespace): f"{namespace}-absent"},
    )  # fmt: skip
    failed = _failed(kit, namespace, "nowhere")
    assert failed["reason"] == "NamespaceNotFound", failed
    assert f"namespace {namespace}-absent, which does not exist" in failed["message"]

    # a grant for another namespace does not count (nor does one naming A as a prefix)
    _grant(other, f"someone-else, {namespace}x")
    kit.restore_request(
        namespace, "wrong-grant", backupRunRef=run, existingResourcePolicy="Overwrite",
        namespaceMapping={str(namespace): str(other)},
    )  # fmt: skip
    failed = _failed(kit, namespace, "wrong-grant")
    assert failed["reason"] == "CrossNamespaceDenied", failed
    assert f"does not list {namespace}" in failed["message"]
    assert _jobs(other) == []
    assert kit.read_tree(theirs_dir) == theirs

    # B's owners allow A: the same restore now overwrites B's claim with A's bytes
    _grant(other, f"someone-else\n{namespace}")
    kit.restore_request(
        namespace, "granted", backupRunRef=run, existingResourcePolicy="Overwrite",
        namespaceMapping={str(namespace): str(other)},
    )  # fmt: skip
    kit.kubectl_wait(namespace, "restorerequest/granted", "Complete", timeout=180)
    rr = kit.get(namespace, "restorerequest", "granted")
    assert rr["status"]["phase"] == "Succeeded", rr["status"]
    assert rr["status"]["restored"][0]["target"] == f"persistentvolumeclaim/{other}/data"
    assert kit.read_tree(theirs_dir) == original

    # a grant removed after the plan (here: the moment the claim in B is created) stops
    # the Job before it exists
    kube = runtime_module.runtime().kube
    create_pvc = kube.create_pvc

    def revoke_then_create(ns: str, manifest: dict[str, Any]) -> bool:
        if ns == str(other) and manifest["metadata"]["name"] == "late":
            other.kubectl("delete", "configmap", GRANT)
        return create_pvc(ns, manifest)

    kube.create_pvc = revoke_then_create  # type: ignore[method-assign]
    kit.restore_request(
        namespace, "revoked", backupRunRef=run,
        target={"claimName": "late", "namespace": str(other)},
    )  # fmt: skip
    kit.kubectl_wait(namespace, "restorerequest/revoked", "Failed")
    rr = kit.get(namespace, "restorerequest", "revoked")
    (item,) = rr["status"]["restored"]
    assert item["phase"] == "Failed"
    assert item["error"]["reason"] == "CrossNamespaceDenied", item
    assert f"namespace {other} has no ConfigMap {GRANT}" in item["error"]["message"]
    assert not [j for j in _jobs(other) if j.startswith("revoked")]
