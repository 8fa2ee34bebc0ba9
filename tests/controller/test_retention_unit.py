"""A policy's retention without a cluster: the forget arguments, the retention Job (built
by the same helpers as every Job), its outcome in ``status.lastRetention``, and when the
operator starts one (after a newer successful run, never two at once, not while a run of
the policy is active, a failure only retried after the next successful run)."""

from __future__ import annotations

from typing import Any

import pytest

from safehold.api import BackupLocation, BackupPolicy, ErrorDetail
from safehold.api.backuppolicy import BackupPolicyStatus, Retention, RetentionResult
from safehold.controller import metrics
from safehold.controller.jobs import JobImage, job_name
from safehold.controller.retention import (
    reconcile_retention,
    retention_args,
    retention_result,
)
from safehold.controller.runtime import Runtime
from safehold.controller.sources import policy_prefix
from safehold.controller.status import JobOutcome
from testground.fakekube import FakeKube

NS = "prod"


def test_forget_arguments_of_a_retention() -> None:
    retention = Retention.model_validate(
        {"keepLast": 3, "keepDaily": 7, "keepWeekly": 0, "keepWithin": "12h", "keepTags": ["a"]}
    )
    assert policy_prefix(NS, "app") == "prod/app/"
    assert retention_args(retention, time_zone="Europe/Berlin", prefix="prod/app/") == [
        "forget", "--source-prefix", "prod/app/", "--keep-last", "3", "--keep-daily", "7",
        "--keep-within", "12h", "--keep-tag", "a", "--time-zone", "Europe/Berlin",
    ]  # fmt: skip


def _policy(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "safehold.io/v1alpha1",
        "kind": "BackupPolicy",
        "metadata": {"name": "app", "namespace": NS, "uid": "uid-pol", "generation": 1},
        "spec": {
            "location": {"name": "loc"},
            "sources": {"volumes": [{"claimName": "data"}]},
            "retention": {"keepLast": 2},
            **spec,
        },
    }


def _location() -> dict[str, Any]:
    return BackupLocation.model_validate(
        {
            "metadata": {"name": "loc", "namespace": NS},
            "spec": {
                "provider": "s3",
                "bucket": "backups",
                "credentialsSecretRef": {"name": "s3-creds"},
                "repositoryPasswordSecretRef": {"name": "repo-pw"},
            },
        }
    ).model_dump(mode="json", by_alias=True, exclude_none=True)


def _run(name: str, phase: str = "Succeeded", minute: int = 0) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if phase in ("Succeeded", "Failed"):
        status["completionTime"] = f"2026-11-26T10:{minute:02d}:00Z"
    return {"metadata": {"name": name}, "status": status}


def _pass(
    rt: Runtime, body: dict[str, Any], status: BackupPolicyStatus, runs: list[dict[str, Any]]
) -> None:
    policy = BackupPolicy.model_validate(body)
    active = [r for r in runs if r["status"]["phase"] in ("Pending", "Running")]
    reconcile_retention(rt, body, policy, status, runs, active)


@pytest.fixture
def rt() -> Runtime:
    kube = FakeKube({("backuplocations", "loc"): _location()})
    return Runtime(kube, image=JobImage("safehold:test"), retention_lock_wait=120)  # type: ignore[arg-type]


def test_the_retention_job_is_built_like_every_job(rt: Runtime) -> None:
    body = _policy(
        schedule={"timeZone": "Asia/Kolkata", "slots": [{"cron": "0 2 * * *"}]},
        job={"nodeSelector": {"disk": "ssd"}, "backoffLimit": 3},
    )
    status = BackupPolicyStatus()
    _pass(rt, body, status, [_run("r1")])
    kube: FakeKube = rt.kube  # type: ignore[assignment]
    [job] = kube.created
    meta, spec = job["metadata"], job["spec"]
    assert meta["labels"]["app.kubernetes.io/component"] == "retention"
    assert meta["labels"]["safehold.io/policy"] == "app"
    assert meta["labels"]["safehold.io/run"] == "r1"
    assert meta["ownerReferences"][0]["kind"] == "BackupPolicy"
    assert meta["ownerReferences"][0]["uid"] == "uid-pol"
    assert spec["backoffLimit"] == 0  # retried after the next run, not by the Job
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod
    assert pod["nodeSelector"] == {"disk": "ssd"}
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    args = container["args"]
    assert args[:5] == ["forget", "--source-prefix", "prod/app/", "--keep-last", "2"]
    assert args[args.index("--time-zone") + 1] == "Asia/Kolkata"  # the schedule's zone
    assert "--prune" in args
    assert args[args.index("--lock-wait") + 1] == "120"
    assert args[args.index("--options-dir") + 1] == "/etc/safehold/storage"
    assert args[-3:] == ["--json", "--termination-log", "/dev/termination-log"]
    assert "repo-pw" not in args
    assert status.last_retention is not None
    assert status.last_retention.run == "r1"
    assert status.last_retention.result == "Running"
    assert status.last_retention.job == meta["name"]


def test_one_job_at_a_time_then_the_outcome_then_only_a_newer_run(rt: Runtime) -> None:
    kube: FakeKube = rt.kube  # type: ignore[assignment]
    body = _policy()
    status = BackupPolicyStatus()
    runs = [_run("r1", minute=1)]
    _pass(rt, body, status, runs)
    assert len(kube.created) == 1
    runs.append(_run("r2", minute=2))
    _pass(rt, body, status, runs)  # r2 succeeded while r1's retention runs: wait for it
    assert len(kube.created) == 1
    job = status.last_retention.job if status.last_retention else ""
    assert job
    summary = (
        '{"ok": true, "snapshots": 5, "keep": 2, "forget": 3, "removed": 3, "locked": 0, '
        '"prune": {"bytes_freed": 3145728, "deferred": ""}}'
    )
    kube.finish(job, True, summary)
    _pass(rt, body, status, runs)
    last = status.last_retention
    assert last is not None
    assert (last.result, last.snapshots_kept, last.snapshots_forgotten) == ("Succeeded", 2, 3)
    assert last.bytes_freed == 3145728
    assert last.message == "kept 2 and forgot 3 snapshot(s); prune freed 3.0 MiB"
    assert kube.events[-1][0] == "RetentionApplied"
    _pass(rt, body, status, runs)  # now for r2, the newest successful run
    assert len(kube.created) == 2
    assert status.last_retention is not None
    assert status.last_retention.run == "r2"


def _metric(name: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, {"namespace": NS, "policy": "app", **labels})
    return value or 0.0


def test_a_finished_retention_is_counted_once(rt: Runtime) -> None:
    kube: FakeKube = rt.kube  # type: ignore[assignment]
    body = _policy()
    status = BackupPolicyStatus()
    runs = [_run("r1", minute=1)]
    before = (
        _metric("safehold_retentions_total", result="Succeeded"),
        _metric("safehold_retention_snapshots_forgotten_total"),
        _metric("safehold_retention_bytes_freed_total"),
    )
    _pass(rt, body, status, runs)
    _pass(rt, body, status, runs)  # still running: nothing counted
    assert _metric("safehold_retentions_total", result="Succeeded") == before[0]
    job = status.last_retention.job if status.last_retention else ""
    summary = '{"ok": true, "keep": 2, "removed": 3, "prune": {"bytes_freed": 1000}}'
    kube.finish(job, True, summary)
    for _ in range(3):  # the outcome is recorded once, however many passes follow
        _pass(rt, body, status, runs)
    after = (
        _metric("safehold_retentions_total", result="Succeeded"),
        _metric("safehold_retention_snapshots_forgotten_total"),
        _metric("safehold_retention_bytes_freed_total"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 3, 1000]


def test_not_while_a_run_of_the_policy_is_active_nor_without_retention(rt: Runtime) -> None:
    kube: FakeKube = rt.kube  # type: ignore[assignment]
    status = BackupPolicyStatus()
    _pass(rt, _policy(), status, [_run("r1"), _run("r2", "Running")])
    _pass(rt, _policy(retention=None), status, [_run("r1")])
    _pass(rt, _policy(), status, [_run("r1", "Failed")])
    assert kube.created == []
    assert status.last_retention is None


def test_a_locked_repository_fails_the_retention_only_until_the_next_run(rt: Runtime) -> None:
    kube: FakeKube = rt.kube  # type: ignore[assignment]
    body = _policy()
    status = BackupPolicyStatus()
    runs = [_run("r1", minute=1)]
    _pass(rt, body, status, runs)
    job = status.last_retention.job if status.last_retention else ""
    error = "s3://b/repo: the repository is locked (shared lock by backup ...) (still locked"
    kube.finish(job, False, f'{{"ok": false, "error": "{error}", "exit_code": 11}}', 11)
    _pass(rt, body, status, runs)
    last = status.last_retention
    assert last is not None
    assert (last.result, last.reason) == ("Failed", "RepositoryLocked")
    assert "tried again after the next successful run" in last.message
    assert kube.events[-1][0] == "RetentionFailed"
    assert kube.events[-1][2] is True
    _pass(rt, body, status, runs)
    assert len(kube.created) == 1  # not retried for the same run
    runs.append(_run("r2", minute=2))
    _pass(rt, body, status, runs)
    assert len(kube.created) == 2


def test_a_lost_job_is_started_again_under_its_name(rt: Runtime) -> None:
    kube: FakeKube = rt.kube  # type: ignore[assignment]
    name = job_name("app", "retention", "r1")
    status = BackupPolicyStatus(
        last_retention=RetentionResult(run="r1", job=name, result="Running")
    )
    _pass(rt, _policy(), status, [_run("r1")])
    assert [j["metadata"]["name"] for j in kube.created] == [name]


def test_outcomes() -> None:
    base = RetentionResult(run="r", job="j", result="Running")
    waiting = retention_result(base, JobOutcome("Pending", waiting="CreateContainerConfigError: x"))
    assert waiting.result == "Running"
    assert "does not start" in waiting.message
    partial = retention_result(
        base,
        JobOutcome(
            "Failed",
            summary={"ok": False, "keep": 4, "removed": 2, "locked": 1, "exit_code": 11},
            error=ErrorDetail(reason="RepositoryLocked", message="forget done, prune not run"),
        ),
    )
    assert (partial.result, partial.reason) == ("Failed", "RepositoryLocked")
    assert (partial.snapshots_kept, partial.snapshots_forgotten, partial.snapshots_locked) == (
        4,
        2,
        1,
    )
    assert partial.bytes_freed is None
    dead = retention_result(base, JobOutcome("Failed"))
    assert dead.reason == "Error"


def test_a_run_already_deleted_by_the_history_limit_still_counts(rt: Runtime) -> None:
    kube: FakeKube = rt.kube  # type: ignore[assignment]
    status = BackupPolicyStatus(last_successful_run="r9")
    _pass(rt, _policy(), status, [])
    assert [j["metadata"]["labels"]["safehold.io/run"] for j in kube.created] == ["r9"]
