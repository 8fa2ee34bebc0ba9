"""Cluster-resource sources: the export Job of a BackupRun and the apply Job of a RestoreRequest.

A policy's ``clusterResources`` source is backed up by one Job running ``safehold
export-resources``, and restored by one Job running ``safehold apply-resources``. Unlike
every other Job these pods talk to the API server, so they run as a ServiceAccount the
user names (``serviceAccountName``) and grants exactly the rights the selection needs:
the operator itself hands out no API rights and needs none beyond what it has. Without
a ServiceAccount the source fails at once with reason ``ServiceAccountRequired``.
"""

from __future__ import annotations

import re
from typing import Any, Final

from safehold.api import (
    BackupLocation,
    BackupPolicy,
    BackupRun,
    ErrorDetail,
    RestoredItem,
    RestoreRequest,
    SourceResult,
)
from safehold.controller.jobs import (
    COMPONENT_BACKUP,
    COMPONENT_RESTORE,
    LABEL_POLICY,
    LABEL_RESTORE,
    LABEL_RUN,
    LABEL_SOURCE,
    JobRequest,
    build_job,
    job_name,
    with_settings,
)
from safehold.controller.repository import with_repository
from safehold.controller.runtime import Runtime
from safehold.controller.snapshotmeta import meta_args, source_meta
from safehold.controller.sources import selector_string

__all__ = [
    "KIND",
    "SOURCE",
    "plan_resources_source",
    "resources_restore_item",
    "resources_restore_job",
    "resources_target_namespaces",
    "start_resources_backup",
]

#: The source's name in results and restores.
SOURCE = "resources"
KIND: Final = "clusterResources"
_EXISTING = {"Skip": "skip", "Overwrite": "update", "Fail": "fail"}
_GLOB = re.compile(r"[*?\[]")


def plan_resources_source(policy: BackupPolicy, wanted: set[str], run: str) -> list[SourceResult]:
    """The run's result entry for the policy's clusterResources source, if it has one."""
    spec = policy.spec.sources.cluster_resources
    if spec is None or (wanted and SOURCE not in wanted):
        return []
    result = SourceResult(name=SOURCE, kind=KIND, job=job_name(run, SOURCE))
    if not spec.service_account_name:
        result.phase = "Failed"
        result.job = None
        result.error = ErrorDetail(
            reason="ServiceAccountRequired",
            message=f"BackupPolicy {policy.metadata.name} spec.sources.clusterResources."
            "serviceAccountName is empty: name a ServiceAccount that may get and list the "
            "selected resources (example RBAC in docs/cluster-resources.md)",
        )
    return [result]


def _export_args(policy: BackupPolicy, run: BackupRun) -> list[str]:
    spec = policy.spec.sources.cluster_resources
    assert spec is not None
    ns = policy.metadata.namespace or ""
    args = ["export-resources", "--source", f"{ns}/{policy.metadata.name}/{SOURCE}"]
    namespaces = spec.include_namespaces or [ns]
    if "*" not in namespaces:
        for n in namespaces:
            args += ["--namespace", n]
    for n in spec.exclude_namespaces:
        args += ["--exclude-namespace", n]
    for r in spec.include_resources:
        args += ["--include-resources", r]
    for r in spec.exclude_resources:
        args += ["--exclude-resources", r]
    if spec.label_selector is not None:
        args += ["--selector", selector_string(spec.label_selector)]
    if spec.include_cluster_scoped:
        args.append("--cluster-scoped")
    if spec.include_secrets:
        args.append("--include-secrets")
    args += ["--type", run.spec.type, "--tag", f"run={run.metadata.name}"]
    for tag in run.spec.tags:
        args += ["--tag", tag]
    return args + meta_args(source_meta(policy.metadata.name or "", SOURCE))


def start_resources_backup(
    rt: Runtime,
    body: dict[str, Any],
    run: BackupRun,
    policy: BackupPolicy,
    location: BackupLocation,
    source: SourceResult,
) -> None:
    """Create the export Job of ``source`` (its name is already in the run's status)."""
    spec = policy.spec.sources.cluster_resources
    assert spec is not None
    settings = rt.job_settings(policy.spec.job)
    request = JobRequest(
        name=source.job or job_name(run.metadata.name or "", SOURCE),
        namespace=run.metadata.namespace or "",
        component=COMPONENT_BACKUP,
        args=_export_args(policy, run),
        labels={
            LABEL_RUN: run.metadata.name or "",
            LABEL_SOURCE: SOURCE,
            LABEL_POLICY: policy.metadata.name or "",
        },
        owner=body,
        image=rt.image,
        active_deadline_seconds=3600,
        backoff_limit=1,
        service_account_name=spec.service_account_name,
    )
    # the policy's spec.job applies to every backup Job, the export Job included (it
    # used to get only the deadline, retries and node selector: no tolerations, no
    # resources, no priority class)
    rt.kube.create_job(build_job(with_settings(with_repository(request, location), settings)))


def resources_restore_item(req: RestoreRequest, source: dict[str, Any]) -> RestoredItem:
    """The request's status entry for a clusterResources source of the run."""
    ns = req.metadata.namespace or ""
    mapping = req.spec.namespace_mapping
    target = SOURCE + (
        " -> " + ", ".join(f"{a}={b}" for a, b in sorted(mapping.items())) if mapping else ""
    )
    item = RestoredItem(
        source=str(source["name"]), kind=KIND, snapshot_id=source["snapshotId"], target=target
    )
    filt = req.spec.resources
    if filt is None or not filt.service_account_name:
        item.phase = "Failed"
        item.error = ErrorDetail(
            reason="ServiceAccountRequired",
            message=f"RestoreRequest {req.metadata.name} in {ns}: spec.resources."
            "serviceAccountName is empty: name a ServiceAccount that may get and create "
            "(and for Overwrite patch) the restored resources (docs/cluster-resources.md)",
        )
    return item


def resources_target_namespaces(req: RestoreRequest) -> list[str]:
    """The namespaces other than the request's own that a clusterResources restore may
    write into: every ``namespaceMapping`` target, and every namespace of
    ``spec.resources.includeNamespaces`` (mapped). Each needs the target's grant
    (safehold.controller.grants); the apply Job is told to write nowhere else
    (``--only-namespace``), so objects of a namespace the request did not name (a
    snapshot of several namespaces restored without includeNamespaces, or with a
    pattern) stop the restore
    before its first write instead of landing in a namespace nobody checked."""
    ns = req.metadata.namespace or ""
    mapping = req.spec.namespace_mapping
    filt = req.spec.resources
    # a pattern names no namespace to check: the namespaces it matches must be named
    literal = [n for n in (filt.include_namespaces if filt else []) if not _GLOB.search(n)]
    named = {mapping.get(n, n) for n in literal}
    return sorted((set(mapping.values()) | named) - {ns})


def _apply_args(req: RestoreRequest, item: RestoredItem) -> list[str]:
    spec = req.spec
    args = ["apply-resources", item.snapshot_id or ""]
    for n in sorted({req.metadata.namespace or "", *resources_target_namespaces(req)}):
        args += ["--only-namespace", n]
    filt = spec.resources
    if filt is not None:
        for n in filt.include_namespaces:
            args += ["--namespace", n]
        for n in filt.exclude_namespaces:
            args += ["--exclude-namespace", n]
        for r in filt.include_resources:
            args += ["--include-resources", r]
        for r in filt.exclude_resources:
            args += ["--exclude-resources", r]
        for name in filt.names:
            args += ["--name", name]
        if filt.label_selector is not None:
            args += ["--selector", selector_string(filt.label_selector)]
    for old, new in sorted(spec.namespace_mapping.items()):
        args += ["--map-namespace", f"{old}={new}"]
    args += ["--existing", _EXISTING[spec.existing_resource_policy]]
    if spec.dry_run:
        args.append("--dry-run")
    return args


def resources_restore_job(
    rt: Runtime,
    body: dict[str, Any],
    req: RestoreRequest,
    location: BackupLocation,
    item: RestoredItem,
) -> JobRequest:
    """The apply Job of ``item``, in the request's namespace (where its ServiceAccount is)."""
    filt = req.spec.resources
    request = JobRequest(
        name=job_name(req.metadata.name or "", item.source),
        namespace=req.metadata.namespace or "",
        component=COMPONENT_RESTORE,
        args=_apply_args(req, item),
        labels={LABEL_RESTORE: req.metadata.name or "", LABEL_SOURCE: item.source},
        owner=body,
        image=rt.image,
        active_deadline_seconds=3600,
        service_account_name=filt.service_account_name if filt else None,
    )
    return with_repository(request, location)
