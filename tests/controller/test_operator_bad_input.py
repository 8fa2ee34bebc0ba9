"""Bad input ends in a False or Failed condition whose message says what to fix."""

from __future__ import annotations

from typing import Any

from testground.kube import Namespace
from testground.objectstores import RunningStore


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == kind)


def test_bad_inputs_name_what_to_fix(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    operator()
    kit.make_claim(namespace, "data")
    # a bucket that does not exist, and a wrong secret key
    kit.store_location(namespace, s3_store, "nobucket", bucket="no-such-bucket", make_bucket=False)
    creds = {
        "AWS_ACCESS_KEY_ID": s3_store.options["access_key_id"],
        "AWS_SECRET_ACCESS_KEY": "not-the-key",
    }
    kit.store_location(namespace, s3_store, "wrongkey", credentials=creds)
    kit.store_location(namespace, s3_store, "good")
    # a policy naming a claim that does not exist, one the Python validation rejects
    kit.policy(namespace, "noclaim", "good", ["missing-claim"])
    kit.policy(namespace, "keepsnothing", "good", ["data"], retention={"keepLast": 0})
    kit.policy(namespace, "nolocation", "absent", ["data"])
    # a run of a policy that does not exist, a restore of a run that does not exist
    kit.backup_run(namespace, "orphan", "no-such-policy")
    kit.restore_request(namespace, "lost", backupRunRef={"name": "no-such-run"})

    nobucket = namespace.wait_condition("backuplocation", "nobucket", "Available", status="False",
                                        timeout=120)  # fmt: skip
    assert _condition(nobucket, "Available")["reason"] == "NotFound"
    message = _condition(nobucket, "Available")["message"]
    assert "no-such-bucket" in message
    assert "bucket" in message.lower()
    wrongkey = namespace.wait_condition("backuplocation", "wrongkey", "Available", status="False",
                                        timeout=120)  # fmt: skip
    cond = _condition(wrongkey, "Available")
    assert cond["reason"] == "PermissionDenied", cond
    assert "credentials" in cond["message"].lower() or "denied" in cond["message"].lower()
    assert "not-the-key" not in cond["message"]
    assert wrongkey["status"]["phase"] == "Unavailable"

    noclaim = namespace.wait_condition("backuppolicy", "noclaim", "Ready", status="False")
    cond = _condition(noclaim, "Ready")
    assert cond["reason"] == "ClaimNotFound"
    assert "spec.sources.volumes[0].claimName" in cond["message"]
    assert "missing-claim" in cond["message"]
    bad = namespace.wait_condition("backuppolicy", "keepsnothing", "Ready", status="False")
    cond = _condition(bad, "Ready")
    assert cond["reason"] == "InvalidSpec"
    assert "spec.retention.keepLast" in cond["message"]
    noloc = namespace.wait_condition("backuppolicy", "nolocation", "Ready", status="False")
    assert "spec.location.name" in _condition(noloc, "Ready")["message"]

    kit.kubectl_wait(namespace, "backuprun/orphan", "Failed", timeout=60)
    orphan = kit.get(namespace, "backuprun", "orphan")
    assert orphan["status"]["phase"] == "Failed"
    cond = _condition(orphan, "Complete")
    assert cond["status"] == "True"
    assert cond["reason"] == "PolicyNotFound"
    assert "spec.policyRef.name" in cond["message"]
    assert "no-such-policy" in cond["message"]

    kit.kubectl_wait(namespace, "restorerequest/lost", "Failed", timeout=60)
    lost = kit.get(namespace, "restorerequest", "lost")
    cond = _condition(lost, "Failed")
    assert cond["reason"] == "BackupRunNotFound"
    assert "spec.backupRunRef.name" in cond["message"]
    assert "no-such-run" in cond["message"]

    # a run against an unavailable location fails with the location's own message
    kit.policy(namespace, "tonowhere", "nobucket", ["data"])
    kit.backup_run(namespace, "doomed", "tonowhere")
    kit.kubectl_wait(namespace, "backuprun/doomed", "Failed", timeout=60)
    doomed = _condition(kit.get(namespace, "backuprun", "doomed"), "Failed")
    assert doomed["reason"] == "LocationUnavailable"
    assert "no-such-bucket" in doomed["message"]

    # every failure was also announced as a Warning Event
    events = namespace.kubectl("get", "events", "-o", "json").stdout
    for reason in ("PolicyNotFound", "BackupRunNotFound", "ClaimNotFound", "InvalidSpec"):
        assert f'"reason": "{reason}"' in events


def test_a_job_whose_pods_the_apiserver_refuses_says_why_at_once(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    """A PriorityClass that does not exist (or a ResourceQuota, a LimitRange, a PodSecurity
    level the pod breaks) lets the Job be created but none of its pods: the run says so
    with the apiserver's words while it waits, not six hours later as a deadline."""
    operator()
    kit.make_claim(namespace, "data")
    kit.store_location(namespace, s3_store, "good")
    kit.policy(namespace, "nopriority", "good", ["data"],
               job={"priorityClassName": "no-such-class"})  # fmt: skip
    kit.backup_run(namespace, "stuck", "nopriority")

    def refused() -> dict[str, Any] | None:
        run = kit.get(namespace, "backuprun", "stuck")
        for source in (run or {}).get("status", {}).get("sources") or []:
            if (source.get("error") or {}).get("reason") == "PodNotStarting":
                return dict(source)
        return None

    source = namespace.cluster.wait_for(refused, timeout=90, what="the refused pods reported")
    assert source["phase"] == "Pending"
    assert "no PriorityClass with name no-such-class" in source["error"]["message"]
    run = kit.get(namespace, "backuprun", "stuck")
    assert run["status"]["phase"] not in ("Failed", "Succeeded")


def test_a_selector_claim_named_like_another_source_is_refused_not_dropped(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    """A claim a selector matches is a source named after the claim. One named
    ``resources``, beside clusterResources, would share that source's Job and snapshot
    name, and one of the two would silently not be backed up: the policy says so, and a
    run of it fails before any Job, naming the selector and the other source."""
    operator()
    for claim in ("resources", "web"):
        kit.make_claim(namespace, claim, labels={"backup": "yes"})
    kit.store_location(namespace, s3_store)
    namespace.apply(
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "BackupPolicy",
            "metadata": {"name": "clash"},
            "spec": {
                "location": {"name": "loc"},
                "sources": {
                    "volumes": [{"selector": {"matchLabels": {"backup": "yes"}}}],
                    "clusterResources": {"serviceAccountName": "exporter"},
                },
            },
        }
    )
    clash = namespace.wait_condition("backuppolicy", "clash", "Ready", status="False")
    cond = _condition(clash, "Ready")
    assert cond["reason"] == "SourceNameConflict", cond
    assert "spec.sources.volumes[0].selector" in cond["message"]
    assert "'resources'" in cond["message"]
    assert "spec.sources.clusterResources" in cond["message"]

    namespace.wait_condition("backuplocation", "loc", "Available", timeout=120)
    kit.backup_run(namespace, "run", "clash")
    kit.kubectl_wait(namespace, "backuprun/run", "Failed", timeout=60)
    cond = _condition(kit.get(namespace, "backuprun", "run"), "Complete")
    assert cond["reason"] == "SourceNameConflict", cond
    assert "spec.sources.volumes[0].selector" in cond["message"]
    jobs = namespace.kubectl("get", "jobs", "-l", "safehold.io/run=run", "-o", "name").stdout
    assert jobs.split() == []  # refused whole: no source half backed up


def test_a_raw_block_claim_is_refused_by_name_and_the_other_volumes_back_up(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    """A claim with volumeMode Block can only reach a pod as a device: its source fails
    before any Job (which could never mount it), with the claim and what to do instead."""
    operator()
    kit.make_claim(namespace, "files")
    namespace.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "vm-disk", "labels": {"backup": "yes"}},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "volumeMode": "Block",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
    )
    kit.store_location(namespace, s3_store, "loc")
    selected = {"selector": {"matchLabels": {"backup": "yes"}}}
    kit.policy(namespace, "pol", "loc", [], sources={"volumes": [{"claimName": "files"}, selected]})
    kit.backup_run(namespace, "run-1", "pol")
    kit.kubectl_wait(namespace, "backuprun/run-1", "Complete", timeout=180)
    run = kit.get(namespace, "backuprun", "run-1")
    assert run["status"]["phase"] == "PartiallyFailed", run["status"]
    sources = {s["name"]: s for s in run["status"]["sources"]}
    assert sources["files"]["phase"] == "Succeeded"
    block = sources["vm-disk"]
    assert block["phase"] == "Failed"
    assert block["error"]["reason"] == "BlockVolumeUnsupported"
    assert "PersistentVolumeClaim 'vm-disk' is a raw block volume" in block["error"]["message"]
    assert "spec.sources.volumes[1]" in block["error"]["message"]
    assert "job" not in block
