"""Volume sources: one ``safehold backup`` Job per claim, mounted read-only.

The claims come from safehold.controller.sources.claims (a name, or a selector as of
the run's first pass); a source with ``snapshot`` set is read from a clone of a CSI
VolumeSnapshot (safehold.controller.sources.volume_snapshots) that is deleted once its
Job has ended. A ReadWriteOnce claim in use is read on its pod's node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Final

from safehold.api import ErrorDetail, SourceResult
from safehold.controller import commands
from safehold.controller.job_hooks import job_hook_args
from safehold.controller.jobs import Mount, job_name
from safehold.controller.snapshotmeta import original_claim, source_meta, volume_meta
from safehold.controller.sources import BackupJob, RunContext, SourceFailed
from safehold.controller.sources.claims import VolumeClaim, claim_node
from safehold.controller.sources.volume_snapshots import (
    SnapshotError,
    prepare_claim,
    snapshot_cut,
    snapshot_settings,
)
from safehold.controller.sources.volume_snapshots import cleanup as snapshot_cleanup

__all__ = ["SOURCE_MOUNT", "VolumeSources"]

#: Where the source claim is mounted (read-only) in the backup Job; the snapshot's top
#: directory is therefore ``volume``.
SOURCE_MOUNT = "/data/volume"


class VolumeSources:
    """The policy's volume sources, as ``claims`` (resolved on this pass)."""

    kind: Final = "volume"

    def __init__(self, claims: Sequence[VolumeClaim]) -> None:
        self.claims = {c.source: c for c in claims}
        self.listed = tuple(claims)  # as resolved, before two of one name could collapse

    def names(self, ctx: RunContext) -> set[str]:
        return set(self.claims)

    def plan(self, ctx: RunContext, wanted: set[str]) -> list[SourceResult]:
        out: list[SourceResult] = []
        for c in self.claims.values():
            if wanted and c.source not in wanted:
                continue
            result = SourceResult(
                name=c.source, kind="volume", job=job_name(ctx.run_name, c.source)
            )
            pvc = ctx.rt.kube.get_pvc(ctx.namespace, c.claim)
            where = f"BackupPolicy {ctx.policy_name} {c.field}: PersistentVolumeClaim {c.claim!r}"
            if pvc is None:
                result.error = ErrorDetail(
                    reason="ClaimNotFound",
                    message=f"{where} does not exist in namespace {ctx.namespace}: create it "
                    "or fix the name",
                )
            elif (pvc.get("spec") or {}).get("volumeMode") == "Block":
                # a pod can only see it as a device, and the engine reads file systems:
                # refused here, before a Job that could never mount it
                result.error = ErrorDetail(
                    reason="BlockVolumeUnsupported",
                    message=f"{where} is a raw block volume (volumeMode: Block), which a "
                    "backup cannot read as files: back up what runs on it instead (a "
                    "database source), or leave it out of the policy's volumes",
                )
            if result.error is not None:
                result.phase = "Failed"
                result.job = None
            out.append(result)
        return out

    def backup_job(self, ctx: RunContext, source: SourceResult) -> BackupJob | None:
        claim = self.claims.get(source.name)
        if claim is None:
            raise ctx.gone(source.name)
        try:
            mounted = prepare_claim(ctx.rt, ctx.body, ctx.policy, source, claim)
        except SnapshotError as exc:
            raise SourceFailed(ErrorDetail(reason=exc.reason, message=exc.message)) from exc
        if mounted is None:  # the snapshot is not ready yet
            return None
        return _backup_job(ctx, source, replace(claim, claim=mounted))

    def captured(self, ctx: RunContext, source: SourceResult) -> bool:
        """Whether what the source's backup reads is fixed already: its VolumeSnapshot is
        cut (its Job may still be reading the clone). A source read live is not."""
        claim = self.claims.get(source.name)
        if claim is None or snapshot_settings(ctx.policy, claim) is None:
            return False
        return snapshot_cut(ctx.rt, ctx.namespace, source)

    def finished(self, ctx: RunContext, source: SourceResult) -> None:
        claim = self.claims.get(source.name)
        if claim is not None and snapshot_settings(ctx.policy, claim):
            snapshot_cleanup(ctx.rt, ctx.namespace, source)


def _backup_job(ctx: RunContext, source: SourceResult, claim: VolumeClaim) -> BackupJob:
    """``claim`` may be a snapshot clone of the source's claim."""
    kube, ns = ctx.rt.kube, ctx.namespace
    pvc = kube.get_pvc(ns, claim.claim)
    node = claim_node(pvc, kube.list_pods(ns)) if pvc else None
    # The hooks run in a container of their own, without the Secrets (docs/hooks.md); the
    # backup gets the same options for their number, timeout and on-error.
    hooks = job_hook_args(ctx.policy, claim)
    # what a fresh cluster needs to re-create the claim, read from the ORIGINAL claim
    original = original_claim(ctx.policy, claim)
    source_pvc = pvc if original == claim.claim else kube.get_pvc(ns, original)
    check = ctx.policy.spec.verification
    args = commands.backup(
        SOURCE_MOUNT,
        source=ctx.source_name(source.name),
        host=ctx.snapshot_host,
        type=ctx.run.spec.type,
        run=ctx.run_name,
        tags=ctx.run.spec.tags,
        include=claim.include,  # relative to the volume's root, SOURCE_MOUNT
        exclude=claim.exclude,
        verify=check is not None and check.after_backup,
        hooks=hooks,
        meta=source_meta(ctx.policy_name, source.name)
        | volume_meta(source_pvc or {"metadata": {"name": original}}),
    )
    mount = Mount(
        name="source",
        path=SOURCE_MOUNT,
        volume={"persistentVolumeClaim": {"claimName": claim.claim, "readOnly": True}},
        read_only=True,
    )
    return BackupJob(
        args=args,
        mounts=[mount],
        node_name=node,
        hooks=hooks,
        hook_mounts=["source"],
        file_access="read",
    )
