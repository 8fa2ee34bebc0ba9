"""Job-side hooks end to end on the test ground, through the custom resources: the policy of
docs/hooks.md, BackupRuns whose Jobs run the real ``safehold backup --pre-hook/--post-hook``,
and the results a user reads in the BackupRun status."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

from testground.kube import Namespace
from testground.objectstores import RunningStore


def _claim(namespace: Namespace, name: str) -> Path:
    namespace.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "16Mi"}},
            },
        }
    )

    def bound() -> str | None:
        pvc = namespace.get("pvc", name) or {}
        return pvc["spec"]["volumeName"] if pvc.get("status", {}).get("phase") == "Bound" else None

    volume = namespace.cluster.wait_for(bound, timeout=60, what=f"claim {name} to be bound")
    pv = namespace.cluster.get("pv", volume)
    assert pv is not None
    return Path(pv["spec"]["hostPath"]["path"])


def _location(namespace: Namespace, store: RunningStore, name: str, password: str) -> None:
    bucket = f"b-{secrets.token_hex(4)}"
    store.make_bucket(bucket)
    options = dict(store.options)
    endpoint = options.pop("endpoint")
    region = options.pop("region", None)
    namespace.apply(
        [
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-storage"},
             "stringData": options},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-password"},
             "stringData": {"password": password}},
            {
                "apiVersion": "safehold.io/v1alpha1",
                "kind": "BackupLocation",
                "metadata": {"name": name},
                "spec": {
                    "provider": store.provider, "bucket": bucket, "prefix": "repo",
                    "endpoint": endpoint, **({"region": region} if region else {}),
                    "credentialsSecretRef": {"name": f"{name}-storage"},
                    "repositoryPasswordSecretRef": {"name": f"{name}-password"},
                },
            },
        ]
    )  # fmt: skip


def _wait(namespace: Namespace, what: str, condition: str, timeout: int = 180) -> None:
    namespace.kubectl(
        "wait", f"--for=condition={condition}", what, f"--timeout={timeout}s", timeout=timeout + 10
    )


def _get(namespace: Namespace, kind: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] | None = namespace.get(kind, name)
    assert obj is not None, f"{kind}/{name} does not exist"
    return obj


def _sources(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in run["status"]["sources"]}


def test_job_side_hooks_through_the_custom_resources(
    namespace: Namespace, s3_store: RunningStore, operator: Any, app: Any, guide: Any
) -> None:
    operator()
    policy, run, _exec_policy = guide()
    app.directory = _claim(namespace, "orders-data")
    (app.directory / "orders.db").write_bytes(b"rows" * 1000)
    for name in ("failing", "lenient", "slow"):
        (_claim(namespace, name) / "data.txt").write_text(name)
    _location(namespace, s3_store, "primary", "hook test password")
    _wait(namespace, "backuplocation/primary", "Available", timeout=120)

    # the guide's policy, its URL pointing at the stand-in application, plus one source
    # per failure case
    volumes = policy["spec"]["sources"]["volumes"]
    hooks = volumes[0]["hooks"]
    hooks["preBackup"] = [c.replace("http://orders-api:8080", app.url) for c in hooks["preBackup"]]
    hooks["postBackup"] = [
        c.replace("http://orders-api:8080", app.url) for c in hooks["postBackup"]
    ]
    done = hooks["postBackup"][0]
    volumes += [
        {"claimName": "failing", "hooks": {
            "preBackup": ["echo database is down >&2; exit 7"], "postBackup": [done]}},
        {"claimName": "lenient", "hooks": {"preBackup": ["exit 3"], "onError": "Continue"}},
        {"claimName": "slow", "hooks": {"preBackup": ["sleep 60"], "timeoutSeconds": 2}},
    ]  # fmt: skip
    policy["spec"]["job"] = {"backoffLimit": 0}  # each hook runs once: counts are exact
    namespace.apply(policy)
    namespace.apply(run)
    _wait(namespace, "backuprun/orders-now", "Complete", timeout=120)
    result = _get(namespace, "backuprun", "orders-now")
    assert result["status"]["phase"] == "PartiallyFailed", result["status"]
    sources = _sources(result)

    # the pre hook's checkpoint is in the snapshot, and the post hook ran after the backup
    orders = sources["orders-data"]
    assert orders["phase"] == "Succeeded", orders
    assert "error" not in orders
    assert [(h["name"], h["phase"], h["exitCode"], h["succeeded"]) for h in orders["hooks"]] == [
        ("pre-0", "pre", 0, True),
        ("post-0", "post", 0, True),
    ]
    assert app.calls.count("/checkpoint") == 1
    namespace.apply(
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "RestoreRequest",
            "metadata": {"name": "back"},
            "spec": {
                "backupRunRef": {"name": "orders-now"},
                "sources": ["orders-data"],
                "target": {"claimName": "restored"},
            },
        }
    )
    _wait(namespace, "restorerequest/back", "Complete")
    restored = namespace.get("pvc", "restored")
    assert restored is not None
    pv = namespace.cluster.get("pv", restored["spec"]["volumeName"])
    assert pv is not None
    back = Path(pv["spec"]["hostPath"]["path"])
    assert (back / "checkpoint.txt").read_text() == "checkpoint 1\n"
    assert (back / "orders.db").read_bytes() == b"rows" * 1000

    # a failing Fail pre hook fails the source with the reason, no snapshot; post still ran
    failing = sources["failing"]
    assert failing["phase"] == "Failed"
    assert "snapshotId" not in failing
    assert failing["error"]["reason"] == "HookFailed"
    assert failing["error"]["message"] == (
        "pre hook pre-0 of the backup Job failed (exit code 7); its output is in "
        "status.sources[].hooks"
    )
    assert [h["succeeded"] for h in failing["hooks"]] == [False, True]
    assert "database is down" in failing["hooks"][0]["output"]  # in status, not in Events
    assert app.calls.count("/backup-done") == 2  # orders-data's and failing's post hooks

    # Continue: the backup proceeds, the failure is recorded
    lenient = sources["lenient"]
    assert lenient["phase"] == "Succeeded"
    assert len(lenient["snapshotId"]) == 64
    assert lenient["warnings"] == ["pre hook pre-0 failed (exit code 3), continued"]
    assert lenient["hooks"][0]["exitCode"] == 3

    # a hook past its timeout is killed and reported
    slow = sources["slow"]
    assert slow["phase"] == "Failed"
    assert "snapshotId" not in slow
    assert slow["error"]["message"].startswith(
        "pre hook pre-0 of the backup Job failed (timed out)"
    )
    hook = slow["hooks"][0]
    assert hook["timedOut"] is True
    assert "exitCode" not in hook
    assert 2 <= hook["durationSeconds"] < 10
    assert "killed after the timeout of 2 s" in hook["output"]


def test_post_hook_runs_after_a_failed_backup(
    namespace: Namespace, s3_store: RunningStore, operator: Any, app: Any, guide: Any
) -> None:
    operator()
    policy, run = guide()[:2]
    app.directory = _claim(namespace, "orders-data")
    (app.directory / "orders.db").write_bytes(b"rows")
    _location(namespace, s3_store, "primary", "the right password")
    _wait(namespace, "backuplocation/primary", "Available", timeout=120)
    hooks = policy["spec"]["sources"]["volumes"][0]["hooks"]
    for key in ("preBackup", "postBackup"):
        hooks[key] = [c.replace("http://orders-api:8080", app.url) for c in hooks[key]]
    policy["spec"]["job"] = {"backoffLimit": 0}  # one attempt: each hook runs once
    namespace.apply(policy)
    # the repository password changes under the location: the backup itself fails
    namespace.apply(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "primary-password"},
         "stringData": {"password": "a wrong password"}}
    )  # fmt: skip
    time.sleep(1)
    namespace.apply(run)
    _wait(namespace, "backuprun/orders-now", "Complete")
    orders = _sources(_get(namespace, "backuprun", "orders-now"))["orders-data"]
    assert orders["phase"] == "Failed", orders
    assert "snapshotId" not in orders
    assert orders["error"]["reason"] != "HookFailed"
    assert "password" in orders["error"]["message"]
    assert [(h["phase"], h["succeeded"]) for h in orders["hooks"]] == [
        ("pre", True),
        ("post", True),
    ]
    assert app.calls == ["/checkpoint", "/backup-done"]


def test_job_side_hooks_have_no_password_or_credentials_in_reach(
    namespace: Namespace, s3_store: RunningStore, operator: Any, app: Any, guide: Any
) -> None:
    """Issue #15: a hook of the backup Job that tries to read the repository password and
    the storage credentials finds neither (it runs in the Job's hooks container, which has
    no Secret volume), while the backup beside it still succeeds and restores."""
    operator()
    policy, run = guide()[:2]
    app.directory = _claim(namespace, "orders-data")
    (app.directory / "orders.db").write_bytes(b"rows" * 100)
    password = "a password the hooks must not see"
    _location(namespace, s3_store, "primary", password)
    _wait(namespace, "backuplocation/primary", "Available", timeout=120)
    steal = (
        "cat /etc/safehold/password/password /etc/safehold/storage/*; echo read=$?; "
        "env | grep -c SAFEHOLD_; ls /data/volume"
    )
    volume = policy["spec"]["sources"]["volumes"][0]
    volume["hooks"] = {"preBackup": [steal], "postBackup": ["echo post ran"], "onError": "Fail"}
    policy["spec"]["job"] = {"backoffLimit": 0}
    namespace.apply(policy)
    namespace.apply(run)
    _wait(namespace, "backuprun/orders-now", "Complete")
    orders = _sources(_get(namespace, "backuprun", "orders-now"))["orders-data"]
    assert orders["phase"] == "Succeeded", orders
    pre, post = orders["hooks"]
    assert (pre["name"], pre["exitCode"], pre["succeeded"]) == ("pre-0", 0, True)
    out = pre["output"]
    assert "/etc/safehold/password/password: No such file or directory" in out, out
    assert "/etc/safehold/storage/*" in out  # (the glob matched no file)
    assert out.count("No such file or directory") == 2, out
    assert "read=1" in out
    assert "***" not in out  # nothing was read that scrubbing had to hide
    assert password not in out
    assert not [v for v in s3_store.options.values() if len(v) >= 4 and v in out]
    assert "\n0\n" in out  # no SAFEHOLD_ variable either
    assert "orders.db" in out  # the source, read-only, is there
    assert (post["phase"], post["output"]) == ("post", "post ran\n")

    # the Job: the hooks container has no Secret volume and no repository mount, and the
    # same locked-down security context as the backup container
    job = _get(namespace, "job", orders["job"])
    spec = job["spec"]["template"]["spec"]
    backup_c, hooks_c = spec["containers"]
    assert (backup_c["name"], hooks_c["name"]) == ("safehold", "hooks")
    secret_volumes = {v["name"] for v in spec["volumes"] if "secret" in v}
    assert secret_volumes == {"storage-options", "repository-password"}
    assert not {m["name"] for m in hooks_c["volumeMounts"]} & secret_volumes
    assert {m["mountPath"]: m.get("readOnly", False) for m in hooks_c["volumeMounts"]} == {
        "/tmp": False, "/run/safehold/hooks": False, "/data/volume": True,
    }  # fmt: skip
    assert hooks_c["securityContext"] == backup_c["securityContext"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["shareProcessNamespace"] is False

    # the snapshot restores
    namespace.apply(
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "RestoreRequest",
            "metadata": {"name": "back"},
            "spec": {
                "backupRunRef": {"name": "orders-now"},
                "sources": ["orders-data"],
                "target": {"claimName": "restored"},
            },
        }
    )
    _wait(namespace, "restorerequest/back", "Complete")
    restored = namespace.get("pvc", "restored")
    assert restored is not None
    pv = namespace.cluster.get("pv", restored["spec"]["volumeName"])
    assert pv is not None
    assert (Path(pv["spec"]["hostPath"]["path"]) / "orders.db").read_bytes() == b"rows" * 100
