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
from typing import Any, Final, Literal

from safehold.api import (
    BackupLocation,
    ErrorDetail,
    RestoredItem,
    RestoreRequest,
    SourceResult,
)
from safehold.api.sources import RESOURCES_SOURCE
from safehold.controller import commands
from safehold.controller.jobs import (
    JobRequest,
    job_name,
)
from safehold.controller.runtime import Runtime
from safehold.controller.snapshotmeta import source_meta
from safehold.controller.sources import BackupJob, RunContext, restore_job
from safehold.controller.sources.claims import selector_string

__all__ = [
    "KIND",
    "SOURCE",
    "ResourcesSource",
    "resources_restore_item",
    "resources_restore_job",
    "resources_target_namespaces",
]

#: The source's name in results and restores.
SOURCE = RESOURCES_SOURCE
KIND: Final = "clusterResources"
_EXISTING: dict[str, Literal["skip", "update", "fail"]] = {
    "Skip": "skip",
    "Overwrite": "update",
    "Fail": "fail",
}
_GLOB = re.compile(r"[*?\[]")


class ResourcesSource:
    """The policy's clusterResources source: one ``safehold export-resources`` Job, run as
    the ServiceAccount the policy names."""

    kind: Final = KIND

    def names(self, ctx: RunContext) -> set[str]:
        return {SOURCE} if ctx.policy.spec.sources.cluster_resources is not None else set()

    def plan(self, ctx: RunContext, wanted: set[str]) -> list[SourceResult]:
        spec = ctx.policy.spec.sources.cluster_resources
        if spec is None or (wanted and SOURCE not in wanted):
            return []
        result = SourceResult(name=SOURCE, kind=KIND, job=job_name(ctx.run_name, SOURCE))
        if not spec.service_account_name:
            result.phase = "Failed"
            result.job = None
            result.error = ErrorDetail(
                reason="ServiceAccountRequired",
                message=f"BackupPolicy {ctx.policy_name} spec.sources.clusterResources."
                "serviceAccountName is empty: name a ServiceAccount that may get and list the "
                "selected resources (example RBAC in docs/cluster-resources.md)",
            )
        return [result]

    def backup_job(self, ctx: RunContext, source: SourceResult) -> BackupJob:
        spec = ctx.policy.spec.sources.cluster_resources
        if spec is None:
            raise ctx.gone(source.name)
        namespaces = spec.include_namespaces or [ctx.namespace]
        selection = commands.ResourceSelection(
            namespaces=[] if "*" in namespaces else namespaces,
            exclude_namespaces=spec.exclude_namespaces,
            include_resources=spec.include_resources,
            exclude_resources=spec.exclude_resources,
            selector=selector_string(spec.label_selector) if spec.label_selector else None,
        )
        args = commands.export_resources(
            selection,
            source=ctx.source_name(SOURCE),
            host=ctx.snapshot_host,
            cluster_scoped=spec.include_cluster_scoped,
            include_secrets=spec.include_secrets,
            type=ctx.run.spec.type,
            run=ctx.run_name,
            tags=ctx.run.spec.tags,
            meta=source_meta(ctx.policy_name, SOURCE),
        )
        # the policy's spec.job applies to every backup Job, the export Job included
        return BackupJob(
            args=args,
            service_account_name=spec.service_account_name,
            active_deadline_seconds=3600,
            backoff_limit=1,
        )

    def finished(self, ctx: RunContext, source: SourceResult) -> None:
        return None


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
    filt = spec.resources
    selection = commands.ResourceSelection()
    if filt is not None:
        selection = commands.ResourceSelection(
            namespaces=filt.include_namespaces,
            exclude_namespaces=filt.exclude_namespaces,
            include_resources=filt.include_resources,
            exclude_resources=filt.exclude_resources,
            selector=selector_string(filt.label_selector) if filt.label_selector else None,
        )
    return commands.apply_resources(
        item.snapshot_id or "",
        selection,
        only_namespaces=sorted({req.metadata.namespace or "", *resources_target_namespaces(req)}),
        names=filt.names if filt is not None else (),
        namespace_mapping=spec.namespace_mapping,
        existing=_EXISTING[spec.existing_resource_policy],
        dry_run=spec.dry_run,
    )


def resources_restore_job(
    rt: Runtime,
    body: dict[str, Any],
    req: RestoreRequest,
    location: BackupLocation,
    item: RestoredItem,
) -> JobRequest:
    """The apply Job of ``item``, in the request's namespace (where its ServiceAccount is)."""
    filt = req.spec.resources
    return restore_job(
        rt.image,
        body,
        req,
        location,
        item.source,
        _apply_args(req, item),
        service_account_name=filt.service_account_name if filt else None,
        active_deadline_seconds=3600,
    )
