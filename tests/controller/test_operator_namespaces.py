"""A restore into another namespace, and objects the operator leaves as people wrote them."""

from __future__ import annotations

from typing import Any

from testground.kube import Namespace
from testground.objectstores import RunningStore


def test_restore_into_another_namespace(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    operator()
    original = kit.write_data(kit.make_claim(namespace, "data"), seed=5, files=6)
    bucket = kit.store_location(namespace, s3_store)
    kit.policy(namespace, "pol", "loc", ["data"])
    kit.backup_run(namespace, "run", "pol")
    other = namespace.cluster.create_namespace(f"{namespace}-copy")
    try:
        # the Job runs where the claim is and mounts the location's Secrets there by name
        secrets = namespace.kubectl("get", "secret", "loc-storage", "loc-password", "-o", "yaml")
        text = secrets.stdout.replace(f"namespace: {namespace}\n", f"namespace: {other}\n")
        other.kubectl("apply", "-f", "-", input=text)
        # the other namespace's owners allow restores from this one (docs/security.md)
        other.kubectl(
            "create", "configmap", "safehold-restore-grant",
            f"--from-literal=fromNamespaces={namespace}",
        )  # fmt: skip
        kit.kubectl_wait(namespace, "backuprun/run", "Complete")
        kit.restore_request(namespace, "copy", backupRunRef={"name": "run"},
                            namespaceMapping={str(namespace): str(other)})  # fmt: skip
        kit.kubectl_wait(namespace, "restorerequest/copy", "Complete", timeout=180)
        rr = kit.get(namespace, "restorerequest", "copy")
        assert rr["status"]["phase"] == "Succeeded", rr["status"]
        assert rr["status"]["restored"][0]["target"] == f"persistentvolumeclaim/{other}/data"
        assert kit.read_tree(kit.claim_dir(other, "data")) == original
    finally:
        namespace.cluster.delete_namespace(other)

    # the operator wrote only status: no finalizers, no annotations of its own, spec intact
    for kind, name in [("backuplocation", "loc"), ("backuppolicy", "pol"),
                       ("backuprun", "run"), ("restorerequest", "copy")]:  # fmt: skip
        obj = kit.get(namespace, kind, name)
        meta = obj["metadata"]
        assert not meta.get("finalizers"), (kind, meta)
        own = [a for a in meta.get("annotations") or {} if "kubectl.kubernetes.io" not in a]
        assert own == [], (kind, meta["annotations"])
        assert meta["generation"] == 1, (kind, meta)
    assert kit.get(namespace, "backuplocation", "loc")["spec"]["bucket"] == bucket
