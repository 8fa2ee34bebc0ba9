"""Which VolumeSnapshotClass a snapshot-mode source uses, and why none (pure logic, stub API)."""

from __future__ import annotations

from typing import Any

import pytest

from safehold.api.backuppolicy import VolumeSnapshot
from safehold.controller.kube import ApiException
from safehold.controller.sources.volume_snapshots import DEFAULT_CLASS_ANNOTATION, _pick_class

DRIVER = "csi.example.com"


class _Custom:
    def __init__(self, classes: list[dict[str, Any]] | None) -> None:
        self.classes = classes

    def list_cluster_custom_object(self, group: str, version: str, plural: str) -> Any:
        assert (group, version, plural) == (
            "snapshot.storage.k8s.io",
            "v1",
            "volumesnapshotclasses",
        )
        if self.classes is None:
            raise ApiException(status=404, reason="Not Found")
        return {"items": self.classes}


class _Rt:
    def __init__(self, classes: list[dict[str, Any]] | None) -> None:
        self.kube = type("K", (), {"custom": _Custom(classes)})()


def _class(name: str, driver: str = DRIVER, *, default: bool = False) -> dict[str, Any]:
    annotations = {DEFAULT_CLASS_ANNOTATION: "true"} if default else {}
    return {"metadata": {"name": name, "annotations": annotations}, "driver": driver}


def _pvc(driver: str | None = DRIVER) -> dict[str, Any]:
    annotations = {"volume.beta.kubernetes.io/storage-provisioner": driver} if driver else {}
    return {"metadata": {"name": "data", "annotations": annotations}}


@pytest.mark.parametrize(
    ("classes", "settings", "pvc", "expected"),
    [
        ([_class("b"), _class("a")], {}, _pvc(), ("a", "")),
        ([_class("a"), _class("z", default=True)], {}, _pvc(), ("z", "")),
        ([_class("other", "x.example.com")], {"volumeSnapshotClassName": "other"}, _pvc(),
         ("other", "")),
        ([_class("a")], {"volumeSnapshotClassName": "gold"}, _pvc(),
         (None, "VolumeSnapshotClass 'gold' does not exist")),
        ([_class("a", "x.example.com")], {}, _pvc(),
         (None, "no VolumeSnapshotClass for the claim's driver csi.example.com")),
        ([_class("a")], {}, _pvc(None),
         (None, "no VolumeSnapshotClass for the claim's driver (unknown)")),
        (None, {}, _pvc(),
         (None, "the cluster has no VolumeSnapshot CRDs (snapshot.storage.k8s.io/v1)")),
    ],
)  # fmt: skip
def test_pick_class(
    classes: list[dict[str, Any]] | None,
    settings: dict[str, Any],
    pvc: dict[str, Any],
    expected: tuple[str | None, str],
) -> None:
    rt: Any = _Rt(classes)
    assert _pick_class(rt, VolumeSnapshot.model_validate(settings), pvc) == expected
