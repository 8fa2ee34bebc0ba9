"""BackupPolicy: check it, start BackupRuns on its schedule, keep the run history short.

``Ready`` says whether the policy is valid and its location and claims exist, and when
the next run is. At each due slot (see :mod:`safehold.controller.schedule` for the
missed-slot rule) a BackupRun named ``<policy>-<slot minute>`` is created, so a
restarted operator cannot start the same slot twice. ``concurrencyPolicy``: Forbid holds
a due slot back while a run is active (it starts when the run ends, unless
``startingDeadlineSeconds`` has passed), Allow starts it anyway, Replace deletes the
active runs (and so their Jobs) first. Runs the schedule created are pruned to
``successfulRunsHistoryLimit`` and ``failedRunsHistoryLimit``; runs made by hand are
never deleted by the operator. After each successful run, ``retention`` is applied by a
Job (safehold.controller.retention) and reported in ``status.lastRetention``; then the
snapshots are copied to every ``replicateTo`` site (safehold.controller.replication) and
reported in ``status.replication`` and the ``Replicated`` condition. With
``verification.cron``, a verify Job per location checks the repositories on that schedule
(safehold.controller.verification), reported in ``status.lastVerification`` and the
``Verified`` condition. With ``testRestore.cron``, the newest backup of each volume and
database source is restored into scratch claims (and databases) and checked on that schedule
(safehold.controller.testrestore), reported in ``status.lastTestRestore`` and the
``RestoreTested`` condition. Database sources with ``pointInTime`` have their WAL
archived every ``archiveInterval`` between the runs' base backups
(safehold.controller.walarchive), reported in ``status.walArchive``. Backups go only to a
location of role primary: a policy whose ``location`` is a recovery site is not Ready.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from safehold.api import (
    READY,
    BackupLocation,
    BackupPolicy,
    BackupPolicyStatus,
    BackupRunStatus,
    LocalObjectReference,
    validate_spec,
)
from safehold.api.backuppolicy import Schedule
from safehold.api.conditions import ConditionStatus
from safehold.controller import metrics
from safehold.controller.backuprun import SCHEDULE_ANNOTATION
from safehold.controller.common import (
    field_errors_message,
    not_primary_message,
    now,
    parse_time,
    write_condition,
)
from safehold.controller.exec_hooks import hook_failure, undo_pod_hooks
from safehold.controller.identity import account_problem
from safehold.controller.jobs import LABEL_MANAGED_BY, LABEL_POLICY, MANAGED_BY, label_value
from safehold.controller.replication import reconcile_replication
from safehold.controller.retention import reconcile_retention
from safehold.controller.runtime import Runtime
from safehold.controller.schedule import (
    concurrency_action,
    decide,
    expected_interval,
    slots_between,
)
from safehold.controller.sources.claims import name_conflict, resolve_volumes
from safehold.controller.status import FINAL_PHASES
from safehold.controller.testrestore import reconcile_test_restore
from safehold.controller.verification import reconcile_verification
from safehold.controller.walarchive import reconcile_wal_archive

__all__ = ["PLURAL", "reconcile"]

PLURAL = "backuppolicies"


def _ready(
    rt: Runtime,
    body: dict[str, Any],
    status: BackupPolicyStatus,
    state: ConditionStatus,
    reason: str,
    message: str,
) -> None:
    write_condition(rt.kube, PLURAL, body, status, READY, state, reason, message)


def _problems(rt: Runtime, policy: BackupPolicy) -> tuple[str, str] | None:
    ns = policy.metadata.namespace or ""
    lname = policy.spec.location.name
    location = rt.kube.get_cr("backuplocations", ns, lname)
    if location is None:
        return (
            "LocationNotFound",
            f"spec.location.name: BackupLocation {lname!r} does not exist in namespace {ns}: "
            "create it or fix the name",
        )
    role = (location.get("spec") or {}).get("role") or "primary"
    if role != "primary":
        return "LocationNotPrimary", not_primary_message(lname, role)
    # every Job of the policy reaches the location (an invalid one says why in its status)
    if not validate_spec("BackupLocation", location.get("spec")):
        refused = account_problem(rt.limits, ns, [BackupLocation.model_validate(location)])
        if refused:
            return refused
    for i, v in enumerate(policy.spec.sources.volumes):
        if v.claim_name and rt.kube.get_pvc(ns, v.claim_name) is None:
            return (
                "ClaimNotFound",
                f"spec.sources.volumes[{i}].claimName: PersistentVolumeClaim {v.claim_name!r} "
                f"does not exist in namespace {ns}: create it or fix the name",
            )
    if any(v.selector is not None for v in policy.spec.sources.volumes):
        conflict = name_conflict(policy, resolve_volumes(rt.kube, policy))
        if conflict is not None:
            return "SourceNameConflict", conflict
    return None


def _prune(rt: Runtime, policy: BackupPolicy, runs: list[dict[str, Any]]) -> None:
    ns = policy.metadata.namespace or ""
    ours = [
        r for r in runs if (r["metadata"].get("labels") or {}).get(LABEL_MANAGED_BY) == MANAGED_BY
    ]
    ours.sort(key=lambda r: r["metadata"].get("creationTimestamp") or "", reverse=True)
    good = [r for r in ours if (r.get("status") or {}).get("phase") == "Succeeded"]
    bad = [r for r in ours if (r.get("status") or {}).get("phase") in ("Failed", "PartiallyFailed")]
    for r in good[policy.spec.successful_runs_history_limit :]:
        rt.kube.delete_cr("backupruns", ns, r["metadata"]["name"])
    for r in bad[policy.spec.failed_runs_history_limit :]:
        rt.kube.delete_cr("backupruns", ns, r["metadata"]["name"])


def _create_run(rt: Runtime, policy: BackupPolicy, slot_iso: str, minute: int, kind: str) -> str:
    ns = policy.metadata.namespace or ""
    pname = policy.metadata.name or ""
    name = f"{pname[:40]}-{minute}"
    rt.kube.create_cr(
        "backupruns",
        ns,
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "BackupRun",
            "metadata": {
                "name": name,
                "labels": {LABEL_MANAGED_BY: MANAGED_BY, LABEL_POLICY: label_value(pname)},
                "annotations": {SCHEDULE_ANNOTATION: slot_iso},
            },
            "spec": {"policyRef": {"name": pname}, "type": kind},
        },
    )
    return name


def _runs(
    rt: Runtime, body: dict[str, Any], status: BackupPolicyStatus
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The policy's BackupRuns and the active ones; the active ones and the newest success
    into ``status`` (and the last-success metric)."""
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    run_counters = (
        metrics.RUNS_STARTED,
        metrics.RUNS_SUCCEEDED,
        metrics.RUNS_FAILED,
        metrics.RUNS_PARTIALLY_FAILED,
    )
    for counter in run_counters:
        counter.labels(ns, name)  # at 0 from the start, so increase() sees the first run
    runs = [
        r
        for r in rt.kube.list_cr("backupruns", ns)
        if r.get("spec", {}).get("policyRef", {}).get("name") == name
    ]
    active = [r for r in runs if (r.get("status") or {}).get("phase") not in FINAL_PHASES]
    status.active_runs = [LocalObjectReference(name=r["metadata"]["name"]) for r in active]
    succeeded = [
        (parse_time(r["status"].get("completionTime")), r)
        for r in runs
        if (r.get("status") or {}).get("phase") == "Succeeded"
    ]
    dated = [(t, r) for t, r in succeeded if t is not None]
    if dated:
        when, newest = max(dated, key=lambda x: x[0])
        status.last_successful_run = newest["metadata"]["name"]
        status.last_success_time = when
        metrics.LAST_SUCCESS.labels(ns, name).set(when.timestamp())
    return runs, active


def _schedule_metrics(
    ns: str, name: str, schedule: Schedule, next_time: datetime | None, current: datetime
) -> None:
    """The policy's next slot and expected interval, for the alerts (docs/monitoring.md)."""
    if next_time is not None:
        metrics.NEXT_SLOT.labels(ns, name).set(next_time.timestamp())
    interval = expected_interval(schedule, current)
    if interval is not None:
        metrics.EXPECTED_INTERVAL.labels(ns, name).set(interval)


def _schedule_runs(
    rt: Runtime,
    body: dict[str, Any],
    policy: BackupPolicy,
    status: BackupPolicyStatus,
    active: list[dict[str, Any]],
    notes: list[str],
) -> str:
    """Start the run of a due slot (by the concurrency policy); the Ready message."""
    schedule = policy.spec.schedule
    if schedule is None:
        status.next_schedule_time = None
        return "no schedule: runs are made by hand (kubectl create a BackupRun)"
    if policy.spec.suspend:
        status.next_schedule_time = None
        return "suspended: no new runs start; active runs continue"
    ns = body["metadata"]["namespace"]
    current = now()
    created = parse_time(body["metadata"].get("creationTimestamp")) or current
    decision = decide(
        schedule,
        last_slot=status.last_schedule_time,
        created=created,
        now=current,
        starting_deadline_seconds=policy.spec.starting_deadline_seconds,
    )
    status.next_schedule_time = decision.next_time
    _schedule_metrics(ns, body["metadata"]["name"], schedule, decision.next_time, current)
    if decision.skipped:
        notes.append(
            f"{decision.skipped} missed slot(s) were skipped (operator down or run held "
            "back; see startingDeadlineSeconds)"
        )
    if decision.slot is None and decision.skipped:
        # every missed slot is past its deadline: remember the newest so it is not
        # counted again
        due = slots_between(schedule, status.last_schedule_time or created, current)
        if due:
            status.last_schedule_time = due[-1][0]
    if decision.slot is not None and decision.type is not None:
        action = concurrency_action(policy.spec.concurrency_policy, len(active))
        if action == "hold":
            notes.append(
                f"the slot at {decision.slot.isoformat()} is held back: "
                f"{', '.join(r['metadata']['name'] for r in active)} still running "
                "(concurrencyPolicy Forbid)"
            )
        else:
            if action == "replace":
                for r in active:
                    _undo_replaced(rt, policy, body, r)
                    rt.kube.delete_cr("backupruns", ns, r["metadata"]["name"])
            run = _create_run(
                rt,
                policy,
                decision.slot.isoformat(),
                int(decision.slot.timestamp() // 60),
                decision.type,
            )
            rt.kube.event(
                body, "RunCreated", f"created BackupRun {run} for {decision.slot.isoformat()}"
            )
            status.last_schedule_time = decision.slot
    nxt = status.next_schedule_time
    return f"scheduled; next run at {nxt.isoformat() if nxt else 'never'}"


def _undo_replaced(
    rt: Runtime, policy: BackupPolicy, body: dict[str, Any], run: dict[str, Any]
) -> None:
    """A run replaced part way (concurrencyPolicy Replace) is deleted with its Jobs; if
    its preBackup exec hooks ran, the postBackup hooks run first, and an Event on the
    policy says how they went (the run's own status goes with it)."""
    status = BackupRunStatus.model_validate(run.get("status") or {})
    done = len(status.hooks)
    undo_pod_hooks(rt.kube.core, policy, status, enabled=rt.exec_hooks)
    ran = status.hooks[done:]
    if not ran:
        return
    failed = [h for h in ran if not h.succeeded]
    message = (
        f"BackupRun {run['metadata']['name']} replaced: its postBackup hooks ran, "
        f"{len(ran) - len(failed)} of {len(ran)} succeeded"
    )
    if failed:
        message += f"; {hook_failure(failed[0])}"
    reason = "HookFailed" if failed else "HooksUndone"
    rt.kube.event(body, reason, message, warning=bool(failed))


def reconcile(rt: Runtime, body: dict[str, Any]) -> None:
    """One pass over a policy: validity, its runs, the follow-up work after them
    (retention, replication, verification, test restores), the schedule, the history."""
    status = BackupPolicyStatus.model_validate(body.get("status") or {})
    errors = validate_spec("BackupPolicy", body.get("spec"))
    if errors:
        _ready(rt, body, status, "False", "InvalidSpec", field_errors_message(errors))
        return
    policy = BackupPolicy.model_validate({k: v for k, v in body.items() if k != "status"})
    runs, active = _runs(rt, body, status)
    problem = _problems(rt, policy)
    if problem is not None:
        status.next_schedule_time = None
        _ready(rt, body, status, "False", *problem)
        return
    reconcile_retention(rt, body, policy, status, runs, active)
    reconcile_replication(rt, body, policy, status, runs)
    notes = [
        note
        for note in (
            reconcile_verification(rt, body, policy, status),
            reconcile_test_restore(rt, body, policy, status, runs),
            reconcile_wal_archive(rt, body, policy, status),
        )
        if note
    ]
    message = _schedule_runs(rt, body, policy, status, active, notes)
    _prune(rt, policy, runs)
    schedule = policy.spec.schedule
    reason = "Suspended" if policy.spec.suspend else ("Scheduled" if schedule else "Manual")
    _ready(rt, body, status, "True", reason, "; ".join([message, *notes]))
