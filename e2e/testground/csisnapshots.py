"""A CSI snapshot driver for the test ground, so the operator's real snapshot code path runs.

The test ground has no CSI driver and no external-snapshotter. This module plays both for
one StorageClass, ``csi-hostpath`` (provisioner :data:`DRIVER`), and one VolumeSnapshotClass,
``csi-hostpath-snapclass``:

- a claim of the class gets a directory under ``<cluster>/csi-volumes/`` and a PersistentVolume
  (``hostPath``) pre-bound to it, once the PV controller has annotated the claim with its
  provisioner (as external provisioners do); a claim whose ``dataSource`` is a VolumeSnapshot
  starts as a copy of the snapshot's directory;
- a VolumeSnapshot of such a claim is cut by copying the claim's directory to
  ``<cluster>/csi-snapshots/<uid>``, then marked ``readyToUse`` with ``restoreSize`` and
  ``creationTime``; the directory goes when the VolumeSnapshot is deleted;
- the source claim's annotations steer it: :data:`FAIL_ANNOTATION` (value: the message) makes
  the snapshot report ``status.error``, :data:`HOLD_ANNOTATION` keeps it not ready forever;
- :attr:`SnapshotDriver.on_ready` is called right after a snapshot is marked ready, so a test
  can change the live volume at exactly that moment;
- Released volumes of the class are deleted with their directory.

The ``csi_snapshots`` fixture (session) installs the snapshot CRDs of ``snapshot-crds/``,
creates both classes and runs the driver in a thread until the session ends.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from testground.kube import Cluster
from testground.rest import Api, ApiError

__all__ = [
    "CRDS",
    "DRIVER",
    "FAIL_ANNOTATION",
    "HOLD_ANNOTATION",
    "SNAPSHOT_CLASS",
    "STORAGE_CLASS",
    "SnapshotDriver",
    "csi_snapshots",
]

Json = dict[str, Any]
DRIVER = "testground.safehold.io/csi-hostpath"
STORAGE_CLASS = "csi-hostpath"
SNAPSHOT_CLASS = "csi-hostpath-snapclass"
FAIL_ANNOTATION = "testground.safehold.io/snapshot-fail"
HOLD_ANNOTATION = "testground.safehold.io/snapshot-hold"
CRDS = Path(__file__).resolve().parent / "snapshot-crds"
_PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
_CLAIM_PROVISIONER = (
    "volume.kubernetes.io/storage-provisioner",
    "volume.beta.kubernetes.io/storage-provisioner",
)
_SNAPSHOTS = "/apis/snapshot.storage.k8s.io/v1"
log = logging.getLogger("testground.csisnapshots")


class SnapshotDriver:
    """Provisions the class's claims and cuts their snapshots; ``sync()`` does one pass."""

    def __init__(self, api: Api, root: Path) -> None:
        self.api = api
        self.volumes = root / "csi-volumes"
        self.snapshots = root / "csi-snapshots"
        self.volumes.mkdir(parents=True, exist_ok=True)
        self.snapshots.mkdir(parents=True, exist_ok=True)
        #: Called with (namespace, snapshot name, source claim directory) once it is ready.
        self.on_ready: Callable[[str, str, Path], None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ set-up
    def ensure_classes(self) -> None:
        """Create the StorageClass and the VolumeSnapshotClass of the driver."""
        for path, body in (
            (
                "/apis/storage.k8s.io/v1/storageclasses",
                {
                    "apiVersion": "storage.k8s.io/v1",
                    "kind": "StorageClass",
                    "metadata": {"name": STORAGE_CLASS},
                    "provisioner": DRIVER,
                    "reclaimPolicy": "Delete",
                    "volumeBindingMode": "Immediate",
                },
            ),
            (
                f"{_SNAPSHOTS}/volumesnapshotclasses",
                {
                    "apiVersion": "snapshot.storage.k8s.io/v1",
                    "kind": "VolumeSnapshotClass",
                    "metadata": {"name": SNAPSHOT_CLASS},
                    "driver": DRIVER,
                    "deletionPolicy": "Delete",
                },
            ),
        ):
            try:
                self.api.post(path, body)
            except ApiError as exc:
                if exc.status != 409:
                    raise

    # ------------------------------------------------------------ claims
    def _claim(self, namespace: str, name: str) -> Json | None:
        try:
            return self.api.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def claim_dir(self, claim: Json) -> Path | None:
        """The directory of a bound claim of the class."""
        if claim.get("status", {}).get("phase") != "Bound":
            return None
        pv = self.api.get(f"/api/v1/persistentvolumes/{claim['spec']['volumeName']}")
        path = pv["spec"].get("hostPath", {}).get("path")
        return Path(path) if path else None

    def _provision(self, pvc: Json) -> None:
        meta = pvc["metadata"]
        annotations = meta.get("annotations") or {}
        if not any(annotations.get(k) == DRIVER for k in _CLAIM_PROVISIONER):
            return  # the PV controller has not handed the claim to this driver yet
        name = f"pvc-{meta['uid']}"
        directory = self.volumes / name
        source = pvc["spec"].get("dataSource") or {}
        if not directory.exists():
            if source.get("kind") == "VolumeSnapshot":
                origin = self._snapshot_dir(meta["namespace"], source["name"])
                if origin is None:
                    return  # not ready (yet)
                tmp = self.volumes / f".{name}.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(origin, tmp, symlinks=True)
                tmp.rename(directory)
            else:
                directory.mkdir(parents=True)
        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {_PROVISIONED_BY: DRIVER}},
            "spec": {
                "capacity": {
                    "storage": pvc["spec"].get("resources", {}).get("requests", {}).get("storage")
                    or "1Gi"
                },
                "accessModes": pvc["spec"].get("accessModes") or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": STORAGE_CLASS,
                "volumeMode": "Filesystem",
                "hostPath": {"path": str(directory), "type": "Directory"},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        try:
            self.api.post("/api/v1/persistentvolumes", body)
        except ApiError as exc:
            if exc.status != 409:
                raise

    # ------------------------------------------------------------ snapshots
    def _snapshot_dir(self, namespace: str, name: str) -> Path | None:
        try:
            snap = self.api.get(f"{_SNAPSHOTS}/namespaces/{namespace}/volumesnapshots/{name}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        if not (snap.get("status") or {}).get("readyToUse"):
            return None
        directory = self.snapshots / snap["metadata"]["uid"]
        return directory if directory.is_dir() else None

    def _cut(self, snap: Json) -> None:
        meta = snap["metadata"]
        ns = meta["namespace"]
        if (snap.get("status") or {}).get("readyToUse") or (snap.get("status") or {}).get("error"):
            return
        if snap["spec"].get("volumeSnapshotClassName") != SNAPSHOT_CLASS:
            return
        claim_name = snap["spec"].get("source", {}).get("persistentVolumeClaimName")
        claim = self._claim(ns, claim_name) if claim_name else None
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        path = f"{_SNAPSHOTS}/namespaces/{ns}/volumesnapshots/{meta['name']}/status"
        annotations = (claim or {}).get("metadata", {}).get("annotations") or {}
        if annotations.get(HOLD_ANNOTATION):
            return
        failure = annotations.get(FAIL_ANNOTATION)
        origin = self.claim_dir(claim) if claim else None
        if failure or claim is None:
            message = failure or f"source claim {claim_name} does not exist"
            status = {"readyToUse": False, "error": {"message": message, "time": stamp}}
            self.api.merge_patch(path, {"status": status})
            return
        if origin is None:
            return  # the claim is not bound yet
        directory = self.snapshots / meta["uid"]
        if not directory.exists():
            tmp = self.snapshots / f".{meta['uid']}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(origin, tmp, symlinks=True)
            tmp.rename(directory)
        size = claim["spec"].get("resources", {}).get("requests", {}).get("storage") or "1Gi"
        status = {
            "readyToUse": True,
            "creationTime": stamp,
            "restoreSize": size,
            "boundVolumeSnapshotContentName": f"snapcontent-{meta['uid']}",
        }
        self.api.merge_patch(path, {"status": status})
        log.info("snapshot %s/%s of %s is ready", ns, meta["name"], claim_name)
        if self.on_ready is not None:
            self.on_ready(ns, meta["name"], origin)

    # ------------------------------------------------------------ the loop
    def sync(self) -> None:
        """One pass: provision claims, cut snapshots, remove what was deleted."""
        for pvc in self.api.get("/api/v1/persistentvolumeclaims")["items"]:
            spec = pvc["spec"]
            if (
                spec.get("storageClassName") == STORAGE_CLASS
                and not spec.get("volumeName")
                and not pvc["metadata"].get("deletionTimestamp")
            ):
                self._provision(pvc)
        snaps = self.api.get(f"{_SNAPSHOTS}/volumesnapshots")["items"]
        for snap in snaps:
            if not snap["metadata"].get("deletionTimestamp"):
                self._cut(snap)
        alive = {s["metadata"]["uid"] for s in snaps}
        for directory in self.snapshots.iterdir():
            if not directory.name.startswith(".") and directory.name not in alive:
                shutil.rmtree(directory, ignore_errors=True)
        for pv in self.api.get("/api/v1/persistentvolumes")["items"]:
            if (pv["metadata"].get("annotations") or {}).get(_PROVISIONED_BY) == DRIVER and pv.get(
                "status", {}
            ).get("phase") == "Released":
                shutil.rmtree(pv["spec"]["hostPath"]["path"], ignore_errors=True)
                try:
                    self.api.delete(f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
                except ApiError as exc:
                    if exc.status != 404:
                        raise

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.sync()
            except Exception:  # keep driving: a test's odd object must not stop the driver
                log.exception("csi snapshot driver pass failed")

    def start(self, interval: float = 0.3) -> None:
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


@pytest.fixture(scope="session")
def csi_snapshots(cluster: Cluster) -> Iterator[SnapshotDriver]:
    """The snapshot CRDs, the ``csi-hostpath`` classes and the driver, for the session."""
    if cluster.local is None:
        raise RuntimeError("csi_snapshots plays the CSI driver on the local test ground only")
    cluster.install_crds(CRDS)
    driver = SnapshotDriver(cluster.local.api(), cluster.local.path)
    driver.ensure_classes()
    driver.start()
    try:
        yield driver
    finally:
        driver.stop()
