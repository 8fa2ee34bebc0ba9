"""A RestoreRequest's plan: which sources it restores, where each goes, and what may stop it.

Planned once, on the first pass after the origin is known (safehold.controller.
restoresources): the sources chosen (``spec.sources``, ``spec.target``), one status item
per source with its target, the grants of every namespace other than the request's
(safehold.controller.grants, checked before anything is looked at or created there), the
chart's policyLimits, and the claims a volume restore needs, created here (claim_manifest).
"""

from __future__ import annotations

from typing import Any

from safehold.api import (
    BackupPolicy,
    ErrorDetail,
    RestoredItem,
    RestoreRequest,
    RestoreRequestStatus,
)
from safehold.controller.common import Stop
from safehold.controller.grants import Denial, check_grant
from safehold.controller.jobs import LABEL_RESTORE
from safehold.controller.limits import root_field
from safehold.controller.restoresources import Origin, RestoreSource
from safehold.controller.runtime import Runtime
from safehold.controller.snapshotmeta import BASE_KIND, SOURCE_KIND, ClaimShape, claim_shape
from safehold.controller.sources.databases import (
    database_restore_host,
    database_restore_item,
    service_namespace,
)
from safehold.controller.sources.resources import KIND as RESOURCES_KIND
from safehold.controller.sources.resources import (
    resources_restore_item,
    resources_target_namespaces,
)

__all__ = [
    "CLAIM_TARGET",
    "chosen_sources",
    "claim_manifest",
    "plan_restore",
    "point_in_time_sources",
    "restore_denial",
    "volume_namespace",
]


_DEFAULT_SIZE = "1Gi"
#: How a restore item names a claim it writes into (``persistentvolumeclaim/NS/NAME``).
CLAIM_TARGET = "persistentvolumeclaim/"


def _claim_of(policy: BackupPolicy | None, source: RestoreSource) -> str:
    """The claim a volume source was read from: as recorded in the snapshot, else the
    policy's claimName, else the source's name."""
    recorded = claim_shape(source.meta).name
    if recorded:
        return recorded
    for v in policy.spec.sources.volumes if policy else []:
        if (v.name or v.claim_name) == source.name and v.claim_name:
            return v.claim_name
    return source.name


def point_in_time_sources(policy: BackupPolicy | None, origin: Origin) -> frozenset[str]:
    """The origin's database sources backed up for point-in-time recovery: by their base
    backups' metadata (resolved from the repository), else by the policy's pointInTime."""
    pitr = {s.name for s in origin.sources if s.meta.get(SOURCE_KIND) == BASE_KIND}
    for d in policy.spec.sources.databases if policy else []:
        if d.point_in_time is not None:
            pitr.add(d.name)
    return frozenset(s.name for s in origin.sources if s.kind == "database" and s.name in pitr)


def chosen_sources(
    req: RestoreRequest, origin: Origin, pitr: frozenset[str] = frozenset()
) -> list[RestoreSource]:
    """The sources ``req`` restores from ``origin``; a name it has no snapshot of, and
    ``spec.target`` or ``spec.paths`` where they would be ignored, stop the request.
    ``pitr``: the point-in-time sources, which restore into ``spec.target`` too."""
    spec = req.spec
    names = [s.name for s in origin.sources]
    unknown = sorted(set(spec.sources) - set(names))
    if unknown:
        raise Stop(
            "SourceNotFound",
            f"spec.sources: {', '.join(unknown)} has no snapshot in {origin.described} "
            f"(sources with a snapshot: {', '.join(names) or 'none'})",
        )
    chosen = [s for s in origin.sources if not spec.sources or s.name in spec.sources]
    if not chosen:
        raise Stop("NothingToRestore", f"{origin.described} has no snapshot to restore")
    volumes = [s.name for s in chosen if s.kind == "volume"]
    into_claims = volumes + [s.name for s in chosen if s.name in pitr]
    if spec.target is not None and (len(chosen) != 1 or not into_claims):
        held = [s.name for s in origin.sources if s.kind == "volume" or s.name in pitr]
        raise Stop(
            "InvalidSpec",
            "spec.target restores one volume (or point-in-time database) source: "
            + (
                f"set spec.sources to one of {', '.join(held)}"
                if held
                else f"{origin.described} holds none"
            ),
        )
    if spec.paths and not volumes:
        raise Stop(
            "InvalidSpec",
            f"spec.paths chooses files of volume sources, and the request restores none "
            f"({', '.join(s.name for s in chosen)}): remove spec.paths, or choose a volume "
            "source in spec.sources",
        )
    return chosen


def _database_item(
    req: RestoreRequest, origin: Origin, policy: BackupPolicy | None, s: RestoreSource
) -> RestoredItem:
    item = database_restore_item(req, policy, origin.policy, s.name, s.snapshot_id)
    if item.phase == "Pending" and s.run_tag is None and req.spec.point_in_time is not None:
        item.phase = "Failed"
        item.error = ErrorDetail(
            reason="NoRunTag",
            message=f"the dumps of {s.name} carry no run= tag, so restore-db cannot pick "
            "those of spec.pointInTime: restore them with the safehold CLI by snapshot id",
        )
    return item


def volume_namespace(req: RestoreRequest) -> tuple[str, str]:
    """The namespace volume sources are restored into, and the field that chose it."""
    ns = req.metadata.namespace or ""
    target = req.spec.target
    if target is not None and target.namespace:
        return target.namespace, "spec.target.namespace"
    if ns in req.spec.namespace_mapping:
        return req.spec.namespace_mapping[ns], f"spec.namespaceMapping[{ns}]"
    return ns, "the request's namespace"


def _other_namespaces(
    rt: Runtime,
    req: RestoreRequest,
    policy: BackupPolicy | None,
    kind: str,
    source: str,
    volume_ns: str,
) -> list[tuple[str, str]]:
    """(namespace, what) for each namespace other than the request's that restoring
    ``source`` writes into: a volume's target, a clusterResources restore's mapped and
    named namespaces, a database server addressed as a Service of another namespace."""
    ns = req.metadata.namespace or ""
    if kind == RESOURCES_KIND:
        return [
            (t, f"clusterResources source {source} (spec.namespaceMapping, "
                "spec.resources.includeNamespaces)")
            for t in resources_target_namespaces(req)
        ]  # fmt: skip
    if kind == "database":
        host = database_restore_host(policy, source)
        found = service_namespace(host) if host else None
        if found is None or found[0] == ns:
            return []
        tns, certain = found
        if not certain and not rt.kube.namespace_exists(tns):
            return []  # NAME.OTHER where no namespace OTHER exists: an outside host
        return [(tns, f"database source {source} (its server {host} is a Service of {tns})")]
    if volume_ns == ns:
        return []
    _, field = volume_namespace(req)
    return [(volume_ns, f"volume source {source} ({field})")]


def restore_denial(
    rt: Runtime,
    req: RestoreRequest,
    policy: BackupPolicy | None,
    kind: str,
    source: str,
    volume_ns: str,
) -> Denial | None:
    """Why restoring ``source`` may not write where it would (the target namespace's
    grant, safehold.controller.grants), or None."""
    ns = req.metadata.namespace or ""
    for tns, what in _other_namespaces(rt, req, policy, kind, source, volume_ns):
        denial = check_grant(rt.kube, ns, tns, what)
        if denial is not None:
            return denial
    return None


def _limit(
    rt: Runtime, req: RestoreRequest, policy: BackupPolicy | None, item: RestoredItem
) -> None:
    """Fail ``item`` when it names what the chart's policyLimits do not allow: the
    ServiceAccount a clusterResources restore runs as, a database server's host, a
    restore of files into a claim (a volume's, a point-in-time data directory) as root."""
    ns = req.metadata.namespace or ""
    why: str | None = None
    if item.kind == "volume" or item.target.startswith(CLAIM_TARGET):
        own = req.spec.job
        why = rt.limits.root(rt.job_settings(policy.spec.job if policy else None, own))
        owner = f"BackupPolicy {policy.metadata.name} " if policy else ""
        reason, field = "RunAsRootNotAllowed", owner + root_field(policy)
        if own is not None and own.run_as_root is not None:
            field = "spec.job.runAsRoot"
    elif item.kind == RESOURCES_KIND and req.spec.resources is not None:
        sa = req.spec.resources.service_account_name
        why = rt.limits.service_account(ns, sa) if sa else None
        reason, field = "ServiceAccountNotAllowed", "spec.resources.serviceAccountName"
    elif item.kind == "database":
        host = database_restore_host(policy, item.source)
        why = rt.limits.database_host(host) if host else None
        reason, field = "DatabaseHostNotAllowed", f"the host of database source {item.source}"
    if why and item.phase in ("Pending", "Skipped"):
        item.phase = "Failed"
        item.error = ErrorDetail(reason=reason, message=f"{field}: {why}")


def plan_restore(
    rt: Runtime,
    req: RestoreRequest,
    origin: Origin,
    policy: BackupPolicy | None,
    status: RestoreRequestStatus,
) -> list[RestoredItem]:
    pitr = point_in_time_sources(policy, origin)
    chosen = chosen_sources(req, origin, pitr)
    volume_ns, _ = volume_namespace(req)
    # every target namespace is checked before anything is looked at or created there
    for s in chosen:
        kind = "volume" if s.name in pitr else s.kind  # a data directory into a claim
        denial = restore_denial(rt, req, policy, kind, s.name, volume_ns)
        if denial is not None:
            raise Stop(denial.reason, denial.message)
    items: list[RestoredItem] = []
    claims: list[tuple[RestoredItem, dict[str, Any]]] = []  # to create once all are planned
    for s in chosen:
        if s.kind == RESOURCES_KIND:
            items.append(resources_restore_item(req, {"name": s.name, "snapshotId": s.snapshot_id}))
        elif s.kind == "database" and s.name not in pitr:
            items.append(_database_item(req, origin, policy, s))
        else:
            item, manifest = _volume_item(rt, req, policy, s, status, volume_ns)
            if s.name in pitr:
                item.kind = "database"  # a PostgreSQL data directory, written into the claim
                if req.spec.target is None:
                    item.phase = "Failed"
                    item.error = ErrorDetail(
                        reason="TargetRequired",
                        message=f"database source {s.name!r} is backed up for point-in-time "
                        "recovery: a restore writes the server's data directory into a claim; "
                        "set spec.sources to it, spec.target.claimName (the data volume of a "
                        "stopped server, or a new one) and spec.target.path (the data "
                        "directory inside it, e.g. pgdata)",
                    )
            items.append(item)
            if manifest is not None:
                claims.append((item, manifest))
        _limit(rt, req, policy, items[-1])
    # after every source is planned: a later source's TargetExists (existingResourcePolicy
    # Fail) stops the request before any claim is made, and a refused source gets none
    for item, manifest in claims:
        if item.phase != "Failed":
            rt.kube.create_pvc(volume_ns, manifest)
    if req.spec.dry_run:
        status.warnings.append("dry run: nothing was written; status.restored lists the plan")
    return items


def _volume_item(
    rt: Runtime,
    req: RestoreRequest,
    policy: BackupPolicy | None,
    s: RestoreSource,
    status: RestoreRequestStatus,
    tns: str,
) -> tuple[RestoredItem, dict[str, Any] | None]:
    """The source's item, and the claim to create for it (None when it exists, or on a
    dry run). An existing claim is decided by existingResourcePolicy."""
    spec = req.spec
    ns = req.metadata.namespace or ""
    original = _claim_of(policy, s)
    target = spec.target
    claim = target.claim_name if target else original
    item = RestoredItem(
        source=s.name,
        kind="volume",
        snapshot_id=s.snapshot_id,
        target=f"{CLAIM_TARGET}{tns}/{claim}",
    )
    existing = rt.kube.get_pvc(tns, claim)
    if existing is not None and not _ours(existing, req):
        if spec.existing_resource_policy == "Fail":
            raise Stop(
                "TargetExists",
                f"PersistentVolumeClaim {tns}/{claim} already exists and "
                "existingResourcePolicy is Fail: delete it, choose spec.target.claimName, "
                "or set existingResourcePolicy to Overwrite",
            )
        if spec.existing_resource_policy == "Skip":
            item.phase = "Skipped"
            item.skipped = 1
            status.warnings.append(
                f"{item.target} exists and was left untouched (existingResourcePolicy "
                "Skip): set Overwrite to restore into it"
            )
    if spec.dry_run:
        item.phase = "Skipped"
        return item, None
    if existing is not None:
        return item, None
    old = rt.kube.get_pvc(ns, original)
    return item, claim_manifest(req, claim, original, old, claim_shape(s.meta))


def _ours(pvc: dict[str, Any], req: RestoreRequest) -> bool:
    labels = pvc["metadata"].get("labels") or {}
    return labels.get(LABEL_RESTORE) == req.metadata.name


def claim_manifest(
    req: RestoreRequest,
    claim: str,
    original: str,
    old: dict[str, Any] | None,
    recorded: ClaimShape,
) -> dict[str, Any]:
    """The claim to create: ``spec.target`` first, then the original claim if it still
    exists, then what its snapshot recorded (size, class, access modes, volume mode,
    labels), then defaults. ``storageClassMapping`` maps the original's or the recorded
    class; the backed-up labels go only onto a claim of the original's name."""
    old_spec = (old or {}).get("spec") or {}
    target = req.spec.target
    size = (
        (target.size if target else None)
        or old_spec.get("resources", {}).get("requests", {}).get("storage")
        or recorded.size
        or _DEFAULT_SIZE
    )
    sc = target.storage_class_name if target else None
    backed_up_class = old_spec.get("storageClassName") or recorded.storage_class_name
    if sc is None and backed_up_class:
        sc = req.spec.storage_class_mapping.get(backed_up_class, backed_up_class)
    labels: dict[str, str] = {}
    if claim == original:
        labels.update(((old or {}).get("metadata") or {}).get("labels") or recorded.labels or {})
    labels.update(
        {
            "app.kubernetes.io/managed-by": "safehold-operator",
            LABEL_RESTORE: req.metadata.name or "",
        }
    )
    spec: dict[str, Any] = {
        "accessModes": old_spec.get("accessModes")
        or list(recorded.access_modes)
        or ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
    }
    if sc:
        spec["storageClassName"] = sc
    mode = old_spec.get("volumeMode") or recorded.volume_mode
    if mode:
        spec["volumeMode"] = mode
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "labels": labels},
        "spec": spec,
    }
