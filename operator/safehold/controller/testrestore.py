"""A BackupPolicy's ``testRestore.cron``: on that schedule, the newest backup of each tested
source is restored and checked, and everything made for the test is deleted afterwards.

**What is tested.** Each volume and database source of the policy (or those
``testRestore.sources`` names), from the newest BackupRun in which that source succeeded.

- A volume source: one Job restores its snapshot into a new scratch claim (StorageClass
  ``testRestore.storageClassName``, the size of the source's claim) with
  ``safehold restore --verify``, which reads every restored file back and compares it with
  the snapshot (content, size, type of every entry). With ``testRestore.check``, the user's
  image then runs with the scratch claim at ``/scratch`` (the restore is the Job's init
  container, so the check sees a finished restore); it passes when it exits 0.
- A database source: one Job checks the run's dumps end to end (``safehold restore-db
  --check``) and, with a ``testRestore.scratchDatabases`` server for the engine, restores
  each into a scratch database there, which the command drops afterwards.

**Nothing is left behind.** The scratch claim is created after its Job, with the Job as
its owner: deleting the Job (the operator does once it has read the outcome) makes the
garbage collector delete the claim, so the operator needs no right to delete claims and a
claim can never outlive its Job. A Job of this policy's tests that the status does not list
as running (an operator stopped between creating it and writing the status) is deleted when
the current test ends or before the next starts, and every Job has a TTL.

**State.** The slot started last and the running Jobs are kept in
``status.testRestore``, so a restarted operator neither repeats a slot nor loses a Job;
Job and claim names are derived from the policy, the source and the slot. When every Job
has ended: ``status.lastTestRestore`` (files and bytes checked, the measured restore time),
the ``RestoreTested`` condition, an Event, and the metrics
``safehold_test_restore_last_success_timestamp_seconds``,
``safehold_test_restore_duration_seconds`` and ``safehold_test_restore_failures_total``.
A slot that comes while a test still runs is skipped; a test waits (its slot is kept)
while a retention Job runs at the primary, and does not start while the policy is
suspended. What is tested and the Jobs that test it are in
:mod:`safehold.controller.testrestore_jobs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from safehold.api import RESTORE_TESTED, BackupPolicy
from safehold.api.backuppolicy import BackupPolicyStatus
from safehold.api.checks import (
    TestRestoreResult,
    TestRestoreSource,
    TestRestoreState,
)
from safehold.api.conditions import set_condition
from safehold.api.summaries import (
    DatabaseTestSummary,
    PitrCheckSummary,
    RestoreCheck,
    RestoreSummary,
)
from safehold.controller import metrics
from safehold.controller.common import load_location, now, parse_time
from safehold.controller.jobs import (
    CHECK_CONTAINER,
    COMPONENT_TEST_RESTORE,
    JOB_CONTAINER,
    LABEL_COMPONENT,
    LABEL_POLICY,
    job_name,
    label_value,
)
from safehold.controller.kube import ApiException
from safehold.controller.limits import root_field
from safehold.controller.retention import active_retention_job
from safehold.controller.runtime import Runtime
from safehold.controller.schedule import due_check
from safehold.controller.status import JobOutcome
from safehold.controller.testrestore_jobs import (
    Candidate,
    newest_backups,
    scratch_server,
    start_database_test,
    start_volume_test,
    test_restore_schedule,
)

__all__ = ["reconcile_test_restore"]


def _fail(entry: TestRestoreSource, reason: str, message: str) -> None:
    entry.result = "Failed"
    entry.reason = reason
    entry.message = f"{entry.source}: {message}"[:2048]
    entry.completion_time = now()


def _start(
    rt: Runtime,
    body: Mapping[str, Any],
    policy: BackupPolicy,
    state: TestRestoreState,
    slot: datetime,
    tested: tuple[list[Candidate], list[str]],
) -> None:
    ns = policy.metadata.namespace or ""
    pname = policy.metadata.name or ""
    minute = str(int(slot.timestamp() // 60))
    candidates, missing = tested
    state.start_time = now()
    state.sources = []
    location = load_location(rt.kube, ns, policy.spec.location.name)
    for c in candidates:
        entry = TestRestoreSource(
            source=c.name,
            kind=c.kind,
            run=c.run,
            snapshot=c.result.snapshot_id if c.kind == "volume" else None,
            job=job_name(pname, "test", c.name, minute),
            # never an empty message: the API client sends "" as null, which the schema refuses
            message=f"{c.name}: testing the backup of run {c.run}",
        )
        state.sources.append(entry)
        if location is None:
            _fail(entry, "LocationNotFound", "the BackupLocation does not exist or is not valid")
            continue
        refused = (
            _scratch_host_refused(rt, policy, c.name)
            if c.kind == "database" and not _point_in_time(policy, c.name)
            else None
        )
        if refused is not None:
            _fail(entry, "DatabaseHostNotAllowed", refused)
            continue
        root = rt.limits.root(rt.job_settings(policy.spec.job)) if c.kind == "volume" else None
        if root is not None:
            _fail(entry, "RunAsRootNotAllowed", f"{root_field(policy)}: {root}")
            continue
        try:
            if c.kind == "volume":
                start_volume_test(rt, body, policy, location, entry, c.result)
            else:
                start_database_test(rt, body, policy, location, entry)
        except (ApiException, LookupError) as exc:
            reason = exc.reason if isinstance(exc, ApiException) else str(exc)
            _fail(entry, "JobNotCreated", f"the test restore could not be started: {reason}")
    for name in missing:
        entry = TestRestoreSource(source=name, kind="volume", run="none", message=name)
        _fail(entry, "NoBackup", "no run of this policy has backed this source up successfully")
        state.sources.append(entry)


def _point_in_time_sources(body: Mapping[str, Any]) -> set[str]:
    """The names of the policy's database sources with ``pointInTime``."""
    databases = ((body.get("spec") or {}).get("sources") or {}).get("databases") or []
    return {str(d.get("name")) for d in databases if d.get("pointInTime")}


def _point_in_time(policy: BackupPolicy, source: str) -> bool:
    """Whether database source ``source`` takes base backups (it needs no scratch server)."""
    return any(d.name == source and d.point_in_time for d in policy.spec.sources.databases)


def _scratch_host_refused(rt: Runtime, policy: BackupPolicy, source: str) -> str | None:
    """Why the scratch server a database source's test restore would write to is outside
    the hosts the installation lets policies reach (policyLimits.databaseHosts), or None."""
    server = scratch_server(policy, source)
    servers = policy.spec.test_restore.scratch_databases if policy.spec.test_restore else []
    why = rt.limits.database_host(server.host) if server is not None else None
    if why is None or server is None:
        return None
    return f"spec.testRestore.scratchDatabases[{servers.index(server)}].host: {why}"


def _container(pods: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    """The terminated state of container ``name`` (init or not) in the newest pod."""
    for pod in reversed(pods):
        pstatus = pod.get("status") or {}
        for cs in [
            *(pstatus.get("initContainerStatuses") or []),
            *(pstatus.get("containerStatuses") or []),
        ]:
            if cs.get("name") == name and (cs.get("state") or {}).get("terminated"):
                return dict(cs["state"]["terminated"])
    return None


def _seconds(term: Mapping[str, Any] | None) -> float | None:
    if term is None:
        return None
    start, end = parse_time(term.get("startedAt")), parse_time(term.get("finishedAt"))
    return max(0.0, (end - start).total_seconds()) if start and end else None


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _problems(check: RestoreCheck) -> str:
    total = check.problems_total or len(check.problems)
    shown = "; ".join(f"{p.path or '/'}: {p.error}" for p in check.problems[:5])
    more = total - min(5, len(check.problems))
    return f"{total} difference(s) from the snapshot: {shown}" + (
        f"; and {more} more" if more > 0 else ""
    )


def _finish_volume(entry: TestRestoreSource, outcome: JobOutcome, pods: Sequence[Any]) -> None:
    """The restore's check (and the user's) from the Job's ``RestoreSummary`` and pod."""
    doc = outcome.read(RestoreSummary)
    verify = doc.verify
    # the restore's own clock; the container's times are whole seconds (0 for a quick one)
    entry.restore_seconds = (
        doc.duration_s if doc.duration_s is not None else _seconds(_container(pods, JOB_CONTAINER))
    )
    if verify is not None:
        entry.files = verify.files or 0
        entry.bytes = verify.bytes or 0
    check = _container(pods, CHECK_CONTAINER)
    if outcome.state == "Succeeded" and verify is not None:
        entry.result = "Succeeded"
        entry.reason = None
        passed = "; your check passed" if check is not None else ""
        entry.message = (
            f"{entry.source}: restored snapshot {(entry.snapshot or '')[:12]} of run {entry.run} "
            f"into a scratch claim: {entry.files} files ({_mib(entry.bytes or 0)}) match the "
            f"snapshot{passed}"
        )
        entry.completion_time = parse_time(outcome.completion_time) or now()
        return
    if verify is not None and (verify.problems_total or verify.problems):
        _fail(entry, "RestoreMismatch", _problems(verify))
    elif verify is not None and doc.ok and check is not None and check.get("exitCode"):
        tail = str(check.get("message") or "").strip().splitlines()[-1:] or ["no output"]
        _fail(
            entry,
            "CheckFailed",
            f"the restore matched the snapshot, but your check exited {check.get('exitCode')}: "
            f"{tail[0][:500]}",
        )
    else:
        error = outcome.error
        why = error.message if error else "the test restore Job failed"
        _fail(entry, error.reason if error else "Failed", why)


def finish_point_in_time(entry: TestRestoreSource, outcome: JobOutcome) -> None:
    """A ``pointInTime`` source's check, from the Job's ``PitrCheckSummary``."""
    doc = outcome.read(PitrCheckSummary)
    entry.files, entry.bytes = doc.files, doc.bytes
    if outcome.state == "Succeeded" and doc.ok:
        entry.result = "Succeeded"
        entry.reason = None
        entry.message = (
            f"{entry.source}: base backup {(doc.base_snapshot or '')[:12]} and "
            f"{doc.wal_segments} WAL segment(s) are whole ({_mib(doc.bytes or 0)}): restores "
            f"can reach {doc.reachable_until}" + "".join(f"; but {w}" for w in doc.warnings)
        )
        entry.completion_time = parse_time(outcome.completion_time) or now()
    elif doc.error and doc.error.startswith("DAMAGED"):  # exit code 4: what is broken
        _fail(entry, "BackupDamaged", doc.error)
    else:
        error = outcome.error
        why = error.message if error else "the test restore Job failed"
        _fail(entry, error.reason if error else "Failed", why)


def _finish_database(entry: TestRestoreSource, outcome: JobOutcome) -> None:
    """The dumps' check (and scratch restore) from the Job's ``DatabaseTestSummary``."""
    doc = outcome.read(DatabaseTestSummary)
    check, scratch = doc.check, doc.scratch
    if check is not None:
        entry.files = len(check.databases)
        entry.bytes = check.bytes
    entry.restore_seconds = scratch.seconds if scratch is not None else None
    if outcome.state == "Succeeded" and (check is None or check.ok):
        entry.result = "Succeeded"
        entry.reason = None
        what = (
            f"{entry.files} dump(s), {_mib(entry.bytes or 0)}, {check.tables} tables"
            if check is not None
            else "checked"
        )
        into = ""
        if scratch is not None:
            gone = "dropped" if scratch.dropped else "NOT dropped"
            into = f"; restored into scratch database(s) {scratch.database} ({gone})"
        entry.message = f"{entry.source}: the dumps of run {entry.run} are whole ({what}){into}"
        entry.completion_time = parse_time(outcome.completion_time) or now()
        return
    if check is not None and not check.ok:
        _fail(entry, "DumpDamaged", check.error or "a dump is damaged or truncated")
    elif scratch is not None and not scratch.ok:
        _fail(entry, "ScratchRestoreFailed", scratch.error or "a dump did not restore")
    else:
        error = outcome.error
        why = error.message if error else "the test restore Job failed"
        _fail(entry, error.reason if error else "Failed", why)


def _record(rt: Runtime, body: Mapping[str, Any], entry: TestRestoreSource) -> None:
    meta = body.get("metadata", {})
    labels = (meta.get("namespace", ""), meta.get("name", ""), entry.source)
    if entry.result == "Succeeded":
        when = entry.completion_time or now()
        metrics.TEST_RESTORE_LAST_SUCCESS.labels(*labels).set(when.timestamp())
        if entry.restore_seconds is not None:
            metrics.TEST_RESTORE_DURATION.labels(*labels).set(entry.restore_seconds)
    elif entry.result == "Failed":
        metrics.TEST_RESTORE_FAILURES.labels(*labels).inc()
        rt.kube.event(
            body, "TestRestoreFailed", f"{entry.reason}: {entry.message}"[:1024], warning=True
        )


def _follow(rt: Runtime, body: Mapping[str, Any], state: TestRestoreState) -> bool:
    """Follow the running Jobs; delete each once ended (its claim goes with it). True
    while any still runs."""
    ns = body["metadata"]["namespace"]
    for entry in (e for e in state.sources if e.result == "Running"):
        job = rt.kube.get_job(ns, entry.job) if entry.job else None
        if job is None:
            _fail(entry, "JobDeleted", f"the test restore Job {entry.job} is gone")
        else:
            outcome = rt.kube.outcome_of(ns, job, entry.job or "")
            if outcome.state in ("Pending", "Running"):
                continue
            if entry.kind == "volume":
                _finish_volume(entry, outcome, rt.kube.job_pods(ns, entry.job or ""))
            elif entry.source in _point_in_time_sources(body):
                finish_point_in_time(entry, outcome)
            else:
                _finish_database(entry, outcome)
            rt.kube.delete_job(ns, entry.job or "")
        _record(rt, body, entry)
    return any(e.result == "Running" for e in state.sources)


def _sweep(rt: Runtime, ns: str, policy: str, state: TestRestoreState) -> None:
    """Delete this policy's test Jobs the status does not list as running (with their
    claims): left by an operator stopped between creating a Job and writing the status.
    Run when a test ends and before one starts, not on every pass (one list call)."""
    running = {e.job for e in state.sources if e.result == "Running"}
    selector = f"{LABEL_COMPONENT}={COMPONENT_TEST_RESTORE},{LABEL_POLICY}={label_value(policy)}"
    for job in rt.kube.list_jobs(ns, selector):
        if job["metadata"]["name"] not in running:
            rt.kube.delete_job(ns, job["metadata"]["name"])


def _conclude(
    rt: Runtime, body: Mapping[str, Any], state: TestRestoreState, status: BackupPolicyStatus
) -> None:
    """Every Job has ended: the outcome into ``lastTestRestore`` and ``RestoreTested``."""
    failed = [e for e in state.sources if e.result != "Succeeded"]
    ends = [e.completion_time for e in state.sources if e.completion_time]
    durations = [e.restore_seconds for e in state.sources if e.restore_seconds is not None]
    runs = sorted({e.run for e in state.sources if e.run != "none"})
    message = "; ".join(e.message for e in (failed or state.sources))
    status.last_test_restore = TestRestoreResult(
        time=max(ends) if ends else now(),
        result="Failed" if failed else "Succeeded",
        message=message[:4096],
        run=runs[-1] if runs else None,
        files=sum(e.files or 0 for e in state.sources if e.kind == "volume"),
        bytes=sum(e.bytes or 0 for e in state.sources),
        duration_seconds=max(durations) if durations else None,
        sources=[e.model_copy() for e in state.sources],
    )
    status.conditions = set_condition(
        status.conditions,
        RESTORE_TESTED,
        "False" if failed else "True",
        (failed[0].reason or "Failed") if failed else "RestoreTested",
        message[:4096],
        now=now(),
        observed_generation=body["metadata"].get("generation"),
    )
    if not failed:
        rt.kube.event(body, "RestoreTested", message[:1024])


def reconcile_test_restore(
    rt: Runtime,
    body: Mapping[str, Any],
    policy: BackupPolicy,
    status: BackupPolicyStatus,
    runs: Sequence[Mapping[str, Any]],
) -> str | None:
    """Follow the running test into the status, or start one at a due slot. Returns a note
    for the Ready condition (a skipped or waiting slot), or None. The caller writes the
    status."""
    schedule = test_restore_schedule(policy)
    if schedule is None and status.test_restore is None:
        return None
    ns = policy.metadata.namespace or ""
    state = status.test_restore = status.test_restore or TestRestoreState()
    running = [e for e in state.sources if e.result == "Running"]
    busy = _follow(rt, body, state)
    if running and not busy:
        _conclude(rt, body, state, status)
        _sweep(rt, ns, policy.metadata.name or "", state)
    if schedule is None:
        if not busy:
            status.test_restore = None  # cron removed: its last result stays
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
    at = slot.isoformat()
    if busy:
        state.last_schedule_time = slot
        return f"the test restore slot at {at} was skipped: the previous test still runs"
    job = active_retention_job(rt, ns, policy.spec.location.name)
    if job is not None:
        return f"the test restore waits for retention Job {job}"
    tested = newest_backups(policy, runs)
    state.last_schedule_time = slot
    if not tested[0] and not tested[1]:
        return f"the test restore slot at {at} was skipped: no source has a backup to test yet"
    _sweep(rt, ns, policy.metadata.name or "", state)
    _start(rt, body, policy, state, slot, tested)
    if not any(e.result == "Running" for e in state.sources):
        _conclude(rt, body, state, status)
    return None
