"""The metadata the backup Jobs record in each snapshot (``safehold backup --meta K=V``),
so that a cluster that never saw the backup can re-create what it came from.

Disaster recovery assumes the cluster is gone: a volume's claim (its size, access modes,
StorageClass, volume mode, labels) must be readable from the repository, not only from
a PersistentVolumeClaim that died with the cluster. The CLI adds ``source.kind`` for
dumps (``database``, with ``database.engine`` and ``database.name``) and resource
exports (``clusterResources``); the controller adds the rest here. Nothing secret is
recorded (no host, no credentials).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from safehold.api.backuppolicy import BackupPolicy
from safehold.controller.sources.claims import VolumeClaim, volume_source

__all__ = [
    "BASE_KIND",
    "CLAIM_ACCESS_MODES",
    "CLAIM_LABELS",
    "CLAIM_NAME",
    "CLAIM_SIZE",
    "CLAIM_STORAGE_CLASS",
    "CLAIM_VOLUME_MODE",
    "POLICY_NAME",
    "SOURCE_KIND",
    "SOURCE_NAME",
    "WAL_KIND",
    "WAL_SUFFIX",
    "ClaimShape",
    "claim_shape",
    "original_claim",
    "source_meta",
    "volume_meta",
]

SOURCE_KIND: Final = "source.kind"
#: ``source.kind`` of a pointInTime source's base backups and WAL drains, as the CLI's
#: ``pg-basebackup`` and ``pg-archive-wal`` write it (engine/databases/physical.py; the
#: controller does not import the engine, and the format document lists both).
BASE_KIND: Final = "postgresql-base"
WAL_KIND: Final = "postgresql-wal"
#: The source name of those WAL drains under the source's name (``physical.wal_source``).
WAL_SUFFIX: Final = "/pg/wal"
SOURCE_NAME: Final = "source.name"
POLICY_NAME: Final = "policy.name"
CLAIM_NAME: Final = "claim.name"
CLAIM_SIZE: Final = "claim.size"
CLAIM_STORAGE_CLASS: Final = "claim.storageClassName"
CLAIM_ACCESS_MODES: Final = "claim.accessModes"
CLAIM_VOLUME_MODE: Final = "claim.volumeMode"
CLAIM_LABELS: Final = "claim.labels"
#: The repository's limit on a meta value (format section 9); a longer one (labels of a
#: claim with very many labels) is left out rather than failing the backup.
MAX_VALUE = 1024


def source_meta(policy: str, source: str) -> dict[str, str]:
    """What every snapshot of a policy's source records: the policy and the source's name
    (so a restore maps a snapshot to its source without parsing its source path)."""
    return {POLICY_NAME: policy, SOURCE_NAME: source}


def volume_meta(pvc: Mapping[str, Any]) -> dict[str, str]:
    """The claim a volume source was read from, as snapshot metadata (empty values left
    out). ``pvc`` is the ORIGINAL claim, not a snapshot clone."""
    meta = pvc.get("metadata") or {}
    spec = pvc.get("spec") or {}
    labels = meta.get("labels") or {}
    out = {
        SOURCE_KIND: "volume",
        CLAIM_NAME: str(meta.get("name") or ""),
        CLAIM_SIZE: str((spec.get("resources") or {}).get("requests", {}).get("storage") or ""),
        CLAIM_STORAGE_CLASS: str(spec.get("storageClassName") or ""),
        CLAIM_ACCESS_MODES: ",".join(spec.get("accessModes") or []),
        CLAIM_VOLUME_MODE: str(spec.get("volumeMode") or ""),
        CLAIM_LABELS: json.dumps(labels, sort_keys=True, separators=(",", ":")) if labels else "",
    }
    return {k: v for k, v in out.items() if v and len(v) <= MAX_VALUE}


def original_claim(policy: BackupPolicy, claim: VolumeClaim) -> str:
    """The claim the policy names for ``claim``'s source, even when ``claim.claim`` is a
    snapshot clone: a ``claimName`` source's claim, else (a selector's) the source's name,
    which is its claim's name."""
    volume = volume_source(policy, claim)
    return (volume.claim_name if volume is not None else None) or claim.source


@dataclass(frozen=True)
class ClaimShape:
    """A backed-up claim as its snapshot's metadata describes it (None: not recorded)."""

    name: str | None = None
    size: str | None = None
    storage_class_name: str | None = None
    access_modes: tuple[str, ...] = ()
    volume_mode: str | None = None
    labels: Mapping[str, str] | None = None


def _labels(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    return {str(k): str(v) for k, v in doc.items()}


def claim_shape(meta: Mapping[str, str]) -> ClaimShape:
    """The claim recorded in a volume snapshot's metadata."""
    modes = tuple(m for m in (meta.get(CLAIM_ACCESS_MODES) or "").split(",") if m)
    return ClaimShape(
        name=meta.get(CLAIM_NAME) or None,
        size=meta.get(CLAIM_SIZE) or None,
        storage_class_name=meta.get(CLAIM_STORAGE_CLASS) or None,
        access_modes=modes,
        volume_mode=meta.get(CLAIM_VOLUME_MODE) or None,
        labels=_labels(meta.get(CLAIM_LABELS)),
    )
