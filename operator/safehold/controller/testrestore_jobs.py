"""What a scheduled test restore tests, and the Jobs (and scratch claims) that test it: the
newest successful backup of each source (:func:`newest_backups`), a volume's restore Job
with ``safehold restore --verify`` and the user's check after it, then its scratch claim
owned by that Job (:func:`start_volume_test`), and a database source's ``safehold
restore-db --check`` (``--scratch`` with a scratch server) Job (:func:`start_database_test`).
The lifecycle (slots, following, results) is :mod:`safehold.controller.testrestore`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from safehold.api import BackupLocation, BackupPolicy, SourceResult
from safehold.api.backuppolicy import Schedule, ScheduleSlot
from safehold.api.checks import ScratchDatabaseServer, TestRestoreSource
from safehold.controller import commands
from safehold.controller.common import parse_time
from safehold.controller.jobs import (
    COMPONENT_TEST_RESTORE,
    LABEL_COMPONENT,
    LABEL_POLICY,
    LABEL_SOURCE,
    CheckContainer,
    JobRequest,
    Mount,
    build_job,
    label_value,
    owner_reference,
)
from safehold.controller.policy_jobs import policy_job
from safehold.controller.runtime import Runtime
from safehold.controller.sources import source_name
from safehold.controller.sources.databases import server_connection

__all__ = [
    "RESTORE_ROOT",
    "SCRATCH_MOUNT",
    "Candidate",
    "newest_backups",
    "scratch_server",
    "scratch_size",
    "start_database_test",
    "start_volume_test",
    "test_restore_schedule",
]

#: Where a test restore writes: the snapshot's ``volume`` directory is the scratch claim.
RESTORE_ROOT = "/restore"
#: Where the user's check sees the scratch claim.
SCRATCH_MOUNT = "/scratch"
_GIB = 1024**3


@dataclass(frozen=True)
class Candidate:
    """A source to test and the newest run in which it succeeded."""

    name: str
    kind: Literal["volume", "database"]
    run: str
    result: SourceResult


def test_restore_schedule(policy: BackupPolicy) -> Schedule | None:
    """``testRestore.cron`` as a one-slot schedule in the policy schedule's time zone."""
    spec = policy.spec.test_restore
    if spec is None:
        return None
    zone = policy.spec.schedule.time_zone if policy.spec.schedule else "UTC"
    return Schedule(time_zone=zone, slots=[ScheduleSlot(cron=spec.cron)])


def _results(run: Mapping[str, Any]) -> list[SourceResult]:
    out = []
    for doc in (run.get("status") or {}).get("sources") or []:
        try:
            out.append(SourceResult.model_validate(doc))
        except ValidationError:
            continue  # a result this version cannot read is not a candidate
    return out


def newest_backups(
    policy: BackupPolicy, runs: Sequence[Mapping[str, Any]]
) -> tuple[list[Candidate], list[str]]:
    """Each tested source with the newest run in which it succeeded (by the run's
    completion), in name order; and the names ``testRestore.sources`` lists that no run
    has backed up successfully. A database source no longer in the policy is not tested
    (its server and engine are unknown)."""
    spec = policy.spec.test_restore
    wanted = set(spec.sources) if spec else set()
    databases = {d.name for d in policy.spec.sources.databases}
    best: dict[str, tuple[datetime, Candidate]] = {}
    for run in runs:
        when = parse_time((run.get("status") or {}).get("completionTime"))
        if when is None:
            continue
        for result in _results(run):
            if result.phase != "Succeeded" or (wanted and result.name not in wanted):
                continue
            if result.kind == "volume" and result.snapshot_id:
                kind: Literal["volume", "database"] = "volume"
            elif result.kind == "database" and result.name in databases:
                kind = "database"
            else:
                continue
            held = best.get(result.name)
            if held is None or when > held[0]:
                name = run["metadata"]["name"]
                best[result.name] = (when, Candidate(result.name, kind, name, result))
    missing = sorted(wanted - set(best))
    return [best[name][1] for name in sorted(best)], missing


def scratch_size(source_claim: Mapping[str, Any] | None, bytes_read: int | None) -> str:
    """The scratch claim's size: the source claim's request, else room for what the backup
    read plus a fifth (at least 1 GiB)."""
    if source_claim is not None:
        size = ((source_claim.get("spec") or {}).get("resources") or {}).get("requests", {})
        if size.get("storage"):
            return str(size["storage"])
    need = math.ceil((bytes_read or 0) * 1.2 / _GIB)
    return f"{max(1, need)}Gi"


def _source_claim(policy: BackupPolicy, source: str) -> str:
    """The claim a volume source reads: its ``claimName``, else (a selector) its own name."""
    for volume in policy.spec.sources.volumes:
        if (volume.name or volume.claim_name) == source and volume.claim_name:
            return volume.claim_name
    return source


def _claim_manifest(
    name: str, policy: BackupPolicy, size: str, job: Mapping[str, Any]
) -> dict[str, Any]:
    """The scratch claim, owned by its Job (deleted with it by the garbage collector)."""
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
    }
    assert policy.spec.test_restore is not None
    if policy.spec.test_restore.storage_class_name:
        spec["storageClassName"] = policy.spec.test_restore.storage_class_name
    owner = {"apiVersion": "batch/v1", "kind": "Job", "metadata": job["metadata"]}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/managed-by": "safehold-operator",
                LABEL_COMPONENT: COMPONENT_TEST_RESTORE,
                LABEL_POLICY: label_value(policy.metadata.name or ""),
            },
            # not as controller: blocking the Job's deletion would need rights on its
            # finalizers
            "ownerReferences": [owner_reference(owner, controller=False)],
        },
        "spec": spec,
    }


def _request(
    rt: Runtime,
    body: Mapping[str, Any],
    policy: BackupPolicy,
    location: BackupLocation,
    entry: TestRestoreSource,
    args: list[str],
    mounts: list[Mount],
    check: CheckContainer | None = None,
) -> JobRequest:
    labels = {LABEL_POLICY: policy.metadata.name or "", LABEL_SOURCE: entry.source}
    return policy_job(
        rt, body, policy, location, name=entry.job or "", component=COMPONENT_TEST_RESTORE,
        args=args, labels=labels, mounts=mounts, check=check,
    )  # fmt: skip


def start_volume_test(
    rt: Runtime,
    body: Mapping[str, Any],
    policy: BackupPolicy,
    location: BackupLocation,
    entry: TestRestoreSource,
    result: SourceResult,
) -> None:
    """The restore Job first, then its scratch claim (the Job's pod waits for it)."""
    ns = policy.metadata.namespace or ""
    spec = policy.spec.test_restore
    assert spec is not None
    assert entry.job
    assert entry.snapshot
    mounts = [
        Mount(name="staging", path=RESTORE_ROOT, volume={"emptyDir": {}}, read_only=False),
        Mount(
            name="scratch",
            path=f"{RESTORE_ROOT}/volume",
            volume={"persistentVolumeClaim": {"claimName": entry.job}},
            read_only=False,
        ),
    ]
    check = None
    if spec.check is not None:
        check = CheckContainer(
            spec.check.image,
            spec.check.command,
            {"scratch": SCRATCH_MOUNT},
            run_as_user=spec.check.run_as_user,
            run_as_group=spec.check.run_as_group,
        )
    args = commands.restore(entry.snapshot, RESTORE_ROOT, verify=True)
    request = _request(rt, body, policy, location, entry, args, mounts, check)
    rt.kube.create_job(build_job(replace(request, file_access="write")))
    job = rt.kube.get_job(ns, entry.job)
    if job is None:
        raise LookupError(f"the Job {entry.job} vanished right after it was created")
    size = scratch_size(rt.kube.get_pvc(ns, _source_claim(policy, entry.source)), result.bytes_read)
    rt.kube.create_pvc(ns, _claim_manifest(entry.job, policy, size, job))
    entry.claim = entry.job


def scratch_server(policy: BackupPolicy, source: str) -> ScratchDatabaseServer | None:
    """The policy's scratch server for the engine of database source ``source``, if any."""
    spec = policy.spec.test_restore
    d = next(d for d in policy.spec.sources.databases if d.name == source)
    servers = spec.scratch_databases if spec else []
    return next((s for s in servers if s.engine == d.engine), None)


def start_database_test(
    rt: Runtime,
    body: Mapping[str, Any],
    policy: BackupPolicy,
    location: BackupLocation,
    entry: TestRestoreSource,
) -> None:
    """One Job checks the run's dumps, and restores them into a scratch database when the
    policy names a scratch server for the engine; of a ``pointInTime`` source it reads the
    newest base backup and the WAL a recovery would replay (no scratch server)."""
    ns = policy.metadata.namespace or ""
    d = next(d for d in policy.spec.sources.databases if d.name == entry.source)
    source = source_name(ns, policy.metadata.name or "", d.name)
    if d.point_in_time is not None:
        # the newest base backup and all the WAL after it, read end to end
        args = commands.pg_restore_pitr_check(source)
        rt.kube.create_job(build_job(_request(rt, body, policy, location, entry, args, [])))
        return
    mounts: list[Mount] = []
    server = scratch_server(policy, entry.source)
    scratch = None
    if server is not None:
        scratch, mount = server_connection(server)
        mounts.append(mount)
    args = commands.restore_db_check(d.engine, source=source, run=entry.run, scratch=scratch)
    rt.kube.create_job(build_job(_request(rt, body, policy, location, entry, args, mounts)))
