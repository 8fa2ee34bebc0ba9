"""Scheduled test restores without a cluster: what `testRestore` accepts and refuses, which
backup of each source is tested, the scratch claim's size, and the Job that restores into
it (the user's check after the restore, without any Secret)."""

from __future__ import annotations

import json
from typing import Any

from safehold.api import BackupPolicy, validate_spec
from safehold.controller.jobs import CheckContainer, JobRequest, Mount, build_job
from safehold.controller.testrestore_jobs import newest_backups, scratch_size

NS = "prod"


def _spec(**test: Any) -> dict[str, Any]:
    return {
        "location": {"name": "loc"},
        "sources": {
            "volumes": [{"claimName": "data"}, {"name": "logs", "claimName": "logs-claim"}],
            "databases": [
                {
                    "name": "pg",
                    "engine": "postgresql",
                    "host": "db.prod.svc",
                    "credentialsSecretRef": {"name": "pg-creds"},
                }
            ],
        },
        "testRestore": {"cron": "0 4 * * *", **test},
    }


def _errors(spec: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e.path, e.message) for e in validate_spec("BackupPolicy", spec)]


def test_a_test_restore_of_the_policys_sources_is_accepted() -> None:
    assert _errors(_spec()) == []
    assert _errors(_spec(sources=["data", "pg"], storageClassName="fast")) == []
    check = {"image": "busybox:1.36", "command": ["sh", "-c", "test -f /scratch/ok"]}
    assert _errors(_spec(check=check)) == []
    scratch = {
        "engine": "postgresql",
        "host": "scratch-pg.test.svc",
        "credentialsSecretRef": {"name": "scratch"},
    }
    assert _errors(_spec(scratchDatabases=[scratch])) == []


def test_a_source_the_policy_does_not_have_is_refused_by_name() -> None:
    [(path, message)] = _errors(_spec(sources=["data", "dta"]))
    assert path == "spec.testRestore.sources[1]"
    assert "'dta' is not a volume or database source" in message
    assert "data, logs, pg" in message


def test_any_name_is_accepted_while_a_selector_names_the_sources() -> None:
    spec = _spec(sources=["some-claim"])
    spec["sources"]["volumes"].append({"selector": {"matchLabels": {"backup": "yes"}}})
    assert _errors(spec) == []


def test_the_production_server_is_refused_as_a_scratch_server() -> None:
    same = {
        "engine": "postgresql",
        "host": "DB.prod.svc",
        "port": 5432,
        "credentialsSecretRef": {"name": "x"},
    }
    [(path, message)] = _errors(_spec(scratchDatabases=[same]))
    assert path == "spec.testRestore.scratchDatabases[0].host"
    assert "server of database source 'pg'" in message
    other_port = {**same, "port": 5433}
    assert _errors(_spec(scratchDatabases=[other_port])) == []
    [(path, message)] = _errors(_spec(scratchDatabases=[other_port, {**other_port, "host": "y"}]))
    assert path == "spec.testRestore.scratchDatabases[1].engine"
    assert "one per engine" in message


def test_a_check_needs_an_image_and_a_command() -> None:
    errors = _errors(_spec(check={"image": "busybox"}))
    assert [p for p, _ in errors] == ["spec.testRestore.check.command"]


def _policy(**test: Any) -> BackupPolicy:
    return BackupPolicy.model_validate(
        {"metadata": {"name": "app", "namespace": NS}, "spec": _spec(**test)}
    )


def _run(name: str, done: str | None, *sources: dict[str, Any]) -> dict[str, Any]:
    status: dict[str, Any] = {"sources": list(sources)}
    if done:
        status["completionTime"] = done
    return {"metadata": {"name": name}, "status": status}


def _volume(name: str, phase: str = "Succeeded", snap: str | None = "ab" * 32) -> dict[str, Any]:
    return {"name": name, "kind": "volume", "phase": phase, "snapshotId": snap}


def test_each_source_is_tested_from_the_newest_run_it_succeeded_in() -> None:
    runs = [
        _run("r1", "2026-12-01T01:00:00Z", _volume("data"), _volume("logs")),
        _run("r2", "2026-12-02T01:00:00Z", _volume("data"), _volume("logs", "Failed")),
        _run("r3", None, _volume("data")),  # still running
        _run(
            "r0",
            "2026-11-30T01:00:00Z",
            {"name": "pg", "kind": "database", "phase": "Succeeded"},
            {"name": "resources", "kind": "clusterResources", "phase": "Succeeded"},
        ),
    ]
    tested, missing = newest_backups(_policy(), runs)
    assert [(c.name, c.kind, c.run) for c in tested] == [
        ("data", "volume", "r2"),
        ("logs", "volume", "r1"),
        ("pg", "database", "r0"),
    ]
    assert missing == []
    tested, missing = newest_backups(_policy(sources=["logs", "data"]), runs[2:])
    assert tested == []
    assert missing == ["data", "logs"]


def test_the_scratch_claim_is_as_large_as_the_source_or_what_was_read() -> None:
    claim = {"spec": {"resources": {"requests": {"storage": "20Gi"}}}}
    assert scratch_size(claim, 5) == "20Gi"
    assert scratch_size(None, None) == "1Gi"
    assert scratch_size(None, 10 * 1024**3) == "12Gi"


def test_the_users_check_runs_after_the_restore_and_gets_no_secret() -> None:
    request = JobRequest(
        name="app-test-data",
        namespace=NS,
        component="test-restore",
        args=["restore", "ab" * 32, "/restore", "--verify"],
        labels={},
        owner=None,
        mounts=[
            Mount("staging", "/restore", {"emptyDir": {}}, read_only=False),
            Mount(
                "scratch",
                "/restore/volume",
                {"persistentVolumeClaim": {"claimName": "app-test-data"}},
                read_only=False,
            ),
        ],
        credentials_secret="loc-storage",
        password_secret="loc-password",
        check=CheckContainer(
            "busybox", ["sh", "-c", "test -f /scratch/a"], {"scratch": "/scratch"}
        ),
    )
    pod = build_job(request)["spec"]["template"]["spec"]
    [restore] = pod["initContainers"]
    [check] = pod["containers"]
    assert restore["name"] == "safehold"
    assert restore["args"][:4] == ["restore", "ab" * 32, "/restore", "--verify"]
    assert {m["name"] for m in restore["volumeMounts"]} >= {"storage-options", "scratch"}
    assert check["name"] == "check"
    assert check["image"] == "busybox"
    assert check["command"] == ["sh", "-c", "test -f /scratch/a"]
    mounts = {m["name"]: m for m in check["volumeMounts"]}
    assert set(mounts) == {"check-tmp", "scratch"}
    assert mounts["scratch"]["mountPath"] == "/scratch"
    assert mounts["scratch"]["readOnly"] is False
    assert "loc-storage" not in json.dumps(check)
    assert check["securityContext"]["runAsNonRoot"] is True
    assert check["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False
