"""The WAL archive's copies to recovery sites (controller/walsites.py), pass by pass against a
recording fake of the Kubernetes calls: when a copy may start, what its Job runs, what an
ended Job becomes in status, events and metrics, and that a failed copy waits for the next
archive instead of running again at once. The whole path, with real Jobs, servers and a
restore from the site, is tests/controller/test_operator_point_in_time.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from safehold.api import BackupLocation, BackupPolicy
from safehold.api.backuppolicy import (
    BackupPolicyStatus,
    SiteReplication,
    WalArchiveState,
)
from safehold.controller import metrics
from safehold.controller.jobs import JobImage
from safehold.controller.runtime import Runtime
from safehold.controller.walsites import reconcile_sites
from testground.fakekube import FakeKube

NS, POLICY, SOURCE = "shop", "orders-pitr", "orders"
WAL = f"{NS}/{POLICY}/{SOURCE}/pg/wal"
T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _location(name: str, available: str = "True", **spec: Any) -> dict[str, Any]:
    condition = {
        "type": "Available",
        "status": available,
        "reason": "Ready" if available == "True" else "StorageError",
        "message": "checked" if available == "True" else "the bucket does not answer",
        "lastTransitionTime": "2026-12-07T11:00:00Z",
    }
    return {
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "provider": "s3",
            "bucket": name,
            "endpoint": "http://s3.local:8333",
            "credentialsSecretRef": {"name": f"{name}-creds"},
            "repositoryPasswordSecretRef": {"name": f"{name}-pw"},
            **spec,
        },
        "status": {"conditions": [condition]},
    }


@pytest.fixture
def rt() -> Runtime:
    kube = FakeKube(
        {
            ("backuplocations", "loc"): _location("loc"),
            ("backuplocations", "site"): _location("site", role="recovery-site"),
        }
    )
    return Runtime(kube, image=JobImage("safehold:test"))  # type: ignore[arg-type]


def _body(sites: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "safehold.io/v1alpha1",
        "kind": "BackupPolicy",
        "metadata": {"name": POLICY, "namespace": NS, "uid": "uid-pol"},
        "spec": {
            "location": {"name": "loc"},
            "replicateTo": [{"name": s} for s in sites],
            "sources": {
                "databases": [
                    {
                        "name": SOURCE,
                        "engine": "postgresql",
                        "host": "pg.shop.svc",
                        "credentialsSecretRef": {"name": "pg"},
                        "pointInTime": {},
                    }
                ]
            },
        },
    }


def _reached(status: BackupPolicyStatus) -> None:
    """A run's replication has reached the site."""
    status.replication = [SiteReplication(location="site", run="r1", last_success_time=T0)]


def _archived(*, reached: bool = True) -> tuple[BackupPolicyStatus, WalArchiveState]:
    """A policy whose archive reached T0, with (``reached``) a run's replication at the site."""
    status = BackupPolicyStatus()
    if reached:
        _reached(status)
    return status, WalArchiveState(source=SOURCE, result="Succeeded", archived_until=T0)


def _pass(
    rt: Runtime,
    status: BackupPolicyStatus,
    state: WalArchiveState,
    sites: tuple[str, ...] = ("site",),
) -> None:
    body = _body(list(sites))
    policy = BackupPolicy.model_validate(body)
    primary = BackupLocation.model_validate(_location("loc"))
    reconcile_sites(rt, body, policy, status, primary, state, WAL)


def _gauge(site: str = "site") -> float | None:
    labels = {"namespace": NS, "policy": POLICY, "source": SOURCE, "location": site}
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            wanted = sample.name == "safehold_wal_replicated_until_timestamp_seconds"
            if wanted and sample.labels == labels:
                return float(sample.value)
    return None


def test_no_copy_before_a_runs_replication_has_reached_the_site(rt: Runtime) -> None:
    kube: FakeKube = rt.kube  # type: ignore[assignment]
    status, state = _archived(reached=False)
    _pass(rt, status, state)
    (copy,) = state.sites
    assert copy.reason == "AwaitingReplication"
    assert "run's replication" in (copy.message or "")
    assert kube.created == []
    assert _gauge() is None  # that wait is the run's replication's alert, not this one's


def test_a_copy_runs_replicate_of_the_wal_source_into_the_site(rt: Runtime) -> None:
    kube: FakeKube = rt.kube  # type: ignore[assignment]
    status, state = _archived()
    _pass(rt, status, state)
    (job,) = kube.created
    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "wal-copy"
    assert (labels["safehold.io/location"], labels["safehold.io/site"]) == ("loc", "site")
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-pol"
    assert job["spec"]["backoffLimit"] == 0
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:4] == ["replicate", "--source", WAL, "--only-newer"]
    assert args[args.index("--to") + 1] == "s3://site"
    (copy,) = state.sites
    assert (copy.result, copy.copying_until, copy.job) == ("Running", T0, job["metadata"]["name"])

    _pass(rt, status, state)  # while it runs: nothing new
    assert len(kube.created) == 1

    summary = '{"ok": true, "snapshots_copied": 1, "total": {"copied_bytes": 4096}}'
    kube.finish(copy.job or "", True, summary)
    _pass(rt, status, state)
    assert (copy.result, copy.replicated_until) == ("Succeeded", T0)
    assert "restores from site reach 2026-12-07T12:00:00+00:00" in (copy.message or "")
    assert kube.deleted == [job["metadata"]["name"]]
    assert _gauge() == T0.timestamp()
    assert len(kube.created) == 1  # the site has everything archived


def test_a_failed_copy_waits_for_the_next_archive(rt: Runtime) -> None:
    kube: FakeKube = rt.kube  # type: ignore[assignment]
    status, state = _archived()
    _pass(rt, status, state)
    (copy,) = state.sites
    error = '{"ok": false, "error": "no repository at s3://site", "exit_code": 10}'
    kube.finish(copy.job or "", False, error, 10)
    _pass(rt, status, state)
    assert (copy.result, copy.reason) == ("Failed", "RepositoryNotFound")
    assert "no repository at s3://site" in (copy.message or "")
    assert [e[0] for e in kube.events] == ["WalReplicationFailed"]
    assert kube.deleted == []  # a failed Job keeps its logs
    assert _gauge() == 0.0  # no copy has succeeded: as far behind as can be
    _pass(rt, status, state)
    assert len(kube.created) == 1  # not again at once

    state.archived_until = T0 + timedelta(minutes=5)  # the next archive
    _pass(rt, status, state)
    assert len(kube.created) == 2
    assert (copy.result, copy.copying_until) == ("Running", state.archived_until)


def test_no_copy_while_a_retention_job_holds_the_site(rt: Runtime) -> None:
    kube: FakeKube = rt.kube  # type: ignore[assignment]
    kube.create_job(
        {
            "metadata": {
                "name": "orders-pitr-retention-site-r1",
                "labels": {
                    "app.kubernetes.io/component": "retention",
                    "safehold.io/location": "site",
                },
            }
        }
    )
    status, state = _archived()
    _pass(rt, status, state)
    (copy,) = state.sites
    assert copy.reason == "RetentionRunning"
    assert "orders-pitr-retention-site-r1" in (copy.message or "")
    assert len(kube.created) == 1  # only the retention Job


def test_no_copy_while_the_sites_check_says_it_is_unavailable(rt: Runtime) -> None:
    kube: FakeKube = rt.kube  # type: ignore[assignment]
    unavailable = _location("site", available="False", role="recovery-site")
    kube.objects[("backuplocations", "site")] = unavailable
    status, state = _archived()
    _pass(rt, status, state)
    (copy,) = state.sites
    assert copy.reason == "SiteUnavailable"
    assert "the bucket does not answer" in (copy.message or "")
    assert kube.created == []  # no failing Job (and Warning Event) every archive


def test_a_site_that_is_not_a_recovery_site_is_named(rt: Runtime) -> None:
    kube: FakeKube = rt.kube  # type: ignore[assignment]
    kube.objects[("backuplocations", "site")] = _location("site")  # role primary
    status, state = _archived()
    _pass(rt, status, state)
    (copy,) = state.sites
    assert (copy.result, copy.reason) == ("Failed", "SiteNotRecoverySite")
    assert "replicateTo site" in (copy.message or "")
    assert kube.created == []


def test_a_site_removed_from_replicate_to_loses_its_entry_and_gauge(rt: Runtime) -> None:
    kube: FakeKube = rt.kube  # type: ignore[assignment]
    status, state = _archived()
    _pass(rt, status, state)
    kube.finish(state.sites[0].job or "", True, '{"ok": true}')
    _pass(rt, status, state)
    assert _gauge() == T0.timestamp()
    _pass(rt, status, state, sites=())
    assert state.sites == []
    assert _gauge() is None  # SafeholdWalReplicationLagging cannot fire for it


def test_a_copy_that_the_primary_cannot_give_says_to_verify_it(rt: Runtime) -> None:
    kube: FakeKube = rt.kube  # type: ignore[assignment]
    status, state = _archived()
    _pass(rt, status, state)
    (copy,) = state.sites
    summary = (
        '{"ok": false, "exit_code": 4, "error": "1 snapshot(s) could not be copied", '
        '"snapshots_failed": {"' + "ab" * 32 + '": "pack 0f3c is missing at the primary"}}'
    )
    kube.finish(copy.job or "", False, summary, 4)
    _pass(rt, status, state)
    assert (copy.result, copy.reason) == ("Failed", "PrimaryDamaged")
    assert "abababababab: pack 0f3c is missing at the primary" in (copy.message or "")
    assert "run safehold verify on the primary" in (copy.message or "")
