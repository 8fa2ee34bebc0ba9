"""A BackupPolicy's ``replicateTo``: after each successful run, copy the policy's
snapshots to every recovery site, then apply the site's own retention there.

The operator never opens a repository: per site, one Job runs ``safehold replicate
--source-prefix <namespace>/<policy>/ --only-newer --to SITE`` with the primary's and
the site's Secrets mounted as files (each location's own credentials and password). The
copy is hash-verified and resumable (docs/replication.md): a failed or killed attempt
leaves a valid site, and the next attempt copies only what is missing.

Order, per successful run (the policy's newest): the primary's retention Job first (if
the policy has ``retention``), because it may forget snapshots that need not travel; then
one replication Job per site, all sites at once; then, per site whose copy succeeded, the
site's retention Job (``replicateTo[].retention``, else the policy's ``retention``).
Replication takes shared locks at both ends, so a backup of the next run may start
while it copies; a retention at the primary (exclusive lock) waits for it (see
safehold.controller.retention), and no replication to a site starts while the site's
retention runs.

State lives in ``status.replication`` of the policy (one entry per site) and in
``status.replication`` and the ``Replicated`` condition of the run being copied, so a
restart loses nothing. A failed attempt is retried with a bounded back-off (30 s,
doubling, at most 10 min apart, at most :data:`MAX_ATTEMPTS` attempts); after that, the
next successful run's replication catches up, because ``replicate`` copies everything
of the policy the site lacks. A failure never changes the run's phase: it shows in the
run's ``Replicated`` condition (False, naming the site and the cause), a Warning Event
and the policy's status and ``Replicated`` condition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from safehold.api import (
    AVAILABLE,
    REPLICATED,
    BackupLocation,
    BackupPolicy,
    BackupRunStatus,
    ErrorDetail,
    ReplicationResult,
    find_condition,
    set_condition,
)
from safehold.api.backuppolicy import (
    BackupPolicyStatus,
    ReplicationTarget,
    SiteReplication,
)
from safehold.api.conditions import ConditionStatus
from safehold.api.summaries import ReplicateSummary
from safehold.controller import commands, metrics
from safehold.controller.common import load_location, now, parse_time, write_status
from safehold.controller.identity import account_problem
from safehold.controller.jobs import (
    COMPONENT_REPLICATE,
    LABEL_LOCATION,
    LABEL_POLICY,
    LABEL_RUN,
    LABEL_SITE,
    JobRequest,
    build_job,
    job_name,
    with_settings,
)
from safehold.controller.kube import ApiException
from safehold.controller.repository import with_repository, with_site
from safehold.controller.retention import (
    follow_site_retention,
    newest_success,
    start_site_retention,
)
from safehold.controller.runtime import Runtime
from safehold.controller.sources import policy_prefix
from safehold.controller.status import JobOutcome

__all__ = [
    "MAX_ATTEMPTS",
    "backoff",
    "copy_failure",
    "reconcile_replication",
    "site_available",
    "site_hint",
    "site_problem",
    "site_request",
]

#: Attempts per run and site; the next successful run's replication catches up after.
MAX_ATTEMPTS = 5
_FIRST_BACKOFF = 30.0
_MAX_BACKOFF = 600.0
_BACKUP_RUNS = "backupruns"


def backoff(attempts: int) -> timedelta:
    """The wait before attempt ``attempts + 1``: 30 s, doubling, at most 10 min."""
    return timedelta(seconds=min(_MAX_BACKOFF, _FIRST_BACKOFF * 2 ** max(0, attempts - 1)))


def _same_storage(a: BackupLocation, b: BackupLocation) -> bool:
    sa, sb = a.spec, b.spec
    return (sa.provider, sa.bucket, sa.claim_name, sa.prefix.strip("/"), sa.endpoint or "") == (
        sb.provider,
        sb.bucket,
        sb.claim_name,
        sb.prefix.strip("/"),
        sb.endpoint or "",
    )


def site_problem(
    field: str, name: str, site: BackupLocation | None, primary: BackupLocation | None
) -> tuple[str, str] | None:
    """Why ``site`` (named in ``field``) cannot be a recovery site of a policy whose
    primary is ``primary``, as (reason, message); None when it can."""
    if site is None:
        return (
            "SiteNotFound",
            f"{field}: BackupLocation {name!r} does not exist: create it (role recovery-site) "
            "or remove it from replicateTo",
        )
    if site.spec.role != "recovery-site":
        return (
            "SiteNotRecoverySite",
            f"{field}: BackupLocation {name} has role {site.spec.role}: a replicateTo target "
            "must have role recovery-site (it is written only by replication)",
        )
    if primary is not None and _same_storage(site, primary):
        return (
            "SiteIsPrimary",
            f"{field}: BackupLocation {name} points at the same storage as the policy's "
            f"location {primary.metadata.name}: a recovery site must be another bucket, "
            "prefix or provider",
        )
    return None


def site_available(location: BackupLocation) -> tuple[ConditionStatus, str]:
    """The site's ``Available`` condition: its status, and why, for a message."""
    cond = find_condition(location.status.conditions if location.status else [], AVAILABLE)
    if cond is None:
        return "Unknown", "it has not been checked yet"
    return cond.status, f"{cond.reason}: {cond.message}"


def site_request(
    rt: Runtime,
    body: Mapping[str, Any],
    policy: BackupPolicy,
    primary: BackupLocation,
    site: BackupLocation,
    *,
    name: str,
    component: str,
    args: list[str],
    labels: Mapping[str, str],
) -> JobRequest:
    """The Job ``name`` of ``policy`` running ``safehold ARGS`` (a ``replicate``) from
    ``primary`` to ``site``, with both locations' Secrets as files: the runs' replication
    and the WAL archive's copies (walsites.py)."""
    request = JobRequest(
        name=name,
        namespace=policy.metadata.namespace or "",
        component=component,
        args=args,
        labels={
            **labels,
            LABEL_POLICY: policy.metadata.name or "",
            LABEL_LOCATION: primary.metadata.name or "",
            LABEL_SITE: site.metadata.name or "",
        },
        owner=body,
        image=rt.image,
    )
    request = with_site(with_repository(request, primary), site)
    request = with_settings(request, rt.job_settings(policy.spec.job))
    # Retried by the controller, not by the Job controller at once.
    return replace(request, backoff_limit=0)


def _site_newest(doc: ReplicateSummary) -> datetime | None:
    times = [t for t in (parse_time(v) for v in doc.site_newest.values()) if t]
    return max(times) if times else None


def copy_failure(outcome: JobOutcome, doc: ReplicateSummary) -> tuple[str, str]:
    """Why a ``safehold replicate`` Job failed, as (reason, cause): PrimaryDamaged with the
    snapshots the primary could not give, else the command's error."""
    damaged = doc.snapshots_failed
    if damaged:
        cause = "; ".join(f"{str(k)[:12]}: {v}" for k, v in list(damaged.items())[:5])
        return "PrimaryDamaged", cause
    error = outcome.error
    if error is None:
        return "Error", doc.error or "the replication Job failed"
    return error.reason, error.message or doc.error or "the replication Job failed"


def site_hint(reason: str, site: str) -> str:
    """What to do about a copy to ``site`` that failed with ``reason`` ("" when nothing
    more than the message helps)."""
    if reason == "WrongPassword":
        return (
            f" (the repository password Secret of BackupLocation {site} does not open the "
            "site: a new site gets the primary's keys, so give both locations the same "
            "password, or add the site's password as a key: safehold repo key add)"
        )
    if reason == "PrimaryDamaged":
        return " (run safehold verify on the primary: some snapshots could not be copied)"
    return ""


def _finish(state: SiteReplication, outcome: JobOutcome, site: str) -> str:
    """``state`` with the outcome of its ended replication Job; returns the new phase."""
    doc = outcome.read(ReplicateSummary)
    state.completion_time = parse_time(outcome.completion_time) or now()
    state.next_attempt_time = None
    if outcome.succeeded:
        state.phase = "Succeeded"
        state.reason = None
        state.bytes_transferred = doc.total.copied_bytes
        state.snapshots_copied = doc.snapshots_copied
        state.last_success_time = state.completion_time
        state.newest_snapshot_time = _site_newest(doc) or state.newest_snapshot_time
        state.message = (
            f"copied {state.snapshots_copied if state.snapshots_copied is not None else '?'} "
            f"snapshot(s), {state.bytes_transferred or 0} bytes, to {site}"
        )
        return state.phase
    state.phase = "Failed"
    reason, cause = copy_failure(outcome, doc)
    state.reason = reason[:128]
    if state.attempts < MAX_ATTEMPTS:
        state.next_attempt_time = state.completion_time + backoff(state.attempts)
        then = f"attempt {state.attempts} of {MAX_ATTEMPTS}; tried again at "
        then += state.next_attempt_time.isoformat()
    else:
        then = f"gave up after {MAX_ATTEMPTS} attempts; the next successful run catches up"
    hint = site_hint(reason, site)
    state.message = f"replication to {site} failed: {cause}{hint} ({then})"[:4096]
    return state.phase


def _start(
    rt: Runtime,
    body: Mapping[str, Any],
    policy: BackupPolicy,
    primary: BackupLocation,
    site: BackupLocation,
    state: SiteReplication,
) -> None:
    pname = policy.metadata.name or ""
    state.attempts += 1
    state.job = job_name(pname, "replicate", state.location, state.run, str(state.attempts))
    state.phase = "Running"
    state.start_time = now()
    state.completion_time = None
    state.next_attempt_time = None
    state.reason = None
    state.message = f"copying the policy's snapshots to {state.location}"
    refused = account_problem(rt.limits, policy.metadata.namespace or "", [primary, site])
    if refused:  # tried again on the same schedule, in case the locations are fixed
        state.phase, state.reason = "Failed", refused[0]
        state.completion_time = now()
        state.next_attempt_time = state.completion_time + backoff(state.attempts)
        state.message = f"replication to {state.location} cannot start: {refused[1]}"[:4096]
        return
    request = site_request(
        rt, body, policy, primary, site, name=state.job, component=COMPONENT_REPLICATE,
        args=commands.replicate(policy_prefix(policy.metadata.namespace or "", pname)),
        labels={LABEL_RUN: state.run},
    )  # fmt: skip
    try:
        rt.kube.create_job(build_job(request))
    except ApiException as exc:
        state.phase = "Failed"
        state.reason = "JobNotCreated"
        state.completion_time = now()
        state.next_attempt_time = state.completion_time + backoff(state.attempts)
        state.message = f"the replication Job could not be created: {exc.reason}"[:4096]


def _record_end(
    rt: Runtime, body: Mapping[str, Any], policy: BackupPolicy, state: SiteReplication
) -> None:
    labels = (policy.metadata.namespace or "", policy.metadata.name or "", state.location)
    metrics.REPLICATIONS.labels(*labels, state.phase).inc()
    if state.phase == "Succeeded":
        metrics.REPLICATION_BYTES.labels(*labels).inc(state.bytes_transferred or 0)
        rt.kube.event(body, "Replicated", f"run {state.run}: {state.message}")


def _step(
    rt: Runtime,
    body: Mapping[str, Any],
    policy: BackupPolicy,
    status: BackupPolicyStatus,
    primary: BackupLocation,
    target: ReplicationTarget,
    state: SiteReplication | None,
    newest: str,
) -> SiteReplication:
    """Advance one site's replication by what the cluster shows now."""
    ns = policy.metadata.namespace or ""
    if state is not None and follow_site_retention(rt, body, ns, state):
        return state  # no copy to a site while its retention holds the exclusive lock
    site = load_location(rt.kube, ns, target.name)
    if state is not None and state.phase == "Running" and state.job:
        job = rt.kube.get_job(ns, state.job)
        if job is None:  # created-and-lost (a restart) or deleted while it ran
            state.attempts -= 1
            state.job = None
        else:
            outcome = rt.kube.outcome_of(ns, job, state.job)
            if outcome.state in ("Pending", "Running"):
                if outcome.waiting:
                    state.message = f"the Job's pod does not start: {outcome.waiting}"[:4096]
                return state
            phase = _finish(state, outcome, target.name)
            _record_end(rt, body, policy, state)
            if phase == "Succeeded" and site is not None:
                start_site_retention(rt, body, policy, site, target, state)
            return state
    if state is None or state.run != newest:
        state = SiteReplication(
            location=target.name,
            run=newest,
            newest_snapshot_time=state.newest_snapshot_time if state else None,
            last_success_time=state.last_success_time if state else None,
            retention=state.retention if state else None,
        )
    if state.phase == "Succeeded":
        return state
    if state.phase == "Failed" and (
        state.attempts >= MAX_ATTEMPTS
        or (state.next_attempt_time is not None and now() < state.next_attempt_time)
    ):
        return state
    problem = site_problem(f"replicateTo {target.name}", target.name, site, primary)
    if problem is not None:
        state.phase, state.reason, state.message = "Failed", problem[0], problem[1]
        state.next_attempt_time = None
        return state
    assert site is not None
    availability, why = site_available(site)
    if availability != "True":
        state.phase = "Pending" if availability == "Unknown" else "Failed"
        state.reason = None if availability == "Unknown" else "SiteUnavailable"
        state.message = f"waiting for BackupLocation {target.name}: {why}"[:4096]
        return state
    retention = status.last_retention
    if policy.spec.retention is not None and (
        retention is None or retention.run != newest or retention.result == "Running"
    ):
        state.phase = "Pending"
        state.message = "waiting for the retention at the primary to finish"
        return state
    _start(rt, body, policy, primary, site, state)
    return state


def _replicated_condition(
    entries: Sequence[SiteReplication | ReplicationResult],
) -> tuple[ConditionStatus, str, str]:
    def why(e: SiteReplication | ReplicationResult) -> str:
        if isinstance(e, SiteReplication):
            return f"{e.reason}: {e.message}"
        return f"{e.error.reason}: {e.error.message}" if e.error else "failed"

    failed = [e for e in entries if e.phase == "Failed"]
    if failed:
        return (
            "False",
            "ReplicationFailed",
            "; ".join(f"{e.location}: {why(e)}" for e in failed)[:32000],
        )
    if entries and all(e.phase == "Succeeded" for e in entries):
        return "True", "Replicated", "copied to " + ", ".join(e.location for e in entries)
    waiting = [e.location for e in entries if e.phase in ("Pending", "Running")]
    return "Unknown", "Replicating", "copying to " + ", ".join(waiting)


def _write_run(
    rt: Runtime, runs: Sequence[Mapping[str, Any]], run: str, states: Sequence[SiteReplication]
) -> None:
    """The run's ``status.replication`` entries of these sites, and its ``Replicated``
    condition over all its entries (a site already busy with a newer run keeps the entry
    it last had here)."""
    body = next((r for r in runs if r["metadata"]["name"] == run), None)
    if body is None:
        return  # pruned by the history limit: the policy's status still has it
    status = BackupRunStatus.model_validate(body.get("status") or {})
    entries = {r.location: r for r in status.replication}
    for s in states:
        entry = entries.get(s.location) or ReplicationResult(location=s.location)
        entry.phase = s.phase
        entry.attempts = s.attempts
        entry.start_time = s.start_time
        entry.completion_time = s.completion_time
        entry.bytes_transferred = s.bytes_transferred if s.phase == "Succeeded" else None
        entry.error = (
            ErrorDetail(reason=s.reason or "Error", message=s.message[:4000])
            if s.phase == "Failed"
            else None
        )
        entries[s.location] = entry
    status.replication = list(entries.values())
    state, reason, message = _replicated_condition(status.replication)
    status.conditions = set_condition(
        status.conditions, REPLICATED, state, reason, message, now=now()
    )
    write_status(rt.kube, _BACKUP_RUNS, body, status)


def _lag(runs: Sequence[Mapping[str, Any]], newest: str, state: SiteReplication) -> float:
    """Seconds the site's newest snapshot of the policy is behind the primary's newest
    successful run (snapshots are taken after their run started)."""
    body = next((r for r in runs if r["metadata"]["name"] == newest), None)
    started = parse_time(((body or {}).get("status") or {}).get("startTime"))
    if started is None or state.newest_snapshot_time is None:
        return 0.0 if state.phase == "Succeeded" and state.run == newest else float("nan")
    return max(0.0, (started - state.newest_snapshot_time).total_seconds())


def reconcile_replication(
    rt: Runtime,
    body: Mapping[str, Any],
    policy: BackupPolicy,
    status: BackupPolicyStatus,
    runs: Sequence[Mapping[str, Any]],
) -> None:
    """Advance every site's replication of the policy's newest successful run, and write
    it into the run's status. The caller writes the policy's status."""
    targets = policy.spec.replicate_to
    wanted = {t.name for t in targets}
    status.replication = [s for s in status.replication if s.location in wanted]
    if not targets:
        status.conditions = [c for c in status.conditions if c.type != REPLICATED]
        return
    newest = newest_success(runs) or status.last_successful_run
    ns = policy.metadata.namespace or ""
    primary = load_location(rt.kube, ns, policy.spec.location.name)
    if newest is None or primary is None:
        return
    before = {s.location: (s.phase, s.reason) for s in status.replication}
    old_states = {s.location: s for s in status.replication}
    states = []
    for target in targets:
        state = _step(
            rt, body, policy, status, primary, target, old_states.get(target.name), newest
        )
        states.append(state)
        if state.phase == "Failed" and before.get(target.name) != (state.phase, state.reason):
            # every new failure is announced once, also one found before any Job ran
            rt.kube.event(
                body, "ReplicationFailed", f"{state.reason}: {state.message}", warning=True
            )
        labels = (ns, policy.metadata.name or "", target.name)
        metrics.REPLICATION_LAG.labels(*labels).set(_lag(runs, newest, state))
    status.replication = states
    for run in sorted({s.run for s in states}):
        _write_run(rt, runs, run, [s for s in states if s.run == run])
    cond, reason, message = _replicated_condition(states)
    status.conditions = set_condition(
        status.conditions,
        REPLICATED,
        cond,
        reason,
        message,
        now=now(),
        observed_generation=body["metadata"].get("generation"),
    )
