"""BackupLocation: check the location with a short Job and report ``Available``.

The operator never connects to storage itself. A Job runs ``safehold repo init
--if-absent`` with the location's Secrets mounted as files: it creates the repository
if the location is empty, otherwise opens it (which checks the password), and its JSON
summary (repository id, snapshots, bytes) or error (a wrong key, a missing bucket) comes
back through the termination message. The check is repeated every
``validationInterval`` and whenever the spec changes (a new generation).
"""

from __future__ import annotations

from typing import Any

from safehold.api import (
    AVAILABLE,
    BackupLocation,
    BackupLocationStatus,
    find_condition,
    parse_duration,
    validate_spec,
)
from safehold.api.conditions import ConditionStatus
from safehold.controller import metrics
from safehold.controller.common import field_errors_message, now, parse_time, write_condition
from safehold.controller.jobs import (
    COMPONENT_VALIDATE,
    LABEL_COMPONENT,
    LABEL_LOCATION,
    JobRequest,
    build_job,
    job_name,
    label_value,
)
from safehold.controller.repository import with_repository
from safehold.controller.runtime import Runtime
from safehold.controller.status import job_outcome

__all__ = ["PLURAL", "reconcile"]

PLURAL = "backuplocations"
_GENERATION = "safehold.io/generation"


def _set(
    rt: Runtime,
    body: dict[str, Any],
    status: BackupLocationStatus,
    state: ConditionStatus,
    reason: str,
    message: str,
) -> None:
    status.phase = {"True": "Available", "False": "Unavailable"}.get(state, "Pending")  # type: ignore[assignment]
    write_condition(rt.kube, PLURAL, body, status, AVAILABLE, state, reason, message)


def reconcile(rt: Runtime, body: dict[str, Any]) -> None:
    meta = body["metadata"]
    ns, name, gen = meta["namespace"], meta["name"], meta.get("generation")
    status = BackupLocationStatus.model_validate(body.get("status") or {})
    errors = validate_spec("BackupLocation", body.get("spec"))
    if errors:
        _set(rt, body, status, "False", "InvalidSpec", field_errors_message(errors))
        return
    location = BackupLocation.model_validate(body)
    if status.bytes_stored is not None:  # also after a restart, before the next check
        metrics.BYTES_STORED.labels(ns, name).set(status.bytes_stored)
    selector = f"{LABEL_LOCATION}={label_value(name)},{LABEL_COMPONENT}={COMPONENT_VALIDATE}"
    every = rt.kube.list_jobs(ns, selector)
    jobs = [j for j in every if j["metadata"]["labels"].get(_GENERATION) == str(gen)]
    jobs.sort(key=lambda j: j["metadata"].get("creationTimestamp") or "")
    latest = jobs[-1] if jobs else None
    for old in every:  # only the newest check of the current spec is kept
        if old is not latest:
            rt.kube.delete_job(ns, old["metadata"]["name"])
    current = now()
    if latest is not None:
        outcome = job_outcome(latest, rt.kube.job_pods(ns, latest["metadata"]["name"]))
        if outcome.state in ("Pending", "Running"):
            if outcome.waiting:
                _set(rt, body, status, "False", "PodNotStarting", outcome.waiting)
            elif find_condition(status.conditions, AVAILABLE) is None:
                _set(rt, body, status, "Unknown", "Validating", "the location is being checked")
            return
        finished = parse_time(outcome.completion_time) or current
        if status.last_validation_time is None or finished > status.last_validation_time:
            status.last_validation_time = finished
            doc = outcome.summary or {}
            if outcome.state == "Succeeded" and doc.get("ok"):
                status.repository_id = doc.get("repository")
                status.snapshot_count = doc.get("snapshots")
                status.bytes_stored = doc.get("pack_bytes")
                if status.bytes_stored is not None:
                    metrics.BYTES_STORED.labels(ns, name).set(status.bytes_stored)
                verb = "created" if doc.get("initialized") else "found"
                _set(
                    rt,
                    body,
                    status,
                    "True",
                    "Validated",
                    f"{verb} repository {str(doc.get('repository'))[:16]} at {doc.get('location')}",
                )
            else:
                err = outcome.error
                _set(
                    rt,
                    body,
                    status,
                    "False",
                    err.reason if err else "ValidationFailed",
                    (err.message if err else "the check failed")
                    + " (fix the BackupLocation or its Secrets; the check is repeated on "
                    "every change and every validationInterval)",
                )
            return
    interval = parse_duration(location.spec.validation_interval)
    last = status.last_validation_time
    if (
        latest is not None
        and status.observed_generation == gen
        and last is not None
        and current - last < interval
    ):
        return
    stamp = str(int(current.timestamp()))
    request = JobRequest(
        name=job_name(name, "validate", str(gen), stamp),
        namespace=ns,
        component=COMPONENT_VALIDATE,
        args=["repo", "init", "--if-absent"],
        labels={LABEL_LOCATION: name, _GENERATION: str(gen)},
        owner=body,
        image=rt.image,
        active_deadline_seconds=300,
        backoff_limit=0,
        ttl_seconds_after_finished=24 * 3600,
    )
    rt.kube.create_job(build_job(with_repository(request, location)))
    if find_condition(status.conditions, AVAILABLE) is None:
        _set(rt, body, status, "Unknown", "Validating", "the location is being checked")
