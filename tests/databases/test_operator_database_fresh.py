"""A database source restored in a cluster without its BackupRun (a fresh cluster after a
disaster): the dumps are resolved from the repository by their source names and run tag,
the BackupPolicy (as a GitOps repository holds it) gives the server and the credentials;
without the policy the restore fails saying what to apply."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from kopf.testing import KopfRunner

from safehold.controller import handlers
from safehold.controller.kube import Kube
from safehold.controller.runtime import Runtime, set_runtime
from testground import podlogs
from testground.databases import DatabaseServer, drop_database, load_sample_data, table_contents
from testground.kube import Cluster, Namespace
from testground.objectstores import RunningStore


@pytest.fixture
def operator(
    cluster: Cluster, namespace: Namespace, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("SAFEHOLD_IMAGE", os.environ.get("SAFEHOLD_TEST_IMAGE", "safehold:0.1.0"))
    reader = None
    if cluster.local is not None:
        pods = cluster.local.path / "pods"

        def reader(ns: str, pod: str, tail: int) -> str:
            text = podlogs.container_log(pods, ns, pod, None)
            return "\n".join(text.splitlines()[-tail:])

    set_runtime(Runtime(Kube(cluster.api_client(), log_reader=reader)))
    runner = KopfRunner(
        ["run", "--standalone", "--namespace", str(namespace), "-m", handlers.__name__],
        timeout=60,
    )
    runner.__enter__()
    try:
        yield
    finally:
        runner.__exit__(None, None, None)
        handlers.reset()


def _objects(store: RunningStore, server: DatabaseServer, db: str) -> list[dict[str, Any]]:
    bucket = f"dbfresh-{secrets.token_hex(4)}"
    store.make_bucket(bucket)
    options = dict(store.options)
    endpoint = options.pop("endpoint")
    region = options.pop("region", None)
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "loc-storage"},
         "stringData": options},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "loc-password"},
         "stringData": {"password": secrets.token_hex(12)}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pg"},
         "stringData": {"username": server.user, "password": server.password}},
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "BackupLocation",
            "metadata": {"name": "loc"},
            "spec": {
                "provider": "s3", "bucket": bucket, "endpoint": endpoint,
                **({"region": region} if region else {}),
                "credentialsSecretRef": {"name": "loc-storage"},
                "repositoryPasswordSecretRef": {"name": "loc-password"},
            },
        },
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "BackupPolicy",
            "metadata": {"name": "app"},
            "spec": {
                "location": {"name": "loc"},
                "sources": {"databases": [{
                    "name": "orders", "engine": "postgresql",
                    "host": server.host, "port": server.port, "databases": [db],
                    "credentialsSecretRef": {"name": "pg"},
                }]},
            },
        },
    ]  # fmt: skip


def _wait(namespace: Namespace, what: str, condition: str, timeout: int = 240) -> None:
    namespace.kubectl(
        "wait", f"--for=condition={condition}", what, f"--timeout={timeout}s", timeout=timeout + 10
    )


def _request(namespace: Namespace, name: str, **spec: Any) -> dict[str, Any]:
    namespace.apply(
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "RestoreRequest",
            "metadata": {"name": name},
            "spec": {"policyRef": {"name": "app"}, "existingResourcePolicy": "Overwrite", **spec},
        }
    )
    _wait(namespace, f"restorerequest/{name}", "Complete")
    rr = namespace.get("restorerequest", name)
    assert rr is not None
    return rr


def test_database_restore_resolved_from_the_repository(
    namespace: Namespace, s3_store: RunningStore, postgres_server: DatabaseServer, operator: None
) -> None:
    db = f"fresh_{str(namespace)[-6:].replace('-', '_')}"
    load_sample_data(postgres_server, db, rows=2_000)
    before = table_contents(postgres_server, db)
    objects = _objects(s3_store, postgres_server, db)
    namespace.apply(objects)
    _wait(namespace, "backuplocation/loc", "Available")
    namespace.apply(
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "BackupRun",
            "metadata": {"name": "nightly"},
            "spec": {"policyRef": {"name": "app"}, "type": "full"},
        }
    )
    _wait(namespace, "backuprun/nightly", "Complete")
    run = namespace.get("backuprun", "nightly")
    assert run is not None
    assert run["status"]["phase"] == "Succeeded", run["status"]

    # the fresh cluster: no BackupRun; the database is lost
    namespace.kubectl("delete", "backuprun", "nightly")
    drop_database(postgres_server, db)

    try:
        rr = _request(namespace, "db-back")
        assert rr["status"]["phase"] == "Succeeded", rr["status"]
        assert "backupRun" not in rr["status"]
        item = rr["status"]["restored"][0]
        assert (item["source"], item["kind"]) == ("orders", "database")
        assert len(item["snapshotId"]) == 64
        assert item["target"] == f"postgresql://{postgres_server.host}:{postgres_server.port}"
        assert table_contents(postgres_server, db) == before

        # without the policy, the server and the credentials are unknown: said so
        namespace.kubectl("delete", "backuppolicy", "app")
        rr = _request(namespace, "no-policy", locationRef={"name": "loc"})
        assert rr["status"]["phase"] == "Failed", rr["status"]
        item = rr["status"]["restored"][0]
        assert item["error"]["reason"] == "PolicyNotFound"
        assert "BackupPolicy 'app' does not exist" in item["error"]["message"]
        assert "credentials Secret" in item["error"]["message"]
    finally:
        drop_database(postgres_server, db)
