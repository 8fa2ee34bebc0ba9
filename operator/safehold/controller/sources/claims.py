"""Which claims a policy's volume sources mean, and where a claim is in use.

A volume source names one claim or selects claims by label; each becomes one source of
a run, backed up by its own Job. A ReadWriteOnce claim that a running pod uses can only
be mounted on that pod's node, so the Job is pinned there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from safehold.api.backuppolicy import BackupPolicy, VolumeSource
from safehold.api.selectors import LabelSelector
from safehold.api.sources import RESOURCES_SOURCE
from safehold.controller.kube import Kube

__all__ = [
    "VolumeClaim",
    "claim_node",
    "name_conflict",
    "resolve_volumes",
    "selector_string",
    "volume_source",
]

_FIELD = re.compile(r"spec\.sources\.volumes\[(\d+)\]")


@dataclass(frozen=True)
class VolumeClaim:
    source: str  # the source's name in results and restores
    claim: str  # the PersistentVolumeClaim
    field: str  # where the policy names it, for messages
    include: tuple[str, ...] = ()  # the volume source's patterns, relative to the volume's root
    exclude: tuple[str, ...] = ()


def volume_source(policy: BackupPolicy, claim: VolumeClaim) -> VolumeSource | None:
    """The policy's volume source that ``claim`` comes from (by ``claim.field``)."""
    match = _FIELD.match(claim.field)
    volumes = policy.spec.sources.volumes
    if match is None or int(match.group(1)) >= len(volumes):
        return None
    return volumes[int(match.group(1))]


def selector_string(selector: LabelSelector) -> str:
    """A LabelSelector in the query form the API takes: ``a=b,c in (d,e),!f``."""
    terms = [f"{k}={v}" for k, v in sorted(selector.match_labels.items())]
    for req in selector.match_expressions:
        if req.operator == "In":
            terms.append(f"{req.key} in ({','.join(req.values)})")
        elif req.operator == "NotIn":
            terms.append(f"{req.key} notin ({','.join(req.values)})")
        elif req.operator == "Exists":
            terms.append(req.key)
        else:
            terms.append(f"!{req.key}")
    return ",".join(terms)


def resolve_volumes(kube: Kube, policy: BackupPolicy) -> list[VolumeClaim]:
    """The claims of the policy's volume sources (a selector's, as of now)."""
    ns = policy.metadata.namespace or ""
    out: list[VolumeClaim] = []
    for index, volume in enumerate(policy.spec.sources.volumes):
        where = f"spec.sources.volumes[{index}]"
        patterns = {"include": tuple(volume.include), "exclude": tuple(volume.exclude)}
        if volume.claim_name:
            name = volume.name or volume.claim_name
            out.append(VolumeClaim(name, volume.claim_name, f"{where}.claimName", **patterns))
        elif volume.selector is not None:
            for pvc in kube.list_pvcs(ns, selector_string(volume.selector)):
                claim = pvc["metadata"]["name"]
                out.append(VolumeClaim(claim, claim, f"{where}.selector", **patterns))
    return out


def name_conflict(policy: BackupPolicy, claims: Sequence[VolumeClaim]) -> str | None:
    """Why ``claims`` cannot all be sources of a run, or None. A claim that a selector
    matches is a source named after it; if another source has that name already (another
    claim, a database, the cluster resources), the two would share one Job and one snapshot
    name and one of them would not be backed up. The policy's own names are checked when
    it is admitted; only the selectors' claims can meet them later."""
    sources = policy.spec.sources
    seen = {d.name: f"spec.sources.databases[{i}]" for i, d in enumerate(sources.databases)}
    if sources.cluster_resources is not None:
        seen[RESOURCES_SOURCE] = "spec.sources.clusterResources"
    for claim in claims:
        other = seen.get(claim.source)
        if other is not None:
            return (
                f"{claim.field}: claim {claim.claim!r} makes a source named {claim.source!r}, "
                f"as {other} does: every source needs a name of its own (narrow the "
                "selector, or rename the other source)"
            )
        seen[claim.source] = claim.field
    return None


def claim_node(claim: dict[str, Any], pods: list[dict[str, Any]]) -> str | None:
    """The node of a live pod that uses ``claim``, if the claim is ReadWriteOnce."""
    modes = claim.get("spec", {}).get("accessModes") or []
    if "ReadWriteOnce" not in modes:
        return None
    name = claim["metadata"]["name"]
    for pod in pods:
        if pod.get("status", {}).get("phase") not in ("Running", "Pending"):
            continue
        node = pod.get("spec", {}).get("nodeName")
        if not node:
            continue
        for volume in pod.get("spec", {}).get("volumes") or []:
            if (volume.get("persistentVolumeClaim") or {}).get("claimName") == name:
                return str(node)
    return None
