"""A policy's ``replicateTo`` on the test ground: after each successful run, a replication Job
(the real ``safehold replicate``) copies the policy's snapshots from the primary on S3 to a
recovery site on another provider, the site's own retention runs there, and the run and the
policy report it; a site that cannot be written fails the replication, never the run."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from safehold.controller import metrics
from safehold.repo import Repository
from safehold.storage import open_storage
from testground.kube import Namespace
from testground.objectstores import RunningStore

PASSWORD = "replication test password"


def _repository(store: RunningStore, bucket: str) -> Repository:
    return Repository.open(open_storage(store.url(bucket, "repo"), dict(store.options)), PASSWORD)


def _snapshot_ids(store: RunningStore, bucket: str) -> list[str]:
    snaps = sorted(_repository(store, bucket).snapshots(), key=lambda s: s.datetime)
    return [s.id for s in snaps]


def _run_snapshot(namespace: Namespace, kit: Any, run: str) -> str:
    obj = kit.get(namespace, "backuprun", run)
    assert obj["status"]["phase"] == "Succeeded", obj["status"]
    return str(obj["status"]["sources"][0]["snapshotId"])


def _site_state(namespace: Namespace, kit: Any, policy: str, site: str) -> dict[str, Any]:
    status = kit.get(namespace, "backuppolicy", policy).get("status") or {}
    return next((s for s in status.get("replication") or [] if s["location"] == site), {})


def _replicated(namespace: Namespace, kit: Any, policy: str, site: str, run: str) -> dict[str, Any]:
    """Wait until the site's replication of ``run`` (and the site's retention) ended."""

    def done() -> dict[str, Any] | None:
        state = _site_state(namespace, kit, policy, site)
        if state.get("run") != run or state.get("phase") not in ("Succeeded", "Failed"):
            return None
        if state.get("phase") == "Failed" and state.get("nextAttemptTime") is None:
            return state
        if (state.get("retention") or {}).get("result") == "Running":
            return None
        return state

    found: dict[str, Any] = namespace.cluster.wait_for(
        done, timeout=240, what=f"the replication of {run} to {site}"
    )
    return found


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    conds = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == type_), {})


def _events(namespace: Namespace, reason: str) -> list[dict[str, Any]]:
    items = json.loads(namespace.kubectl("get", "events", "-o", "json").stdout)["items"]
    return [e for e in items if e.get("reason") == reason]


def _safehold(store: RunningStore, bucket: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI against a location, as a person recovering by hand would run it."""
    options = [a for k, v in store.options.items() for a in ("-o", f"{k}={v}")]
    return subprocess.run(
        [sys.executable, "-m", "safehold", *args, "--repo", store.url(bucket, "repo"), *options],
        env={**os.environ, "SAFEHOLD_PASSWORD": PASSWORD},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_each_run_is_copied_to_the_site_whose_own_retention_keeps_less(
    namespace: Namespace,
    s3_store: RunningStore,
    gcs_store: RunningStore,
    operator: Any,
    kit: Any,
    tmp_path: Path,
) -> None:
    operator()
    data = kit.make_claim(namespace, "data")
    primary = kit.store_location(namespace, s3_store, "primary", password=PASSWORD)
    site = kit.store_location(namespace, gcs_store, "site", password=PASSWORD, role="recovery-site")
    # A site's check never creates a repository: the first replication does.
    namespace.wait_condition("backuplocation", "site", "Available", timeout=120)
    checked = _condition(kit.get(namespace, "backuplocation", "site"), "Available")
    assert checked["reason"] == "AwaitingReplication", checked
    assert not list(gcs_store_objects(gcs_store, site))

    kit.policy(
        namespace,
        "pol",
        "primary",
        ["data"],
        replicateTo=[{"name": "site", "retention": {"keepLast": 1}}],
    )
    runs = []
    for i in (1, 2):
        files = kit.write_data(data, seed=40 + i, files=4)
        kit.backup_run(namespace, f"run-{i}", "pol")
        kit.kubectl_wait(namespace, f"backuprun/run-{i}", "Complete", timeout=180)
        runs.append(_run_snapshot(namespace, kit, f"run-{i}"))
        # each run's own replication, before the next run starts
        state = _replicated(namespace, kit, "pol", "site", f"run-{i}")
        assert state["phase"] == "Succeeded", state

    assert state["bytesTransferred"] > 0
    assert state["snapshotsCopied"] == 1
    assert state["attempts"] == 1
    assert state["retention"]["result"] == "Succeeded", state["retention"]
    assert state["newestSnapshotTime"]
    # The primary keeps both snapshots (no retention there); the site only its newest.
    assert _snapshot_ids(s3_store, primary) == runs
    assert _snapshot_ids(gcs_store, site) == runs[-1:]
    # The site is a repository on its own: the CLI restores the newest run from it alone.
    restored = tmp_path / "restored"
    done = _safehold(gcs_store, site, "restore", runs[-1], str(restored))
    assert done.returncode == 0, done.stderr
    assert kit.read_tree(restored / "volume") == kit.read_tree(data)
    assert all(kit.read_tree(data)[name] == content for name, content in files.items())

    # The run says so, in status and in a condition kubectl can wait for.
    run = kit.get(namespace, "backuprun", "run-2")
    assert run["status"]["phase"] == "Succeeded"
    [entry] = run["status"]["replication"]
    assert entry["location"] == "site"
    assert entry["phase"] == "Succeeded"
    assert entry["bytesTransferred"] == state["bytesTransferred"]
    assert entry["completionTime"]
    kit.kubectl_wait(namespace, "backuprun/run-2", "Replicated", timeout=30)
    policy = kit.get(namespace, "backuppolicy", "pol")
    assert _condition(policy, "Replicated")["status"] == "True"
    assert _condition(policy, "Ready")["status"] == "True"
    assert _events(namespace, "Replicated")
    assert _events(namespace, "SiteRetentionApplied")

    # What a new cluster sees on applying only a BackupLocation of the site: its snapshots
    # per source, without any BackupRun.
    kit.store_location(
        namespace, gcs_store, "site-view", bucket=site, make_bucket=False, password=PASSWORD,
        role="recovery-site",
    )  # fmt: skip
    namespace.wait_condition("backuplocation", "site-view", "Available", timeout=120)
    view = kit.get(namespace, "backuplocation", "site-view")["status"]
    assert (
        view["repositoryId"]
        == kit.get(namespace, "backuplocation", "primary")["status"]["repositoryId"]
    )  # a site is a copy of the primary, not a repository of its own
    assert view["snapshotCount"] == 1
    [source] = view["sources"]
    assert source["source"] == f"{namespace}/pol/data"
    assert source["snapshots"] == 1
    assert source["newestSnapshot"] == runs[-1]
    assert source["newestTime"]

    # The Job: both locations, each with its own Secrets as files, no API rights.
    job = namespace.get("job", state["job"])
    assert job is not None
    pod = job["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[:3] == ["replicate", "--source-prefix", f"{namespace}/pol/"]
    assert args[args.index("--to") + 1] == gcs_store.url(site, "repo")
    assert pod["automountServiceAccountToken"] is False
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "replicate"
    assert PASSWORD not in json.dumps(job)
    lag = metrics.REGISTRY.get_sample_value(
        "safehold_replication_lag_seconds",
        {"namespace": str(namespace), "policy": "pol", "location": "site"},
    )
    assert lag == 0
    copied = metrics.REGISTRY.get_sample_value(
        "safehold_replications_total",
        {"namespace": str(namespace), "policy": "pol", "location": "site", "result": "Succeeded"},
    )
    assert copied == 2


def gcs_store_objects(store: RunningStore, bucket: str) -> list[str]:
    return [info.name for info in open_storage(store.url(bucket), dict(store.options)).list("")]


def test_a_site_that_cannot_be_written_fails_the_replication_never_the_run(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    operator()
    data = kit.make_claim(namespace, "data")
    kit.write_data(data, seed=51, files=2)
    kit.store_location(namespace, s3_store, "primary", password=PASSWORD)
    # Another password than the primary's: the new site gets the primary's keys, which
    # the site's own password cannot open.
    kit.store_location(
        namespace, s3_store, "site", password="another password", role="recovery-site"
    )
    kit.store_location(namespace, s3_store, "other-primary", password=PASSWORD)
    # A bucket that holds another repository is never overwritten. The repository is made
    # before its BackupLocation, so that the location's check never lists it half made
    # (keys written, config not yet) and reports "no repository" instead.
    taken = f"b-{secrets.token_hex(4)}"
    s3_store.make_bucket(taken)
    init = _safehold(s3_store, taken, "repo", "init", "-q")
    assert init.returncode == 0, init.stderr
    kit.store_location(
        namespace,
        s3_store,
        "taken",
        bucket=taken,
        make_bucket=False,
        password=PASSWORD,
        role="recovery-site",
    )
    # A site whose credentials Secret was never created.
    namespace.apply(
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "BackupLocation",
            "metadata": {"name": "no-creds"},
            "spec": {
                "provider": "s3",
                "bucket": "no-creds",
                "endpoint": s3_store.endpoint,
                "role": "recovery-site",
                "credentialsSecretRef": {"name": "missing"},
                "repositoryPasswordSecretRef": {"name": "site-password"},
            },
        }
    )
    sites = ["site", "other-primary", "nowhere", "taken", "no-creds"]
    kit.policy(namespace, "pol", "primary", ["data"], replicateTo=[{"name": n} for n in sites])
    kit.backup_run(namespace, "run-1", "pol")
    kit.kubectl_wait(namespace, "backuprun/run-1", "Complete", timeout=180)

    state = namespace.cluster.wait_for(
        lambda: (
            s
            if (s := _site_state(namespace, kit, "pol", "site")).get("phase") == "Failed"
            else None
        ),
        timeout=180,
        what="the replication to the site to fail",
    )
    assert state["reason"] == "WrongPassword", state
    assert "replication to site failed" in state["message"]
    assert "same password" in state["message"]
    assert state["nextAttemptTime"]  # tried again after a back-off
    assert "another password" not in json.dumps(state)
    wrong_role = _site_state(namespace, kit, "pol", "other-primary")
    assert wrong_role["reason"] == "SiteNotRecoverySite"
    assert "must have role recovery-site" in wrong_role["message"]
    missing = _site_state(namespace, kit, "pol", "nowhere")
    assert missing["reason"] == "SiteNotFound"
    other_repository = namespace.cluster.wait_for(
        lambda: (
            s
            if (s := _site_state(namespace, kit, "pol", "taken")).get("phase") == "Failed"
            else None
        ),
        timeout=120,
        what="the replication to a bucket of another repository to fail",
    )
    assert "another repository" in other_repository["message"], other_repository
    no_creds = _site_state(namespace, kit, "pol", "no-creds")
    assert no_creds["phase"] in ("Pending", "Failed"), no_creds
    assert "no-creds" in no_creds["message"]

    run = kit.get(namespace, "backuprun", "run-1")
    assert run["status"]["phase"] == "Succeeded"  # the backup itself is fine
    replicated = _condition(run, "Replicated")
    assert replicated["status"] == "False"
    assert replicated["reason"] == "ReplicationFailed"
    assert "site: WrongPassword" in replicated["message"]
    assert "nowhere: SiteNotFound" in replicated["message"]
    policy = kit.get(namespace, "backuppolicy", "pol")
    assert _condition(policy, "Replicated")["status"] == "False"
    assert _condition(policy, "Ready")["status"] == "True"  # backups go on
    assert _events(namespace, "ReplicationFailed")


def test_backups_go_only_to_a_primary(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    operator()
    kit.make_claim(namespace, "data")
    kit.store_location(namespace, s3_store, "site", password=PASSWORD, role="recovery-site")
    kit.policy(namespace, "pol", "site", ["data"])
    namespace.cluster.wait_for(
        lambda: (
            _condition(kit.get(namespace, "backuppolicy", "pol"), "Ready").get("reason")
            == "LocationNotPrimary"
        ),
        timeout=60,
        what="the policy to be refused",
    )
    ready = _condition(kit.get(namespace, "backuppolicy", "pol"), "Ready")
    assert ready["status"] == "False"
    assert "has role recovery-site" in ready["message"]
    assert "change its role to primary" in ready["message"]
    kit.backup_run(namespace, "run-1", "pol")
    kit.kubectl_wait(namespace, "backuprun/run-1", "Complete", timeout=60)
    run = kit.get(namespace, "backuprun", "run-1")
    assert run["status"]["phase"] == "Failed"
    assert _condition(run, "Failed")["reason"] == "LocationNotPrimary"


def _lock_bucket(store: RunningStore, name: str) -> str:
    store.s3_client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def _retention_of_a_pack(store: RunningStore, bucket: str) -> dict[str, Any]:
    client = store.s3_client()
    keys = [
        o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="repo/data/")["Contents"]
    ]
    assert keys
    found: dict[str, Any] = client.get_object_retention(Bucket=bucket, Key=keys[0])["Retention"]
    return found


def test_immutability_days_lock_every_object_at_the_primary_and_at_the_site(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    operator()
    data = kit.make_claim(namespace, "data")
    kit.write_data(data, seed=61, files=2)
    primary = _lock_bucket(s3_store, f"worm-p-{namespace}"[:60])
    site = _lock_bucket(s3_store, f"worm-s-{namespace}"[:60])
    kit.store_location(
        namespace, s3_store, "primary", bucket=primary, make_bucket=False, password=PASSWORD,
        immutabilityDays=2,
    )  # fmt: skip
    kit.store_location(
        namespace, s3_store, "site", bucket=site, make_bucket=False, password=PASSWORD,
        role="recovery-site", immutabilityDays=3,
    )  # fmt: skip
    namespace.wait_condition("backuplocation", "primary", "Available", timeout=120)
    location = kit.get(namespace, "backuplocation", "primary")
    assert location["status"]["immutabilityDays"] == 2
    assert "locked for 2 day(s)" in _condition(location, "Available")["message"]

    kit.policy(namespace, "pol", "primary", ["data"], replicateTo=[{"name": "site"}])
    kit.backup_run(namespace, "run-1", "pol")
    kit.kubectl_wait(namespace, "backuprun/run-1", "Complete", timeout=180)
    state = _replicated(namespace, kit, "pol", "site", "run-1")
    assert state["phase"] == "Succeeded", state

    at_primary = _retention_of_a_pack(s3_store, primary)
    assert at_primary["Mode"] == "GOVERNANCE"
    at_site = _retention_of_a_pack(s3_store, site)
    assert at_site["Mode"] == "GOVERNANCE"
    # the site's own days, not the primary's
    assert (at_site["RetainUntilDate"] - at_primary["RetainUntilDate"]).days in (0, 1)
    assert at_site["RetainUntilDate"] > at_primary["RetainUntilDate"]


def test_immutability_asked_of_a_bucket_that_cannot_lock_is_refused_with_how_to_fix_it(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    operator()
    kit.store_location(namespace, s3_store, "plain", password=PASSWORD, immutabilityDays=7)
    namespace.cluster.wait_for(
        lambda: (
            _condition(kit.get(namespace, "backuplocation", "plain"), "Available").get("status")
            == "False"
        ),
        timeout=120,
        what="the location check to fail",
    )
    available = _condition(kit.get(namespace, "backuplocation", "plain"), "Available")
    assert "object lock" in available["message"].lower()
    assert "enable" in available["message"].lower()


def test_a_run_started_during_a_replication_backs_up_at_once_and_is_copied_after_it(
    namespace: Namespace,
    s3_store: RunningStore,
    gcs_store: RunningStore,
    operator: Any,
    kit: Any,
) -> None:
    """Replication holds shared locks: a run that starts while it copies (as a schedule
    slot would) backs up at once; the primary's retention (exclusive) waits for the copy,
    and the new run's own replication follows."""
    operator(poll_interval=1.0)
    data = kit.make_claim(namespace, "data", size="1Gi")
    kit.write_data(data, seed=71, files=10, size=16 * 1024 * 1024)
    kit.store_location(namespace, s3_store, "primary", password=PASSWORD)
    # 160 MiB at 8 MiB/s: a copy of 20 s, so that run-2 surely starts within it (times
    # are in whole seconds; an unlimited copy of seconds could end in run-2's second)
    site = kit.store_location(
        namespace,
        gcs_store,
        "site",
        password=PASSWORD,
        role="recovery-site",
        bandwidth={"uploadKiBps": 8192},
    )
    kit.policy(
        namespace,
        "pol",
        "primary",
        ["data"],
        retention={"keepLast": 5},
        replicateTo=[{"name": "site"}],
    )
    kit.backup_run(namespace, "run-1", "pol")
    kit.kubectl_wait(namespace, "backuprun/run-1", "Complete", timeout=180)
    copying = namespace.cluster.wait_for(
        lambda: (
            s
            if (s := _site_state(namespace, kit, "pol", "site")).get("phase") == "Running"
            and s.get("run") == "run-1"
            else None
        ),
        timeout=120,
        interval=0.2,
        what="the replication of run-1 to start",
    )
    kit.write_data(data, seed=72, files=2)
    kit.backup_run(namespace, "run-2", "pol")
    kit.kubectl_wait(namespace, "backuprun/run-2", "Complete", timeout=180)
    run2 = kit.get(namespace, "backuprun", "run-2")
    assert run2["status"]["phase"] == "Succeeded", run2["status"]

    state = _replicated(namespace, kit, "pol", "site", "run-2")
    assert state["phase"] == "Succeeded", state
    first = namespace.get("job", copying["job"])
    assert first is not None
    copied_at = first["status"]["completionTime"]
    # the backup ran while the copy did (shared locks), it did not wait for it
    assert run2["status"]["startTime"] < copied_at
    # the retention after run-2 (exclusive lock) started only after the copy had ended
    retention = kit.get(namespace, "backuppolicy", "pol")["status"]["lastRetention"]
    assert retention["run"] == "run-2"
    assert retention["result"] == "Succeeded", retention
    assert retention["startTime"] >= copied_at
    assert len(_snapshot_ids(gcs_store, site)) == 2


def test_a_wiped_primary_is_reported_and_never_silently_re_created(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    operator(poll_interval=1.0)
    bucket = kit.store_location(
        namespace, s3_store, "primary", password=PASSWORD, validationInterval="5s"
    )
    namespace.wait_condition("backuplocation", "primary", "Available", timeout=120)
    first = kit.get(namespace, "backuplocation", "primary")["status"]["repositoryId"]
    # Someone (or something) empties the bucket.
    client = s3_store.s3_client()
    for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        client.delete_object(Bucket=bucket, Key=obj["Key"])

    def alarm() -> dict[str, Any] | None:
        cond = _condition(kit.get(namespace, "backuplocation", "primary"), "Available")
        return cond if cond.get("status") == "False" else None

    cond = namespace.cluster.wait_for(alarm, timeout=120, what="the wiped bucket to be found")
    assert cond["reason"] == "RepositoryNotFound", cond
    assert f"repository {first[:16]}, which this location held, is gone" in cond["message"]
    assert "fail over to a recovery site" in cond["message"]
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0  # nothing created
    # backups are held back instead of starting a new chain
    kit.make_claim(namespace, "data")
    kit.policy(namespace, "pol", "primary", ["data"])
    kit.backup_run(namespace, "run-1", "pol")
    kit.kubectl_wait(namespace, "backuprun/run-1", "Complete", timeout=60)
    run = kit.get(namespace, "backuprun", "run-1")
    assert run["status"]["phase"] == "Failed"
    assert _condition(run, "Failed")["reason"] == "LocationUnavailable"
