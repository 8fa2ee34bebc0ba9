"""A BackupPolicy's ``verification.cron``: on that schedule, one verify Job per location of
the policy (the primary and every ``replicateTo`` site) checks the repository there.

Each Job runs ``safehold verify`` under the repository's shared lock (backups, restores
and replications go on beside it; a prune waits for it). It checks the structure (every
index, pack, snapshot and tree) and, with ``readDataPercent`` P above 0, reads and
decrypts part K of N = 100 // P parts of the packs (``--read-data-subset K/N``: the
packs whose id falls in part K, the same packs every time). K moves on by one after each
check, so N checks read every pack once. The rotation (``status.verification.nextSubset``)
and the last slot started are kept in the policy's status: a restarted operator neither
repeats a slot nor begins the rotation again, and Job names are derived from the policy,
the location and the slot, so a Job created just before a restart is found again.

The slots follow :mod:`safehold.controller.schedule` in the time zone of the policy's
schedule (UTC without one): only the latest missed slot starts. A slot that comes while
the previous check still runs is skipped; a check waits (its slot is not used up) while a
retention Job (forget and prune, exclusive lock) runs at one of the locations, and does
not start while the policy is suspended.

When every location's Job has ended, ``status.lastVerification`` gets the outcome (per
location: the damaged packs, snapshots and paths, and the repair verify suggests), the
``Verified`` condition follows, a failure posts a Warning Event, and the metrics
``safehold_verification_last_success_timestamp_seconds`` and
``safehold_verification_failures_total`` (by namespace, policy and location) move. The
operator never repairs anything itself (docs/verify.md, docs/repair.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from safehold.api import VERIFIED, BackupLocation, BackupPolicy
from safehold.api.backuppolicy import (
    BackupPolicyStatus,
    CheckResult,
    Schedule,
    ScheduleSlot,
    VerificationCheck,
    VerificationState,
)
from safehold.api.conditions import set_condition
from safehold.api.summaries import VerifySummary
from safehold.controller import commands, metrics
from safehold.controller.common import load_location, now, parse_time
from safehold.controller.jobs import (
    LABEL_LOCATION,
    LABEL_POLICY,
    JobRequest,
    build_job,
    job_name,
)
from safehold.controller.kube import ApiException
from safehold.controller.policy_jobs import policy_job
from safehold.controller.retention import active_retention_job
from safehold.controller.runtime import Runtime
from safehold.controller.schedule import due_check
from safehold.controller.status import JobOutcome

__all__ = [
    "COMPONENT_VERIFY",
    "check_message",
    "parts_of",
    "reconcile_verification",
    "rotate",
    "verify_args",
    "verify_schedule",
]

COMPONENT_VERIFY = "verify"


def parts_of(percent: int) -> int:
    """N for ``readDataPercent``: each of the N parts holds at least that share (about
    100/N percent of the packs); 0 reads no data (1, unused)."""
    return max(1, 100 // percent) if percent > 0 else 1


def rotate(part: int, parts: int) -> int:
    """The part after ``part`` (1 to ``parts``), back to 1 after the last; a stored part
    beyond a new, smaller ``parts`` starts again at 1."""
    return part + 1 if part < parts else 1


def verify_args(percent: int, part: int, parts: int) -> list[str]:
    """The ``safehold verify`` arguments of one check."""
    return commands.verify((min(part, parts), parts) if percent > 0 else None)


def verify_schedule(policy: BackupPolicy) -> Schedule | None:
    """``verification.cron`` as a one-slot schedule in the policy schedule's time zone."""
    spec = policy.spec.verification
    if spec is None or spec.cron is None:
        return None
    zone = policy.spec.schedule.time_zone if policy.spec.schedule else "UTC"
    return Schedule(time_zone=zone, slots=[ScheduleSlot(cron=spec.cron)])


def check_message(location: str, doc: VerifySummary | None, fallback: str) -> str:
    """What one location's verify found, from its JSON summary: the damaged objects
    (packs, index and snapshot objects), the damaged snapshots with their first paths,
    and the repair verify suggests."""
    if doc is None:
        return f"{location}: {fallback}"
    if doc.ok:
        return (
            f"{location}: no errors ({doc.snapshots or 0} snapshots, "
            f"{doc.packs or 0} packs, {doc.packs_read or 0} read)"
        )
    parts = [f"{name}: {why}" for name, why in list(doc.objects.items())[:5]]
    if doc.damaged_objects > len(doc.objects):
        parts.append(f"{doc.damaged_objects - len(doc.objects)} more damaged object(s)")
    for sid, item in list(doc.damaged.items())[:5]:
        paths = ", ".join(str(p) or "/" for p in (item.get("paths") or [])[:3])
        parts.append(f"snapshot {str(sid)[:12]}: {item.get('files', '?')} damaged path(s) {paths}")
    if not parts and doc.error:
        parts.append(doc.error)
    text = f"{location}: " + "; ".join(parts or [fallback])
    if doc.repair_hint:
        text += f"; {doc.repair_hint} (against BackupLocation {location}'s repository)"
    return text


def _finish(check: VerificationCheck, outcome: JobOutcome) -> None:
    doc = outcome.read(VerifySummary)
    reported = doc if outcome.summary else None
    check.completion_time = parse_time(outcome.completion_time) or now()
    check.packs_read = doc.packs_read
    check.bytes_read = doc.bytes_read
    if outcome.succeeded:
        check.result = "Succeeded"
        check.reason = None
        check.message = check_message(check.location, reported, "no errors")[:2048]
        return
    check.result = "Failed"
    error = outcome.error
    check.reason = (error.reason if error else "Error")[:128]
    fallback = error.message if error else "the verify Job failed"
    check.message = check_message(check.location, reported, fallback)[:2048]


def _request(
    rt: Runtime,
    body: Mapping[str, Any],
    policy: BackupPolicy,
    location: BackupLocation,
    name: str,
    args: list[str],
) -> JobRequest:
    labels = {
        LABEL_POLICY: policy.metadata.name or "",
        LABEL_LOCATION: location.metadata.name or "",
    }
    return policy_job(
        rt, body, policy, location, name=name, component=COMPONENT_VERIFY, args=args,
        labels=labels,
    )  # fmt: skip


def _locations(policy: BackupPolicy) -> list[str]:
    return [policy.spec.location.name, *(t.name for t in policy.spec.replicate_to)]


def _record(rt: Runtime, body: Mapping[str, Any], check: VerificationCheck) -> None:
    meta = body.get("metadata", {})
    labels = (meta.get("namespace", ""), meta.get("name", ""), check.location)
    if check.result == "Succeeded":
        when = check.completion_time or now()
        metrics.VERIFICATION_LAST_SUCCESS.labels(*labels).set(when.timestamp())
    elif check.result == "Failed":
        metrics.VERIFICATION_FAILURES.labels(*labels).inc()
        rt.kube.event(
            body, "VerificationFailed", f"{check.reason}: {check.message}"[:1024], warning=True
        )


def _conclude(
    rt: Runtime, body: Mapping[str, Any], state: VerificationState, status: BackupPolicyStatus
) -> None:
    """Every Job of the check has ended: the outcome into ``lastVerification`` and the
    ``Verified`` condition."""
    failed = [c for c in state.checks if c.result != "Succeeded"]
    ends = [c.completion_time for c in state.checks if c.completion_time]
    when = max(ends) if ends else now()
    what = f"part {state.subset} of the data" if state.subset else "the structure"
    message = "; ".join(c.message for c in (failed or state.checks))
    if not failed:
        message = f"checked {what} at every location: {message}"
    spec = body.get("spec", {}).get("verification") or {}
    status.last_verification = CheckResult(
        time=when,
        result="Failed" if failed else "Succeeded",
        message=message[:4096],
        read_data_percent=int(spec.get("readDataPercent") or 0),
        subset=state.subset,
        locations=[c.model_copy() for c in state.checks],
    )
    gen = body["metadata"].get("generation")
    status.conditions = set_condition(
        status.conditions,
        VERIFIED,
        "False" if failed else "True",
        (failed[0].reason or "Failed") if failed else "Verified",
        message[:4096],
        now=now(),
        observed_generation=gen,
    )
    if not failed:
        rt.kube.event(body, "Verified", message[:1024])


def _follow(
    rt: Runtime, body: Mapping[str, Any], state: VerificationState, status: BackupPolicyStatus
) -> bool:
    """Follow the running Jobs; True while any still runs."""
    ns = body["metadata"]["namespace"]
    running = [c for c in state.checks if c.result == "Running"]
    if not running:
        return False
    for check in running:
        job = rt.kube.get_job(ns, check.job) if check.job else None
        if job is None:
            check.result = "Failed"
            check.reason = "JobDeleted"
            check.completion_time = now()
            check.message = f"{check.location}: the verify Job {check.job} is gone"
        else:
            outcome = rt.kube.outcome_of(ns, job, check.job or "")
            if outcome.state in ("Pending", "Running"):
                continue
            _finish(check, outcome)
        _record(rt, body, check)
    if any(c.result == "Running" for c in state.checks):
        return True
    _conclude(rt, body, state, status)
    return False


def _start(
    rt: Runtime,
    body: Mapping[str, Any],
    policy: BackupPolicy,
    status: BackupPolicyStatus,
    slot: datetime,
    percent: int,
) -> None:
    state = status.verification
    assert state is not None
    ns = policy.metadata.namespace or ""
    pname = policy.metadata.name or ""
    parts = parts_of(percent)
    part = state.next_subset if state.next_subset <= parts else 1
    state.parts = parts
    state.subset = f"{part}/{parts}" if percent > 0 else None
    state.start_time = now()
    state.checks = []
    minute = str(int(slot.timestamp() // 60))
    for lname in _locations(policy):
        # never an empty message: the API client sends "" as null, which the schema refuses
        check = VerificationCheck(
            location=lname,
            job=job_name(pname, "verify", lname, minute),
            message=f"{lname}: checking {state.subset or 'the structure'}",
        )
        state.checks.append(check)
        location = load_location(rt.kube, ns, lname)
        if location is None:
            check.result = "Failed"
            check.reason = "LocationNotFound"
            check.completion_time = now()
            check.message = f"{lname}: the BackupLocation does not exist or is not valid"
            _record(rt, body, check)
            continue
        request = _request(
            rt, body, policy, location, check.job or "", verify_args(percent, part, parts)
        )
        try:
            rt.kube.create_job(build_job(request))
        except ApiException as exc:
            check.result = "Failed"
            check.reason = "JobNotCreated"
            check.completion_time = now()
            check.message = f"{lname}: the verify Job could not be created: {exc.reason}"
            _record(rt, body, check)
    state.next_subset = rotate(part, parts)
    if not any(c.result == "Running" for c in state.checks):
        _conclude(rt, body, state, status)


def reconcile_verification(
    rt: Runtime, body: Mapping[str, Any], policy: BackupPolicy, status: BackupPolicyStatus
) -> str | None:
    """Follow the running check into the status, or start one at a due slot. Returns a
    note for the Ready condition (a skipped or waiting slot), or None. The caller writes
    the status."""
    schedule = verify_schedule(policy)
    if schedule is None and status.verification is None:
        return None
    state = status.verification = status.verification or VerificationState()
    busy = _follow(rt, body, state, status)
    if schedule is None:
        if not busy:
            status.verification = None  # cron removed: its last result stays
        return None
    slot = due_check(
        schedule,
        state,
        created=parse_time(body["metadata"].get("creationTimestamp")) or now(),
        now=now(),
        suspended=policy.spec.suspend,
    )
    if slot is None:
        return None
    if busy:
        state.last_schedule_time = slot
        return (
            f"the verification slot at {slot.isoformat()} was skipped: the previous "
            "check still runs"
        )
    ns = policy.metadata.namespace or ""
    for lname in _locations(policy):
        job = active_retention_job(rt, ns, lname)
        if job is not None:
            return f"the verification waits for retention Job {job} at {lname}"
    state.last_schedule_time = slot
    assert policy.spec.verification is not None
    _start(rt, body, policy, status, slot, policy.spec.verification.read_data_percent)
    return None
