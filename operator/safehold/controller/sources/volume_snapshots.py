"""Crash-consistent volume sources: back up a clone of a CSI VolumeSnapshot, not the live claim.

A volume source with ``snapshot`` set goes through these steps before its Job starts, one
step per reconcile pass (so a restarted operator resumes where it was, by the deterministic
names): create a VolumeSnapshot of the claim, wait until it is ``readyToUse``, create a claim
from it (``dataSource`` VolumeSnapshot) and let the Job mount that clone. When the source is
final, the snapshot and the Job (whose finished pod would hold the clone) are deleted; the
clone carries an owner reference to the snapshot, so the
garbage collector deletes it with the snapshot (the operator needs no right to delete claims),
and the snapshot one to the BackupRun, so both go even if the operator dies meanwhile.

Without snapshot support (no VolumeSnapshot CRD, no VolumeSnapshotClass for the claim's
driver, or the named class missing) the live claim is read and the source says so in its
warnings. A snapshot that reports ``status.error`` or is not ready within ``readyTimeout``
fails the source with ``SnapshotFailed`` or ``SnapshotTimeout``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from safehold.api import BackupPolicy, SourceResult
from safehold.api.backuppolicy import VolumeSnapshot
from safehold.api.types import parse_duration
from safehold.controller.common import now, parse_time
from safehold.controller.jobs import (
    LABEL_MANAGED_BY,
    LABEL_RUN,
    LABEL_SOURCE,
    MANAGED_BY,
    label_value,
    owner_reference,
)
from safehold.controller.kube import ApiException
from safehold.controller.runtime import Runtime
from safehold.controller.sources.claims import VolumeClaim, volume_source

__all__ = [
    "DEFAULT_CLASS_ANNOTATION",
    "FALLBACK_REASON",
    "SNAPSHOT_GROUP",
    "SNAPSHOT_VERSION",
    "SnapshotError",
    "cleanup",
    "prepare_claim",
    "snapshot_cut",
    "snapshot_settings",
]

log = logging.getLogger(__name__)
SNAPSHOT_GROUP = "snapshot.storage.k8s.io"
SNAPSHOT_VERSION = "v1"
DEFAULT_CLASS_ANNOTATION = "snapshot.storage.kubernetes.io/is-default-class"
#: The reason at the start of the warning a source gets when it reads the live claim.
FALLBACK_REASON = "SnapshotUnsupported"
#: Where the claim's CSI driver is recorded (by the PV controller, for dynamic provisioning).
_PROVISIONER_ANNOTATIONS = (
    "volume.kubernetes.io/storage-provisioner",
    "volume.beta.kubernetes.io/storage-provisioner",
)
Json = dict[str, Any]


class SnapshotError(Exception):
    """The snapshot cannot be used: fail the source with this reason and message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class _Names:
    snapshot: str
    clone: str


def _names(source: SourceResult) -> _Names:
    # the Job's name is deterministic and unique per run and source: reuse it
    base = source.job or source.name
    return _Names(snapshot=base, clone=f"{base[:55]}-clone")


def snapshot_settings(policy: BackupPolicy, claim: VolumeClaim) -> VolumeSnapshot | None:
    """The ``snapshot`` settings of the policy's volume source that ``claim`` comes from."""
    volume = volume_source(policy, claim)
    return volume.snapshot if volume is not None else None


def _get_snapshot(rt: Runtime, ns: str, name: str) -> Json | None:
    try:
        obj: Json = rt.kube.custom.get_namespaced_custom_object(
            SNAPSHOT_GROUP, SNAPSHOT_VERSION, ns, "volumesnapshots", name
        )
        return obj
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _classes(rt: Runtime) -> list[Json] | None:
    """The VolumeSnapshotClasses, or None when the cluster has no snapshot CRDs."""
    try:
        items: list[Json] = rt.kube.custom.list_cluster_custom_object(
            SNAPSHOT_GROUP, SNAPSHOT_VERSION, "volumesnapshotclasses"
        )["items"]
        return items
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _driver(pvc: Mapping[str, Any]) -> str | None:
    annotations = pvc.get("metadata", {}).get("annotations") or {}
    for key in _PROVISIONER_ANNOTATIONS:
        if annotations.get(key):
            return str(annotations[key])
    return None


def _pick_class(
    rt: Runtime, settings: VolumeSnapshot, pvc: Mapping[str, Any]
) -> tuple[str | None, str]:
    """The class to use, or None and why there is none."""
    classes = _classes(rt)
    if classes is None:
        return None, "the cluster has no VolumeSnapshot CRDs (snapshot.storage.k8s.io/v1)"
    wanted = settings.volume_snapshot_class_name
    if wanted:
        if any(c["metadata"]["name"] == wanted for c in classes):
            return wanted, ""
        return None, f"VolumeSnapshotClass {wanted!r} does not exist"
    driver = _driver(pvc)
    mine = [c for c in classes if driver and c.get("driver") == driver]
    if not mine:
        return None, f"no VolumeSnapshotClass for the claim's driver {driver or '(unknown)'}"
    defaults = [
        c for c in mine if (c["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION)
    ]
    chosen = sorted(defaults or mine, key=lambda c: str(c["metadata"]["name"]))[0]
    return str(chosen["metadata"]["name"]), ""


def _labels(run: str, source: str) -> dict[str, str]:
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_RUN: label_value(run),
        LABEL_SOURCE: label_value(source),
    }


def _create_snapshot(
    rt: Runtime, body: Mapping[str, Any], name: str, klass: str, claim: str, source: str
) -> None:
    ns = body["metadata"]["namespace"]
    manifest = {
        "apiVersion": f"{SNAPSHOT_GROUP}/{SNAPSHOT_VERSION}",
        "kind": "VolumeSnapshot",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": _labels(body["metadata"]["name"], source),
            "ownerReferences": [owner_reference(body, controller=False)],
        },
        "spec": {
            "volumeSnapshotClassName": klass,
            "source": {"persistentVolumeClaimName": claim},
        },
    }
    try:
        rt.kube.custom.create_namespaced_custom_object(
            SNAPSHOT_GROUP, SNAPSHOT_VERSION, ns, "volumesnapshots", manifest
        )
    except ApiException as exc:
        if exc.status != 409:
            raise


def _create_clone(
    rt: Runtime, body: Mapping[str, Any], snapshot: Json, pvc: Mapping[str, Any], name: str
) -> None:
    ns = body["metadata"]["namespace"]
    spec = pvc.get("spec", {})
    size = (snapshot.get("status") or {}).get("restoreSize") or (
        spec.get("resources", {}).get("requests", {}).get("storage")
    )
    clone_spec: Json = {
        "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
        "dataSource": {
            "apiGroup": SNAPSHOT_GROUP,
            "kind": "VolumeSnapshot",
            "name": snapshot["metadata"]["name"],
        },
    }
    if spec.get("storageClassName"):
        clone_spec["storageClassName"] = spec["storageClassName"]
    if spec.get("volumeMode"):
        clone_spec["volumeMode"] = spec["volumeMode"]
    manifest = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": _labels(body["metadata"]["name"], snapshot["metadata"]["name"]),
            "ownerReferences": [owner_reference(snapshot, controller=False)],
        },
        "spec": clone_spec,
    }
    rt.kube.create_pvc(ns, manifest)


def _fallback(source: SourceResult, why: str) -> None:
    if not any(w.startswith(FALLBACK_REASON) for w in source.warnings):
        source.warnings.append(
            f"{FALLBACK_REASON}: {why}; the live volume was read (not crash-consistent)"
        )


def prepare_claim(
    rt: Runtime,
    body: Mapping[str, Any],
    policy: BackupPolicy,
    source: SourceResult,
    claim: VolumeClaim,
    at: datetime | None = None,
) -> str | None:
    """The claim the source's Job mounts, or None while its snapshot is not ready yet.

    Raises :class:`SnapshotError` when the snapshot failed or timed out (after deleting it).
    """
    settings = snapshot_settings(policy, claim)
    if settings is None or any(w.startswith(FALLBACK_REASON) for w in source.warnings):
        return claim.claim
    ns = body["metadata"]["namespace"]
    names = _names(source)
    snapshot = _get_snapshot(rt, ns, names.snapshot) if _classes(rt) is not None else None
    if snapshot is None:
        pvc = rt.kube.get_pvc(ns, claim.claim) or {}
        klass, why = _pick_class(rt, settings, pvc)
        if klass is None:
            _fallback(source, why)
            return claim.claim
        _create_snapshot(rt, body, names.snapshot, klass, claim.claim, source.name)
        return None
    status = snapshot.get("status") or {}
    error = status.get("error") or {}
    if error:
        cleanup(rt, ns, source)
        raise SnapshotError(
            "SnapshotFailed",
            f"VolumeSnapshot {names.snapshot} of claim {claim.claim} failed: "
            f"{error.get('message') or 'no message'}",
        )
    if not status.get("readyToUse"):
        created = parse_time(snapshot["metadata"].get("creationTimestamp"))
        limit = parse_duration(settings.ready_timeout)
        if created is not None and (at or now()) - created > limit:
            cleanup(rt, ns, source)
            raise SnapshotError(
                "SnapshotTimeout",
                f"VolumeSnapshot {names.snapshot} of claim {claim.claim} was not ready to use "
                f"within {settings.ready_timeout} (spec.sources.volumes[].snapshot."
                "readyTimeout): check the CSI snapshotter, or raise the timeout",
            )
        return None
    if rt.kube.get_pvc(ns, names.clone) is None:
        pvc = rt.kube.get_pvc(ns, claim.claim) or {}
        _create_clone(rt, body, snapshot, pvc, names.clone)
    return names.clone


def snapshot_cut(rt: Runtime, ns: str, source: SourceResult) -> bool:
    """Whether the source's VolumeSnapshot has been cut (``status.creationTime`` is set):
    the moment it holds is fixed, even before it is ready to use, so whatever prepared the
    application for it (a freeze, a lock) may be undone (the CSI snapshotter's rule for
    resuming an application)."""
    if any(w.startswith(FALLBACK_REASON) for w in source.warnings):
        return False  # the live volume is read
    snapshot = _get_snapshot(rt, ns, _names(source).snapshot)
    status = (snapshot or {}).get("status") or {}
    return bool(status.get("creationTime")) and not status.get("error")


def cleanup(rt: Runtime, ns: str, source: SourceResult) -> None:
    """Delete the source's snapshot (its clone goes with it, by owner reference) and Job.

    The Job goes too: its finished pod still references the clone, and the claim's
    ``pvc-protection`` finalizer keeps a claim that any pod references. The Job's outcome
    is in the source's status by now.
    """
    if source.job:
        rt.kube.delete_job(ns, source.job)
    try:
        rt.kube.custom.delete_namespaced_custom_object(
            SNAPSHOT_GROUP,
            SNAPSHOT_VERSION,
            ns,
            "volumesnapshots",
            _names(source).snapshot,
            propagation_policy="Background",
        )
    except ApiException as exc:
        if exc.status != 404:
            raise
