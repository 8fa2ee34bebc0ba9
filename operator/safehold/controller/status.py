"""From Jobs and their pods to status: outcomes, source results, phases and conditions.

Pure functions over the JSON the apiserver returns, so they are unit-tested without a
cluster. A Job's result comes from its pod's termination message, which holds the
``safehold --json`` summary (the CLI writes it to ``--termination-log``); when the
process died before writing it, ``FallbackToLogsOnError`` puts the log's tail there and
the last JSON line or the last text line is used instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar, cast

from pydantic import ValidationError

from safehold.api import COMPLETE, FAILED, Condition, ErrorDetail, SourceResult, set_condition
from safehold.api.enums import BackupType, RunPhase
from safehold.api.summaries import BackupSummary, JobSummary
from safehold.controller.jobs import JOB_CONTAINER

__all__ = [
    "FINAL_PHASES",
    "JobOutcome",
    "complete_conditions",
    "error_reason",
    "job_outcome",
    "last_json_object",
    "parse_summary",
    "run_phase",
    "source_result",
]

log = logging.getLogger(__name__)
S = TypeVar("S", bound=JobSummary)
FINAL_PHASES = frozenset({"Succeeded", "PartiallyFailed", "Failed"})
JobState = Literal["Pending", "Running", "Succeeded", "Failed"]

#: The CLI's exit codes (docs/cli.md) as the CamelCase reasons of status errors.
_EXIT_REASONS = {
    1: "Error",
    2: "InvalidArguments",
    3: "FilesUnreadable",
    4: "RepositoryDamaged",
    10: "RepositoryNotFound",
    11: "RepositoryLocked",
    12: "WrongPassword",
    13: "UnsupportedRepository",
    130: "Interrupted",
    137: "Killed",
}
#: Waiting reasons of a container that will not start without a fix (a missing Secret,
#: a missing image): reported at once, with the kubelet's message.
_STUCK = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
    }
)


def error_reason(exit_code: int | None) -> str:
    return _EXIT_REASONS.get(exit_code or 1, "Error")


def last_json_object(text: str, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    """The last line of ``text`` that is a JSON object ``wanted`` accepts, or None (a Job's
    output mixes such lines with plain text)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and wanted(doc):
            return doc
    return None


def parse_summary(message: str | None) -> dict[str, Any] | None:
    """The last line of ``message`` that is a JSON object with ``ok``, or None."""
    return last_json_object(message or "", lambda doc: "ok" in doc)


@dataclass
class JobOutcome:
    """What a Job has come to: its state, the CLI's summary, and why it failed."""

    state: JobState
    summary: dict[str, Any] | None = None
    error: ErrorDetail | None = None
    start_time: str | None = None
    completion_time: str | None = None
    waiting: str | None = None  # why the pod does not start (a missing Secret, ...)
    #: ``waiting`` may pass without a fix: no node can take the pod yet (one may be added).
    waiting_may_pass: bool = False
    running_pod: str | None = None
    warnings: list[str] = field(default_factory=list)

    def read(self, model: type[S]) -> S:
        """The summary as ``model`` (api.summaries): every field defaulted without one,
        or when it does not parse (logged)."""
        try:
            return model.model_validate(self.summary or {})
        except ValidationError as exc:
            log.warning("a Job's summary does not parse as %s: %s", model.__name__, exc)
            return model()

    @property
    def succeeded(self) -> bool:
        """The Job succeeded and its summary, if any, says ``ok``."""
        return self.state == "Succeeded" and (self.summary is None or self.read(JobSummary).ok)


def _terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The terminated state of the pod's Job container (``safehold``; a backup's hooks
    container ends first, and the kubelet lists containers by name; a test restore's runs
    as an init container before the user's check), else of any."""
    pstatus = pod.get("status", {})
    statuses = [
        *(pstatus.get("containerStatuses") or []),
        *(pstatus.get("initContainerStatuses") or []),
    ]
    ordered = sorted(statuses, key=lambda s: s.get("name") != JOB_CONTAINER)
    for status in ordered:
        term = (status.get("state") or {}).get("terminated")
        if term:
            return dict(term)
    return None


def _waiting(pods: Sequence[Mapping[str, Any]]) -> tuple[str, bool] | None:
    """Why the newest pod that cannot start cannot, and whether that may pass without a
    fix: a container the kubelet will not start without one (no), or no node the scheduler
    may put the pod on (a node selector nothing matches, requests no node has room for:
    yes, a node may be added)."""
    for pod in reversed(pods):
        pstatus = pod.get("status", {})
        for status in pstatus.get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in _STUCK:
                why = waiting.get("message") or "see the pod events"
                return f"{waiting['reason']}: {why}", False
        for c in pstatus.get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable":
                return f"Unschedulable: {c.get('message') or 'no node can take the pod'}", True
    return None


def _name(job: Mapping[str, Any]) -> str:
    return str((job.get("metadata") or {}).get("name", ""))


def _text_tail(message: str) -> str:
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    return lines[-1][:1000] if lines else ""


def job_outcome(job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> JobOutcome:
    """The outcome of ``job`` (None: not created yet) given its pods (oldest first)."""
    if job is None:
        return JobOutcome("Pending")
    jstatus = job.get("status") or {}
    conds = {c["type"]: c for c in jstatus.get("conditions") or [] if c.get("status") == "True"}
    finished = [(p, t) for p in pods if (t := _terminated(p)) is not None]
    last = finished[-1] if finished else None
    summary = parse_summary(str(last[1].get("message") or "")) if last else None
    out = JobOutcome(
        "Pending",
        summary=summary,
        start_time=jstatus.get("startTime"),
        completion_time=jstatus.get("completionTime"),
    )
    if "Complete" in conds:
        out.state = "Succeeded"
        out.completion_time = out.completion_time or conds["Complete"].get("lastTransitionTime")
        if summary is None:  # what it did is unknown: never a success that made nothing
            out.state = "Failed"
            out.error = ErrorDetail(
                reason="NoReport",
                message="the Job completed without its report (its pod's termination message "
                f"is empty or gone): what it did is unknown; see kubectl logs job/{_name(job)}",
            )
        return out
    if "Failed" in conds:
        out.state = "Failed"
        out.completion_time = conds["Failed"].get("lastTransitionTime")
        job_reason = conds["Failed"].get("reason") or "Failed"
        reported = out.read(JobSummary)
        if reported.error:
            reason = reported.reason or error_reason(reported.exit_code)
            out.error = ErrorDetail(reason=reason, message=reported.error)
        elif job_reason == "DeadlineExceeded":
            out.error = ErrorDetail(
                reason="DeadlineExceeded",
                message="the Job ran longer than its activeDeadlineSeconds: raise "
                "spec.job.activeDeadlineSeconds or back up less per run",
            )
        else:
            code = int(last[1].get("exitCode", 1)) if last else None
            text = _text_tail(str(last[1].get("message") or "")) if last else ""
            out.error = ErrorDetail(
                reason=error_reason(code) if last else job_reason,
                message=text or conds["Failed"].get("message") or f"the Job failed ({job_reason})",
            )
        return out
    running = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
    if running:
        out.state = "Running"
        out.running_pod = running[-1]["metadata"]["name"]
    elif jstatus.get("active"):
        out.state = "Running" if out.start_time else "Pending"
    waiting = _waiting(pods)
    if waiting is not None:
        out.waiting, out.waiting_may_pass = waiting
    return out


def source_result(base: SourceResult, outcome: JobOutcome) -> SourceResult:
    """``base`` (name, kind, job) updated with what the Job reported."""
    result = base.model_copy(deep=True)
    if outcome.start_time:
        result.start_time = datetime.fromisoformat(outcome.start_time.replace("Z", "+00:00"))
    if outcome.state in ("Pending", "Running"):
        result.phase = outcome.state
        if outcome.waiting:
            result.error = ErrorDetail(reason="PodNotStarting", message=outcome.waiting[:4000])
        return result
    if outcome.completion_time:
        result.completion_time = datetime.fromisoformat(
            outcome.completion_time.replace("Z", "+00:00")
        )
    doc = outcome.read(BackupSummary)
    if doc.snapshot:
        _record_backup(result, base, doc)
        return result
    result.phase = "Failed" if outcome.state == "Failed" else "Succeeded"
    result.error = outcome.error
    return result


def _record_backup(result: SourceResult, base: SourceResult, doc: BackupSummary) -> None:
    """What a backup Job that made a snapshot reported, into ``result``."""
    result.snapshot_id = doc.snapshot
    result.parent_snapshot_id = doc.parent or None
    if doc.type in ("full", "incremental", "differential"):
        result.type = cast(BackupType, doc.type)
    result.files = doc.total_files
    result.bytes_read = doc.bytes_read
    result.bytes_new = doc.bytes_new
    result.bytes_stored = doc.bytes_stored
    result.duration_seconds = doc.duration_s
    result.errors = doc.errors or None
    result.cpu_seconds = doc.cpu_seconds
    result.peak_memory_bytes = doc.peak_memory_bytes
    # the controller's own warnings (e.g. SnapshotUnsupported) stay, the Job's follow
    read = [f"{e.path}: {e.error}" for e in doc.error_list]
    result.warnings = [*base.warnings, *read][:32]
    result.phase = "Succeeded"
    result.error = None
    if doc.errors:
        result.error = ErrorDetail(
            reason="FilesUnreadable",
            message=f"{doc.errors} file(s) could not be read and are not in the "
            "snapshot (see warnings): make them readable to the Job's non-root user, or "
            "let the policy's volume Jobs run as root (spec.job.runAsRoot)",
        )
    if doc.verify is not None:  # backup --verify (verification.afterBackup)
        result.verified = doc.verify.ok
        if not result.verified:
            result.phase = "Failed"
            result.error = ErrorDetail(
                reason="SnapshotDamaged",
                message=(doc.verify.message or "the new snapshot is damaged")[:4000],
            )


def run_phase(sources: Sequence[SourceResult]) -> RunPhase:
    """The run's phase from its sources: final only when every source is."""
    phases = [s.phase for s in sources]
    if any(p in ("Pending", "Running") for p in phases):
        return "Running" if any(p != "Pending" for p in phases) else "Pending"
    good = [s for s in sources if s.phase == "Succeeded" and s.error is None]
    bad = [s for s in sources if s.phase == "Failed" or (s.phase == "Succeeded" and s.error)]
    if not bad:
        return "Succeeded"
    if good or any(s.phase == "Succeeded" for s in sources):
        return "PartiallyFailed"
    return "Failed"


def complete_conditions(
    conditions: Sequence[Condition],
    phase: RunPhase,
    message: str,
    *,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """Complete and Failed for ``phase``: Complete=True once final; Failed=True when some
    or all work failed (so ``kubectl wait --for=condition=Failed`` works as well)."""
    final = phase in FINAL_PHASES
    conds = set_condition(
        conditions,
        COMPLETE,
        "True" if final else "False",
        phase,
        message if final else f"the run is {phase.lower()}",
        now=now,
        observed_generation=generation,
    )
    failed = phase in ("Failed", "PartiallyFailed")
    return set_condition(
        conds,
        FAILED,
        "True" if failed else "False",
        phase if failed else "NoFailure",
        message if failed else "nothing has failed",
        now=now,
        observed_generation=generation,
    )
