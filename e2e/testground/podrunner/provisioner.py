"""A local-path style provisioner: each claim of its storage class gets a host directory.

For a Pending claim of the class, it creates a PersistentVolume (``hostPath`` under the
cluster's ``volumes/`` directory) pre-bound to the claim; kube-controller-manager's volume
controller then binds the two, as it does for any external provisioner. A claim whose
``dataSource`` is another claim starts as a copy of that claim's directory (a clone). When a
claim is deleted and its volume is Released with reclaim policy Delete, the directory and the
volume are removed.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from testground.rest import Api, ApiError

__all__ = ["PROVISIONER", "STORAGE_CLASS", "Provisioner"]

Json = dict[str, Any]
PROVISIONER = "testground.safehold.io/local-path"
STORAGE_CLASS = "local-path"
ANNOTATION = "pv.kubernetes.io/provisioned-by"
log = logging.getLogger("podrunner.provisioner")


class Provisioner:
    """Called from the runner's loop: ``sync()`` provisions and reclaims."""

    def __init__(self, api: Api, volumes_dir: Path) -> None:
        self.api = api
        self.volumes_dir = volumes_dir

    def ensure_storage_class(self) -> None:
        """Create the default StorageClass ``local-path`` if it does not exist."""
        body = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        }
        try:
            self.api.post("/apis/storage.k8s.io/v1/storageclasses", body)
        except ApiError as exc:
            if exc.status != 409:
                raise

    def _classes(self) -> dict[str, Json]:
        items = self.api.get("/apis/storage.k8s.io/v1/storageclasses")["items"]
        return {sc["metadata"]["name"]: sc for sc in items if sc.get("provisioner") == PROVISIONER}

    def claim_dir(self, namespace: str, name: str) -> Path | None:
        """The directory of a bound claim of any hostPath/local volume, or None."""
        try:
            pvc = self.api.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        if pvc.get("status", {}).get("phase") != "Bound":
            return None
        pv = self.api.get(f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
        spec = pv["spec"]
        path = spec.get("hostPath", {}).get("path") or spec.get("local", {}).get("path")
        return Path(path) if path else None

    def _provision(self, pvc: Json, sc: Json) -> None:
        meta = pvc["metadata"]
        pv_name = f"pvc-{meta['uid']}"
        directory = self.volumes_dir / pv_name
        source = pvc["spec"].get("dataSource") or {}
        if not directory.exists():
            if source.get("kind") == "PersistentVolumeClaim":
                origin = self.claim_dir(meta["namespace"], source["name"])
                if origin is None:
                    log.info("claim %s/%s waits for its source", meta["namespace"], meta["name"])
                    return
                shutil.copytree(origin, directory, symlinks=True)
            else:
                directory.mkdir(parents=True)
        request = pvc["spec"].get("resources", {}).get("requests", {}).get("storage", "1Gi")
        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "annotations": {ANNOTATION: PROVISIONER}},
            "spec": {
                "capacity": {"storage": request},
                "accessModes": pvc["spec"].get("accessModes") or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy", "Delete"),
                "storageClassName": sc["metadata"]["name"],
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
            log.info("provisioned %s for claim %s/%s", pv_name, meta["namespace"], meta["name"])
        except ApiError as exc:
            if exc.status != 409:
                raise

    def _reclaim(self, pv: Json) -> None:
        path = Path(pv["spec"].get("hostPath", {}).get("path", "/nonexistent"))
        if path.parent == self.volumes_dir:
            shutil.rmtree(path, ignore_errors=True)
        try:
            self.api.delete(f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
            log.info("deleted released volume %s", pv["metadata"]["name"])
        except ApiError as exc:
            if exc.status != 404:
                raise

    def sync(self) -> None:
        classes = self._classes()
        if classes:
            for pvc in self.api.get("/api/v1/persistentvolumeclaims")["items"]:
                spec = pvc["spec"]
                if (
                    spec.get("storageClassName") in classes
                    and not spec.get("volumeName")
                    and pvc.get("status", {}).get("phase", "Pending") == "Pending"
                    and not pvc["metadata"].get("deletionTimestamp")
                ):
                    self._provision(pvc, classes[spec["storageClassName"]])
        for pv in self.api.get("/api/v1/persistentvolumes")["items"]:
            if (
                pv["metadata"].get("annotations", {}).get(ANNOTATION) == PROVISIONER
                and pv.get("status", {}).get("phase") == "Released"
                and pv["spec"].get("persistentVolumeReclaimPolicy") == "Delete"
            ):
                self._reclaim(pv)
