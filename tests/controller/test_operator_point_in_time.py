"""A BackupPolicy's PostgreSQL source with ``pointInTime``, through the operator on the test
ground: the runs take base backups, the WAL is archived every ``archiveInterval`` into S3
(SeaweedFS) by Jobs the pod runner runs, ``status.walArchive`` says how far restores reach,
and a restore written from that repository by ``safehold pg-restore-pitr`` brings back, on a
real PostgreSQL 15, a row committed after the base backup. With a recovery site (on GCS),
each archive is copied there too, and the site alone brings the row back. The user is a
replication-only role, and its password shows in no Job, event or status.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from safehold.controller import metrics
from safehold.controller.walarchive import slot_name
from testground.databases import DatabaseServer, private_dir, run_postgres
from testground.kube import Namespace
from testground.objectstores import RunningStore
from testground.prometheus import panels_answer, prometheus, value

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "charts"))
from render_dashboard import POINT_IN_TIME

ARCHIVER_PASSWORD = "arch:iver's-pass"
DOC = Path(__file__).resolve().parents[2] / "docs" / "databases.md"


def _doc_objects() -> list[dict[str, Any]]:
    """The Secret, BackupPolicy and RestoreRequest of docs/databases.md's point-in-time
    section."""
    text = DOC.read_text().split("### In a BackupPolicy: `pointInTime`")[1].split("\n## ")[0]
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    objects = [d for block in blocks for d in yaml.safe_load_all(block) if d]
    assert [o["kind"] for o in objects] == ["Secret", "BackupPolicy", "RestoreRequest"]
    return objects


def _archive(namespace: Namespace, kit: Any) -> dict[str, Any]:
    status = kit.get(namespace, "backuppolicy", "pg").get("status") or {}
    archives = status.get("walArchive") or [{}]
    assert len(archives) == 1, archives
    state: dict[str, Any] = archives[0]
    return state


def _wait_archive(
    namespace: Namespace, kit: Any, done: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = _archive(namespace, kit)
        if done(state):
            return state
        assert state.get("result") != "Failed", state
        assert time.monotonic() < deadline, state
        time.sleep(1)


def _started(data: Path) -> DatabaseServer:
    """A real PostgreSQL started on the restored ``data``, once recovered and promoted."""
    root = private_dir("safehold-pitr-", "postgres" if os.geteuid() == 0 else None)
    os.rename(data, root / "data")  # under a directory the postgres user may enter
    restored = run_postgres(root, root / "data")
    deadline = time.monotonic() + 60
    while restored.sql("SELECT pg_is_in_recovery()").strip() != "f":
        if time.monotonic() > deadline:
            log = restored.log.read_text()[-3000:]
            restored.stop()
            raise AssertionError(log)
        time.sleep(0.2)
    return restored


def _orders(server: DatabaseServer) -> list[str]:
    return server.sql("SELECT id || ':' || note FROM orders ORDER BY id", "shop").splitlines()


def _recovered(data: Path) -> list[str]:
    """The orders of a real PostgreSQL started on the restored ``data``, once recovered."""
    restored = _started(data)
    try:
        return _orders(restored)
    finally:
        restored.stop()


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_base_backups_and_the_wal_archive_through_the_operator(
    namespace: Namespace,
    s3_store: RunningStore,
    gcs_store: RunningStore,
    database_server_factory: Callable[[str], DatabaseServer],
    operator: Callable[..., Any],
    kit: Any,
    tmp_path: Path,
) -> None:
    server = database_server_factory("postgresql")
    quoted = ARCHIVER_PASSWORD.replace("'", "''")
    server.sql(f"CREATE ROLE archiver LOGIN REPLICATION PASSWORD '{quoted}'")
    server.sql("CREATE DATABASE shop")
    server.sql("CREATE TABLE orders (id int PRIMARY KEY, note text)", "shop")
    server.sql("INSERT INTO orders VALUES (1, 'before the base backup')", "shop")

    repo_password = secrets.token_hex(12)
    bucket = kit.store_location(namespace, s3_store, "loc", password=repo_password)
    site_bucket = kit.store_location(
        namespace, gcs_store, "site", password=repo_password, role="recovery-site"
    )
    secret, policy, request = _doc_objects()
    secret["stringData"] = {"username": "archiver", "password": ARCHIVER_PASSWORD}
    policy["metadata"]["name"] = "pg"
    policy["spec"]["location"]["name"] = "loc"
    policy["spec"]["replicateTo"] = [{"name": "site"}]
    policy["spec"].pop("schedule")
    (source,) = policy["spec"]["sources"]["databases"]
    source.update(host=server.host, port=server.port)
    source["pointInTime"]["archiveInterval"] = "1m"  # the shortest the API allows
    namespace.apply([secret, policy])
    operator(poll_interval=1.0)  # no root: the chart's default
    kit.kubectl_wait(namespace, "backuplocation/loc", "Available", timeout=180)

    # the first archive starts at once: it creates the slot the later ones keep WAL with
    first = _wait_archive(namespace, kit, lambda s: s.get("result") == "Succeeded", 180)
    assert first["archivedUntil"]
    assert first["nextArchiveTime"]
    assert first["timeline"] == 1
    slot = server.sql("SELECT slot_name FROM pg_replication_slots").strip()
    assert slot == slot_name(str(namespace), "pg", "orders")
    assert slot.startswith("safehold_test_")
    # no WAL goes to the site before a run's replication has made it a repository
    (waiting,) = first["sites"]
    assert (waiting["location"], waiting["reason"]) == ("site", "AwaitingReplication"), waiting
    assert "replicatedUntil" not in waiting

    kit.backup_run(namespace, "base", "pg", "full")
    kit.kubectl_wait(namespace, "backuprun/base", "Complete", timeout=240)
    run = kit.get(namespace, "backuprun", "base")
    assert run["status"]["phase"] == "Succeeded", run["status"]
    (result,) = run["status"]["sources"]
    assert result["phase"] == "Succeeded", result
    assert len(result["snapshotId"]) == 64
    assert result["bytesRead"] > 10_000_000  # a whole data directory, not a dump
    kit.kubectl_wait(namespace, "backuprun/base", "Replicated", timeout=240)

    moment = server.sql(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    ).strip()
    time.sleep(0.5)
    server.sql("INSERT INTO orders VALUES (2, 'after the base backup')", "shop")
    committed = _time(
        server.sql(
            "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        ).strip()
    )
    later = _wait_archive(
        namespace,
        kit,
        lambda s: s.get("result") == "Succeeded" and _time(s["archivedUntil"]) > committed,
        150,
    )

    def reached_site(state: dict[str, Any]) -> bool:
        until = state["sites"][0].get("replicatedUntil")
        return until is not None and _time(until) > committed

    copied = _wait_archive(namespace, kit, reached_site, 150)["sites"][0]
    assert copied["result"] == "Succeeded", copied
    assert namespace.get("job", copied["job"]) is None  # a succeeded copy's Job is deleted
    site_until = metrics.WAL_REPLICATED_UNTIL.labels(str(namespace), "pg", "orders", "site")
    assert site_until._value.get() == _time(copied["replicatedUntil"]).timestamp()
    assert later["job"] != first["job"]
    assert namespace.get("job", first["job"]) is None  # a succeeded archive's Job is deleted
    wide = namespace.kubectl("get", "backuppolicy", "pg", "-o", "wide").stdout.splitlines()
    column = wide[0].index("WAL ARCHIVED")
    assert re.fullmatch(r"\d+[sm]", wide[1][column:].split()[0]), wide  # an age, e.g. "7s"
    labels = (str(namespace), "pg", "orders")
    archived = metrics.WAL_ARCHIVED_UNTIL.labels(*labels)._value.get()
    assert archived >= _time(later["archivedUntil"]).timestamp() - 1
    # the dashboard's point-in-time row shows both, from a real Prometheus scraping them
    (tmp_path / "prometheus").mkdir()
    with prometheus(tmp_path / "prometheus", metrics.serve(0, "127.0.0.1")) as port:
        panels_answer(port, str(namespace), {POINT_IN_TIME})
        site_age = (
            f'time() - safehold_wal_replicated_until_timestamp_seconds{{namespace="{namespace}"}}'
        )
        assert 0 <= value(port, site_age, str(namespace)) < 600

    # the repository alone brings the row back: the CLI writes the data directory
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SAFEHOLD_", "PG"))},
        "SAFEHOLD_PASSWORD": repo_password,
    }
    options = [f"-o{k}={v}" for k, v in s3_store.options.items()]
    data = tmp_path / "data"
    done = subprocess.run(
        [sys.executable, "-m", "safehold", "--repo", s3_store.url(bucket, "repo"), *options,
         "pg-restore-pitr", "--source", f"{namespace}/pg/orders", str(data)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert _recovered(data) == ["1:before the base backup", "2:after the base backup"]

    # and so does the recovery site alone, as after losing the primary
    site_options = [f"-o{k}={v}" for k, v in gcs_store.options.items()]
    from_site = tmp_path / "from-site"
    done = subprocess.run(
        [sys.executable, "-m", "safehold", "--repo", gcs_store.url(site_bucket, "repo"),
         *site_options, "pg-restore-pitr", "--source", f"{namespace}/pg/orders",
         str(from_site)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert _recovered(from_site) == ["1:before the base backup", "2:after the base backup"]

    # through a RestoreRequest: the data directory at a second between the two rows, into
    # a new claim, as the server's user, without root (the docs name the postgres image's
    # 999; this machine's postgres user runs the servers started on the restored data)
    assert request["spec"]["job"] == {"runAsUser": 999, "runAsGroup": 999}
    server_user = pwd.getpwnam("postgres")
    request["spec"]["job"] = {"runAsUser": server_user.pw_uid, "runAsGroup": server_user.pw_gid}
    request["metadata"]["name"] = "back"
    request["spec"]["policyRef"]["name"] = "pg"
    request["spec"]["pointInTime"] = moment
    request["spec"]["target"]["size"] = "1Gi"
    namespace.apply(request)
    kit.kubectl_wait(namespace, "restorerequest/back", "Complete", timeout=240)
    rr = kit.get(namespace, "restorerequest", "back")
    assert rr["status"]["phase"] == "Succeeded", rr["status"]
    (item,) = rr["status"]["restored"]
    assert item["kind"] == "database"
    assert item["target"] == f"persistentvolumeclaim/{namespace}/orders-restored"
    assert item["files"] > 900
    copy = kit.claim_dir(namespace, "orders-restored") / "pgdata"
    assert _recovered(copy) == ["1:before the base backup"]

    # from the recovery site, as after losing the primary: to the end of what reached it
    # (no time, no run), and the run's base backup to its own end (backupRunRef)
    request["spec"].pop("pointInTime")
    request["spec"]["locationRef"] = {"name": "site"}
    policy_ref = {"policyRef": request["spec"].pop("policyRef")}
    requests = {"from-site": policy_ref, "run-at-site": {"backupRunRef": {"name": "base"}}}
    for name, ref in requests.items():
        spec = {**request["spec"], **ref, "target": {**request["spec"]["target"]}}
        spec["target"]["claimName"] = f"orders-{name}"
        namespace.apply({**request, "metadata": {"name": name}, "spec": spec})
    for name in requests:
        kit.kubectl_wait(namespace, f"restorerequest/{name}", "Complete", timeout=240)
        rr = kit.get(namespace, "restorerequest", name)
        assert rr["status"]["phase"] == "Succeeded", json.dumps(rr["status"], indent=1)
    everything = ["1:before the base backup", "2:after the base backup"]
    assert _recovered(kit.claim_dir(namespace, "orders-from-site") / "pgdata") == everything
    at_run = kit.claim_dir(namespace, "orders-run-at-site") / "pgdata"
    assert _recovered(at_run) == ["1:before the base backup"]

    # a fresh cluster: the policy comes back from Git, its BackupRuns do not; the request
    # is resolved from the site's repository (a base backup's meta says what it is)
    namespace.kubectl("delete", "backuprun", "base", "--wait=true")
    fresh = {**request, "metadata": {"name": "fresh"}}
    fresh["spec"] = {**request["spec"], **policy_ref,
                     "target": {"claimName": "orders-fresh", "path": "pgdata"}}  # fmt: skip
    namespace.apply(fresh)
    kit.kubectl_wait(namespace, "restorerequest/fresh", "Complete", timeout=240)
    rr = kit.get(namespace, "restorerequest", "fresh")
    assert rr["status"]["phase"] == "Succeeded", json.dumps(rr["status"], indent=1)
    assert "backupRun" not in rr["status"]
    fresh_copy = kit.claim_dir(namespace, "orders-fresh") / "pgdata"
    assert _recovered(fresh_copy) == everything

    # after a restore, the source points at the restored server (timeline 2): its archive
    # goes on into the same source, and a restore to the end follows the new history from
    # the old server's base backup (the restored server has none yet), never the old one
    again = {**request, "metadata": {"name": "again"}}
    primary = {"locationRef": {"name": "loc"}}
    again["spec"] = {**request["spec"], **policy_ref, **primary, "pointInTime": moment,
                     "target": {"claimName": "orders-again", "path": "pgdata"}}  # fmt: skip
    namespace.apply(again)
    kit.kubectl_wait(namespace, "restorerequest/again", "Complete", timeout=240)
    new = _started(kit.claim_dir(namespace, "orders-again") / "pgdata")
    try:
        new.sql("INSERT INTO orders VALUES (3, 'on the restored server')", "shop")
        written = _time(new.sql(
            "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        ).strip())  # fmt: skip
        namespace.kubectl("patch", "backuppolicy", "pg", "--type=json", "-p", json.dumps([
            {"op": "replace", "path": "/spec/sources/databases/0/host", "value": new.host},
            {"op": "replace", "path": "/spec/sources/databases/0/port", "value": new.port},
        ]))  # fmt: skip
        # an archive Job of the old server may finish after the patch, rightly reporting its
        # own archivedUntil past `written`: wait for the status to follow the restored one
        moved = _wait_archive(
            namespace,
            kit,
            lambda s: (
                s.get("result") == "Succeeded"
                and s.get("timeline") == 2
                and _time(s["archivedUntil"]) > written
            ),
            180,
        )
        assert moved["timeline"] == 2  # status says the archive follows the restored server
        after = {**request, "metadata": {"name": "after"}}
        after["spec"] = {**request["spec"], **policy_ref, **primary,
                         "target": {"claimName": "orders-after", "path": "pgdata"}}  # fmt: skip
        namespace.apply(after)
        kit.kubectl_wait(namespace, "restorerequest/after", "Complete", timeout=240)
        at_end = _recovered(kit.claim_dir(namespace, "orders-after") / "pgdata")
        assert at_end == ["1:before the base backup", "3:on the restored server"]
    finally:
        new.stop()

    # the password is nowhere the cluster shows
    shown = namespace.kubectl("get", "jobs", "-o", "json").stdout
    shown += namespace.kubectl("get", "events", "-o", "json").stdout
    shown += json.dumps(kit.get(namespace, "backuppolicy", "pg"))
    assert ARCHIVER_PASSWORD not in shown
