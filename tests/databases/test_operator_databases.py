"""Database sources through the operator, on the test ground, with the YAML of
docs/databases.md: a BackupPolicy with a PostgreSQL 15 and a MariaDB source, a BackupRun
whose Jobs (run by the pod runner) dump both into S3, the databases dropped, and a
RestoreRequest whose Jobs bring them back, compared table by table, row for row. The
database password must appear in no Job spec, pod log, event or status.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kopf.testing import KopfRunner

from safehold.controller import handlers
from safehold.controller.kube import Kube
from safehold.controller.runtime import Runtime, set_runtime
from testground import podlogs
from testground.databases import (
    DatabaseServer,
    drop_database,
    load_sample_data,
    table_contents,
)
from testground.kube import Cluster, Namespace
from testground.objectstores import RunningStore

DOC = Path(__file__).resolve().parents[2] / "docs" / "databases.md"


def _doc_objects() -> list[dict[str, Any]]:
    # the walkthrough's objects; point-in-time recovery's are tests/controller's
    text = DOC.read_text().split("## Point-in-time recovery")[0]
    out: list[dict[str, Any]] = []
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        out += [d for d in yaml.safe_load_all(block) if d]
    return out


@pytest.fixture
def operator(
    cluster: Cluster, namespace: Namespace, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The operator in-process (kopf) for the test's namespace, as tests/controller run it."""
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


def _location(namespace: Namespace, store: RunningStore) -> None:
    bucket = f"db-{secrets.token_hex(4)}"
    store.make_bucket(bucket)
    options = dict(store.options)
    endpoint = options.pop("endpoint")
    region = options.pop("region", None)
    namespace.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "primary-storage"},
                "stringData": options,
            },
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "primary-password"},
                "stringData": {"password": secrets.token_hex(12)},
            },
            {
                "apiVersion": "safehold.io/v1alpha1",
                "kind": "BackupLocation",
                "metadata": {"name": "primary"},
                "spec": {
                    "provider": "s3",
                    "bucket": bucket,
                    "endpoint": endpoint,
                    **({"region": region} if region else {}),
                    "credentialsSecretRef": {"name": "primary-storage"},
                    "repositoryPasswordSecretRef": {"name": "primary-password"},
                },
            },
        ]
    )


def _wait(namespace: Namespace, what: str, condition: str, timeout: int = 240) -> None:
    namespace.kubectl(
        "wait", f"--for=condition={condition}", what, f"--timeout={timeout}s", timeout=timeout + 10
    )


def test_backup_drop_restore_through_the_operator(
    namespace: Namespace,
    s3_store: RunningStore,
    postgres_server: DatabaseServer,
    mariadb_server: DatabaseServer,
    operator: None,
) -> None:
    servers = {"orders": postgres_server, "shop": mariadb_server}
    # a database name of its own per test namespace: the servers are shared by the session
    dbname = {k: f"{k}_{str(namespace)[-6:].replace('-', '_')}" for k in servers}
    for source, server in servers.items():
        load_sample_data(server, dbname[source], rows=40_000)
    before = {s: table_contents(servers[s], dbname[s]) for s in servers}

    _location(namespace, s3_store)
    _wait(namespace, "backuplocation/primary", "Available")

    objects = _doc_objects()
    for obj in objects:
        if obj["kind"] == "Secret":
            server = servers[obj["metadata"]["name"].split("-")[0]]
            obj["stringData"] = {"username": server.user, "password": server.password}
        elif obj["kind"] == "BackupPolicy":
            obj["spec"].pop("schedule", None)
            for d in obj["spec"]["sources"]["databases"]:
                server = servers[d["name"]]
                d["host"], d["port"] = server.host, server.port
                d["databases"] = [dbname[d["name"]]]
    kinds = {o["kind"]: o for o in objects}
    namespace.apply([o for o in objects if o["kind"] != "RestoreRequest"])

    _wait(namespace, "backuprun/databases-manual", "Complete")
    run = namespace.get("backuprun", "databases-manual")
    assert run is not None
    assert run["status"]["phase"] == "Succeeded", run["status"]
    results = {s["name"]: s for s in run["status"]["sources"]}
    for source in servers:
        r = results[source]
        assert r["kind"] == "database"
        assert r["phase"] == "Succeeded", r
        assert len(r["snapshotId"]) == 64
        assert r["files"] == 1  # one database
        assert r["bytesRead"] > 3_000_000  # the 40 000-row table went through the Job

    # the password is nowhere the cluster shows: Job specs, pod logs, status, events
    jobs = namespace.kubectl("get", "jobs", "-o", "json").stdout
    events = namespace.kubectl("get", "events", "-o", "json").stdout
    shown = jobs + events + json.dumps(run)
    pods = json.loads(namespace.kubectl("get", "pods", "-o", "json").stdout)["items"]
    assert pods
    for pod in pods:
        shown += namespace.logs(pod["metadata"]["name"], tail=1000)
    for server in servers.values():
        assert server.password not in shown
    job_args = [
        json.dumps(j["spec"]["template"]["spec"]["containers"][0]["args"])
        for j in json.loads(jobs)["items"]
        if j["metadata"]["labels"].get("safehold.io/source") in servers
    ]
    assert len(job_args) == 2
    assert all("--db-password-file" in a for a in job_args)

    for source, server in servers.items():
        drop_database(server, dbname[source])
    namespace.apply(kinds["RestoreRequest"])
    _wait(namespace, "restorerequest/databases-back", "Complete")
    rr = namespace.get("restorerequest", "databases-back")
    assert rr is not None
    assert rr["status"]["phase"] == "Succeeded", rr["status"]
    items = {i["source"]: i for i in rr["status"]["restored"]}
    assert items["orders"]["target"] == f"postgresql://127.0.0.1:{postgres_server.port}"
    assert items["shop"]["target"] == f"mysql://127.0.0.1:{mariadb_server.port}"
    for source, server in servers.items():
        assert items[source]["phase"] == "Succeeded"
        assert items[source]["files"] == 1
        assert table_contents(server, dbname[source]) == before[source]
        drop_database(server, dbname[source])


def test_failed_dump_fails_the_source(
    namespace: Namespace,
    s3_store: RunningStore,
    postgres_server: DatabaseServer,
    operator: None,
) -> None:
    """A wrong password: the source is Failed with the tool's reason, and no snapshot."""
    _location(namespace, s3_store)
    _wait(namespace, "backuplocation/primary", "Available")
    wrong = "wrong-" + secrets.token_hex(6)
    namespace.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "pg"},
                "stringData": {"user": postgres_server.user, "pass": wrong},
            },
            {
                "apiVersion": "safehold.io/v1alpha1",
                "kind": "BackupPolicy",
                "metadata": {"name": "pg"},
                "spec": {
                    "location": {"name": "primary"},
                    "sources": {
                        "databases": [
                            {
                                "name": "pg",
                                "engine": "postgresql",
                                "host": postgres_server.host,
                                "port": postgres_server.port,
                                "databases": ["postgres"],
                                "credentialsSecretRef": {
                                    "name": "pg",
                                    "usernameKey": "user",
                                    "passwordKey": "pass",
                                },
                            }
                        ]
                    },
                },
            },
            {
                "apiVersion": "safehold.io/v1alpha1",
                "kind": "BackupRun",
                "metadata": {"name": "pg-now"},
                "spec": {"policyRef": {"name": "pg"}, "type": "full"},
            },
        ]
    )
    _wait(namespace, "backuprun/pg-now", "Failed")
    run = namespace.get("backuprun", "pg-now")
    assert run is not None
    source = run["status"]["sources"][0]
    assert source["phase"] == "Failed"
    assert source.get("snapshotId") is None
    message = source["error"]["message"]
    assert "password authentication failed" in message
    assert "no snapshot was written" in message
    assert wrong not in json.dumps(run)


def test_scheduled_test_restore_checks_the_dumps_and_uses_a_scratch_server(
    namespace: Namespace,
    s3_store: RunningStore,
    postgres_server: DatabaseServer,
    mariadb_server: DatabaseServer,
    operator: None,
) -> None:
    """`testRestore` with a PostgreSQL and a MariaDB source: both dumps of the newest run
    are checked to their end, the PostgreSQL one is also restored into a scratch database
    on a scratch server (here the same test server under another name), which is dropped;
    the result is in `status.lastTestRestore`, with no password anywhere."""
    servers = {"orders": postgres_server, "shop": mariadb_server}
    dbname = {k: f"{k}_{str(namespace)[-6:].replace('-', '_')}" for k in servers}
    for source, server in servers.items():
        load_sample_data(server, dbname[source], rows=2_000)
    _location(namespace, s3_store)
    _wait(namespace, "backuplocation/primary", "Available")
    secrets_ = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-db"},
            "stringData": {"username": server.user, "password": server.password},
        }
        for name, server in servers.items()
    ]
    sources = [
        {
            "name": name,
            "engine": server.engine,
            "host": server.host,
            "port": server.port,
            "databases": [dbname[name]],
            "credentialsSecretRef": {"name": f"{name}-db"},
        }
        for name, server in servers.items()
    ]
    scratch = {
        "engine": "postgresql",
        "host": "localhost",  # the same test server, by another name: not a source's
        "port": postgres_server.port,
        "credentialsSecretRef": {"name": "orders-db"},
    }
    namespace.apply(
        [
            *secrets_,
            {
                "apiVersion": "safehold.io/v1alpha1",
                "kind": "BackupPolicy",
                "metadata": {"name": "dbs"},
                "spec": {
                    "location": {"name": "primary"},
                    "sources": {"databases": sources},
                    "testRestore": {"cron": "* * * * *", "scratchDatabases": [scratch]},
                },
            },
            {
                "apiVersion": "safehold.io/v1alpha1",
                "kind": "BackupRun",
                "metadata": {"name": "dbs-now"},
                "spec": {"policyRef": {"name": "dbs"}, "type": "full"},
            },
        ]
    )
    _wait(namespace, "backuprun/dbs-now", "Complete")

    def tested() -> dict[str, Any] | None:
        status = (namespace.get("backuppolicy", "dbs") or {}).get("status") or {}
        last = status.get("lastTestRestore")
        return status if last and last.get("run") == "dbs-now" else None

    status = namespace.cluster.wait_for(tested, timeout=240, what="a test restore of dbs-now")
    last = status["lastTestRestore"]
    assert last["result"] == "Succeeded", last
    by_source = {s["source"]: s for s in last["sources"]}
    assert set(by_source) == {"orders", "shop"}
    assert all(s["kind"] == "database" and s["files"] == 1 for s in by_source.values())
    assert by_source["orders"]["bytes"] > 0
    assert "restored into scratch database(s) safehold_test_" in by_source["orders"]["message"]
    assert "(dropped)" in by_source["orders"]["message"]
    assert "scratch" not in by_source["shop"]["message"]
    assert by_source["orders"]["restoreSeconds"] > 0
    left = postgres_server.sql(
        "SELECT datname FROM pg_database WHERE datname LIKE 'safehold_test_%'"
    )
    assert left.strip() == ""
    shown = json.dumps(status) + namespace.kubectl("get", "events", "-o", "json").stdout
    for server in servers.values():
        assert server.password not in shown
    for source, server in servers.items():
        drop_database(server, dbname[source])
