"""From Jobs, pods and termination messages to status: pure mapping functions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from safehold.api import ErrorDetail, SourceResult
from safehold.controller.kube import Kube
from safehold.controller.progress import last_progress_event, to_progress
from safehold.controller.status import job_outcome, parse_summary, run_phase, source_result

BACKUP_SUMMARY = {
    "ok": True, "snapshot": "a" * 64, "source": "ns/pol/data", "type": "incremental",
    "parent": "b" * 64, "total_files": 12, "bytes_read": 5000, "bytes_new": 4000,
    "bytes_stored": 3000, "duration_s": 1.5, "errors": 0, "error_list": [], "exit_code": 0,
}  # fmt: skip


def _job(condition: str | None, reason: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"startTime": "2026-11-26T06:00:00Z"}
    if condition:
        status["conditions"] = [
            {"type": condition, "status": "True", "reason": reason,
             "lastTransitionTime": "2026-11-26T06:01:00Z"}
        ]  # fmt: skip
        if condition == "Complete":
            status["completionTime"] = "2026-11-26T06:01:00Z"
    else:
        status["active"] = 1
    return {"metadata": {"name": "j"}, "status": status}


def _pod(
    message: str | None = None, exit_code: int = 0, phase: str = "Succeeded"
) -> dict[str, Any]:
    state: dict[str, Any] = (
        {"terminated": {"exitCode": exit_code, "message": message}}
        if message is not None
        else {"running": {}}
    )
    return {
        "metadata": {"name": "j-abc", "creationTimestamp": "2026-11-26T06:00:00Z"},
        "status": {"phase": phase, "containerStatuses": [{"name": "safehold", "state": state}]},
    }


def test_a_job_that_completed_without_its_report_failed_with_reason_no_report() -> None:
    """An exit 0 with an empty termination message (a file the CLI could not write, a pod
    gone) is no proof of a backup: never a Succeeded source without a snapshot."""
    for pods in ([_pod("")], []):
        outcome = job_outcome(_job("Complete"), pods)
        assert outcome.state == "Failed"
        assert not outcome.succeeded
        result = source_result(SourceResult(name="data", kind="volume", job="j"), outcome)
        assert result.phase == "Failed"
        assert result.snapshot_id is None
        assert result.error is not None
        assert result.error.reason == "NoReport"
        assert "kubectl logs job/j" in result.error.message


def test_summary_is_the_last_json_line() -> None:
    assert parse_summary('noise\n{"ok": true, "x": 1}\n') == {"ok": True, "x": 1}
    assert parse_summary("Traceback\nMemoryError") is None
    assert parse_summary('{"event": "progress"}') is None


def test_success_maps_every_figure() -> None:
    outcome = job_outcome(_job("Complete"), [_pod(json.dumps(BACKUP_SUMMARY))])
    assert outcome.state == "Succeeded"
    result = source_result(SourceResult(name="data", kind="volume", job="j"), outcome)
    assert result.phase == "Succeeded"
    assert result.snapshot_id == "a" * 64
    assert result.parent_snapshot_id == "b" * 64
    assert result.type == "incremental"
    assert (result.files, result.bytes_read, result.bytes_new, result.bytes_stored) == (
        12, 5000, 4000, 3000,
    )  # fmt: skip
    assert result.duration_seconds == 1.5
    assert result.completion_time == datetime(2026, 11, 26, 6, 1, tzinfo=UTC)
    assert result.error is None


def test_cli_error_becomes_a_reason_and_message() -> None:
    doc = {"ok": False, "error": "wrong password: no key opens the repository", "exit_code": 12}
    outcome = job_outcome(
        _job("Failed", "BackoffLimitExceeded"), [_pod(json.dumps(doc), exit_code=12)]
    )
    result = source_result(SourceResult(name="data", kind="volume"), outcome)
    assert result.phase == "Failed"
    assert result.error is not None
    assert result.error.reason == "WrongPassword"
    assert "wrong password" in result.error.message


def test_a_killed_process_falls_back_to_the_log_tail() -> None:
    outcome = job_outcome(
        _job("Failed", "BackoffLimitExceeded"),
        [_pod("Traceback (most recent call last):\nMemoryError: out of memory", exit_code=137)],
    )
    assert outcome.error is not None
    assert outcome.error.reason == "Killed"
    assert outcome.error.message == "MemoryError: out of memory"


def test_deadline_says_what_to_raise() -> None:
    outcome = job_outcome(_job("Failed", "DeadlineExceeded"), [])
    assert outcome.error is not None
    assert outcome.error.reason == "DeadlineExceeded"
    assert "activeDeadlineSeconds" in outcome.error.message


def test_unreadable_files_keep_the_snapshot_and_warn() -> None:
    doc = {**BACKUP_SUMMARY, "ok": False, "errors": 2, "exit_code": 3,
           "error_list": [{"path": "a/secret", "error": "Permission denied"}]}  # fmt: skip
    outcome = job_outcome(_job("Failed", "BackoffLimitExceeded"), [_pod(json.dumps(doc), 3)])
    result = source_result(SourceResult(name="data", kind="volume"), outcome)
    assert result.phase == "Succeeded"
    assert result.snapshot_id == "a" * 64
    assert result.warnings == ["a/secret: Permission denied"]
    assert result.error is not None
    assert result.error.reason == "FilesUnreadable"
    assert run_phase([result]) == "PartiallyFailed"


def test_a_pod_that_cannot_start_is_reported_while_pending() -> None:
    pod = {
        "metadata": {"name": "j-abc"},
        "status": {
            "phase": "Pending",
            "containerStatuses": [
                {"state": {"waiting": {"reason": "CreateContainerConfigError",
                                       "message": 'secret "loc-storage" not found'}}}
            ],
        },
    }  # fmt: skip
    outcome = job_outcome(_job(None), [pod])
    assert outcome.state in ("Pending", "Running")
    assert outcome.waiting is not None
    assert 'secret "loc-storage" not found' in outcome.waiting


def test_a_pod_no_node_can_take_is_reported_as_one_that_may_pass() -> None:
    why = "0/3 nodes are available: 3 Insufficient memory."
    pod = {
        "metadata": {"name": "j-1"},
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False",
                            "reason": "Unschedulable", "message": why}],
        },
    }  # fmt: skip
    outcome = job_outcome(_job(None), [pod])
    assert outcome.waiting == f"Unschedulable: {why}"
    assert outcome.waiting_may_pass is True
    shown = source_result(SourceResult(name="data", kind="volume"), outcome)
    assert shown.phase in ("Pending", "Running")
    assert shown.error == ErrorDetail(reason="PodNotStarting", message=outcome.waiting)


def test_run_phase_from_sources() -> None:
    ok = SourceResult(name="a", kind="volume", phase="Succeeded")
    bad = SourceResult(name="b", kind="volume", phase="Failed")
    skipped = SourceResult(name="c", kind="database", phase="Skipped")
    running = SourceResult(name="d", kind="volume", phase="Running")
    pending = SourceResult(name="e", kind="volume", phase="Pending")
    assert run_phase([ok, skipped]) == "Succeeded"
    assert run_phase([ok, bad]) == "PartiallyFailed"
    assert run_phase([bad]) == "Failed"
    assert run_phase([ok, running]) == "Running"
    assert run_phase([pending]) == "Pending"


def test_progress_from_the_log_tail() -> None:
    lines = "\n".join(
        [
            '{"event": "progress", "bytes_done": 10, "bytes_total": 100, "files_done": 1,'
            ' "eta_s": 9.0}',
            "a warning line",
            '{"event": "progress", "bytes_done": 50, "bytes_total": 200, "files_done": 5,'
            ' "eta_s": 30.0}',
        ]
    )
    event = last_progress_event(lines)
    assert event is not None
    now = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    p = to_progress(event, now)
    assert (p.bytes_done, p.bytes_total, p.files_done, p.percent) == (50, 200, 5, 25)
    assert p.eta == datetime(2026, 11, 26, 6, 0, 30, tzinfo=UTC)
    unknown = to_progress({"event": "progress", "bytes_done": 5, "bytes_total": None}, now)
    assert unknown.percent is None


class _Refusing:
    """A Kube whose Job has the given pods, and whose pods the apiserver refuses."""

    outcome_of = Kube.outcome_of

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods
        self.asked = 0

    def job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        return self.pods

    def pods_refused(self, namespace: str, job: str) -> str | None:
        self.asked += 1
        return 'pods "j-" is forbidden: exceeded quota: compute'


def test_a_job_without_pods_says_why_they_were_refused() -> None:
    kube = _Refusing([])
    outcome = kube.outcome_of("ns", {"status": {}}, "j")
    assert outcome.state == "Pending"
    assert outcome.waiting == 'FailedCreate: pods "j-" is forbidden: exceeded quota: compute'
    assert source_result(SourceResult(name="data", kind="volume"), outcome).error == ErrorDetail(
        reason="PodNotStarting", message=outcome.waiting
    )


def test_the_refusals_are_asked_only_of_a_job_with_no_pod_and_no_end() -> None:
    running = _Refusing([{"metadata": {"name": "j-1"}, "status": {"phase": "Running"}}])
    assert running.outcome_of("ns", {"status": {"active": 1}}, "j").waiting is None
    done = _Refusing([])
    complete = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert done.outcome_of("ns", complete, "j").waiting is None
    assert done.outcome_of("ns", None, "j").state == "Pending"  # not created yet
    assert (running.asked, done.asked) == (0, 0)
