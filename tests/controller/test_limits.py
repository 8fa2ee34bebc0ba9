"""The administrator's limits on what policies may name: ServiceAccounts of resource Jobs
and database hosts. Pure logic first, then through a real BackupRun on the test ground."""

from __future__ import annotations

from typing import Any

import pytest

from safehold.api import BackupPolicy, SourceResult
from safehold.controller.limits import Limits, apply_limits, limits_from_env
from testground.kube import Namespace


def _policy(**spec: Any) -> BackupPolicy:
    return BackupPolicy.model_validate(
        {
            "metadata": {"name": "shop", "namespace": "team-a"},
            "spec": {
                **spec,
                "location": {"name": "primary"},
                "sources": {
                    "databases": [
                        {
                            "name": "orders",
                            "engine": "postgresql",
                            "host": "orders-db.team-a.svc",
                            "credentialsSecretRef": {"name": "db"},
                        },
                        {
                            "name": "crm",
                            "engine": "mysql",
                            "host": "10.0.0.7",
                            "credentialsSecretRef": {"name": "db"},
                        },
                    ],
                    "clusterResources": {"serviceAccountName": "deployer"},
                },
            },
        }
    )


def _planned() -> list[SourceResult]:
    return [
        SourceResult(name="orders", kind="database", job="j1"),
        SourceResult(name="crm", kind="database", job="j2"),
        SourceResult(name="resources", kind="clusterResources", job="j3"),
    ]


def test_without_limits_everything_is_allowed() -> None:
    planned = _planned()
    apply_limits(Limits(), _policy(), planned, None)
    assert [r.phase for r in planned] == ["Pending"] * 3


def test_sources_naming_what_the_administrator_did_not_allow_fail_before_any_job() -> None:
    limits = Limits(
        service_accounts=("*/safehold-resources",), database_hosts=("*.svc", "*.svc.cluster.local")
    )
    planned = _planned()
    apply_limits(limits, _policy(), planned, None)
    orders, crm, resources = planned
    assert orders.phase == "Pending"
    assert crm.phase == "Failed"
    assert crm.job is None
    assert crm.error is not None
    assert crm.error.reason == "DatabaseHostNotAllowed"
    assert "spec.sources.databases[1].host: database host 10.0.0.7" in crm.error.message
    assert "policyLimits.databaseHosts" in crm.error.message
    assert resources.phase == "Failed"
    assert resources.error is not None
    assert resources.error.reason == "ServiceAccountNotAllowed"
    assert "ServiceAccount team-a/deployer" in resources.error.message
    assert "clusterResources.serviceAccountName" in resources.error.message


def test_limits_come_from_the_environment_the_chart_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAFEHOLD_ALLOWED_SERVICE_ACCOUNTS", raising=False)
    monkeypatch.setenv("SAFEHOLD_ALLOWED_DATABASE_HOSTS", "a.svc, *.db ,")
    limits = limits_from_env()
    assert limits.service_accounts is None
    assert limits.database_hosts == ("a.svc", "*.db")
    assert limits.database_host("X.DB") is None  # host names are case-insensitive


def test_a_run_of_a_policy_dumping_a_host_not_allowed_fails_with_the_reason(
    namespace: Namespace, s3_store: Any, operator: Any, kit: Any
) -> None:
    operator(limits=Limits(database_hosts=("*.svc.cluster.local",)))
    kit.store_location(namespace, s3_store, "primary")
    namespace.apply(
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "BackupPolicy",
            "metadata": {"name": "pol"},
            "spec": {
                "location": {"name": "primary"},
                "sources": {
                    "databases": [
                        {
                            "name": "orders",
                            "engine": "postgresql",
                            "host": "127.0.0.1",
                            "credentialsSecretRef": {"name": "db"},
                        }
                    ]
                },
            },
        }
    )
    kit.backup_run(namespace, "run-1", "pol")
    kit.kubectl_wait(namespace, "backuprun/run-1", "Complete", timeout=120)
    run = kit.get(namespace, "backuprun", "run-1")
    assert run["status"]["phase"] == "Failed"
    [source] = run["status"]["sources"]
    assert source["error"]["reason"] == "DatabaseHostNotAllowed"
    assert "database host 127.0.0.1" in source["error"]["message"]
    dumps = namespace.kubectl(
        "get", "jobs", "-l", "app.kubernetes.io/component=backup", "-o", "name"
    )
    assert dumps.stdout.strip() == ""  # no dump Job was made


def test_a_test_restores_scratch_server_is_held_to_the_database_hosts() -> None:
    """testRestore.scratchDatabases[].host is a host the operator's Job writes to: the same
    policyLimits.databaseHosts hold for it as for the sources."""
    from types import SimpleNamespace

    from safehold.controller.testrestore import _scratch_host_refused

    def policy(scratch_host: str) -> BackupPolicy:
        server = {
            "engine": "postgresql",
            "host": scratch_host,
            "credentialsSecretRef": {"name": "s"},
        }
        return _policy(testRestore={"cron": "0 3 * * *", "scratchDatabases": [server]})

    rt: Any = SimpleNamespace(limits=Limits(database_hosts=("*.svc.cluster.local",)))
    assert _scratch_host_refused(rt, policy("scratch.shop.svc.cluster.local"), "orders") is None
    why = _scratch_host_refused(rt, policy("10.0.0.9"), "orders")
    assert why is not None
    assert why.startswith("spec.testRestore.scratchDatabases[0].host: database host 10.0.0.9")
