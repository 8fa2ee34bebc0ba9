"""Clean manifests: what the server set is removed, what the user wrote is kept.

A manifest stored in a backup must be re-creatable anywhere: no ``status``, no
identity of the old object (uid, resourceVersion, creationTimestamp, generation,
selfLink, managedFields, ownerReferences), no ``kubectl apply`` bookkeeping, and none
of the fields the server or a controller fills in (a Service's cluster IPs, a claim's
bound volume, a Deployment's revision, ``pod-template-hash``). The same object
therefore always gives the same bytes, which is what makes two exports deduplicate and
a backup comparable with the restored objects.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = [
    "GENERATED_ANNOTATIONS",
    "clean_manifest",
    "dump_manifest",
    "is_generated",
    "manifest_path",
]

_META_DROP = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "selfLink",
    "managedFields",
    "ownerReferences",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)

#: Annotations the server, kubectl or controllers write: never restored.
GENERATED_ANNOTATIONS = (
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "pv.kubernetes.io/provisioned-by",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/selected-node",
    "kubernetes.io/service-account.uid",
    "control-plane.alpha.kubernetes.io/leader",
)
_GENERATED_LABELS = ("pod-template-hash", "controller-uid", "batch.kubernetes.io/controller-uid")


def _strip_labels(meta: dict[str, Any] | None) -> None:
    if not meta:
        return
    labels = meta.get("labels")
    if isinstance(labels, dict):
        for key in _GENERATED_LABELS:
            labels.pop(key, None)
        if not labels:
            meta.pop("labels")
    if meta.get("creationTimestamp", 0) is None:
        meta.pop("creationTimestamp")


def clean_manifest(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` without status and server-set fields."""
    out = copy.deepcopy(obj)
    out.pop("status", None)
    meta = out.setdefault("metadata", {})
    for key in _META_DROP:
        meta.pop(key, None)
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        for key in GENERATED_ANNOTATIONS:
            annotations.pop(key, None)
        if not annotations:
            meta.pop("annotations")
    _strip_labels(meta)
    kind = out.get("kind")
    spec = out.get("spec")
    if not isinstance(spec, dict):
        spec = {}
    if kind == "Service":
        if spec.get("clusterIP") != "None":
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        spec.pop("healthCheckNodePort", None)
    elif kind == "PersistentVolumeClaim":
        spec.pop("volumeName", None)
    elif kind == "PersistentVolume":
        spec.pop("claimRef", None)
    elif kind == "ServiceAccount":
        out.pop("secrets", None)  # token Secrets the server makes again
    elif kind == "Namespace":
        out.pop("spec", None)  # the "kubernetes" finalizer, set by the server
    elif kind == "Job":
        selector = spec.get("selector") or {}
        if (selector.get("matchLabels") or {}).get("controller-uid"):
            spec.pop("selector", None)
    template = spec.get("template") if isinstance(spec.get("template"), dict) else None
    if template is not None:
        _strip_labels(template.get("metadata"))
        if kind == "Job":
            (template.get("metadata") or {}).get("labels", {}).pop("job-name", None)
        if "metadata" in template and not template["metadata"]:
            template.pop("metadata")
    selector = spec.get("selector")
    if isinstance(selector, dict) and isinstance(selector.get("matchLabels"), dict):
        selector["matchLabels"].pop("pod-template-hash", None)
    return out


def is_generated(obj: dict[str, Any]) -> str | None:
    """Why an object is not exported (made by a controller or the server), or None."""
    meta = obj.get("metadata") or {}
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            return f"managed by {ref.get('kind')} {ref.get('name')}"
    kind = obj.get("kind")
    if kind == "Secret" and obj.get("type") == "kubernetes.io/service-account-token":
        return "a service account token (the server makes it again)"
    if kind == "ConfigMap" and meta.get("name") == "kube-root-ca.crt":
        return "published by the server in every namespace"
    return None


def manifest_path(group: str, kind: str, name: str, namespace: str | None) -> str:
    """Where a manifest lives in the tree: ``namespaces/<ns>/<group>/<kind>/<name>.yaml``
    or ``cluster/<group>/<kind>/<name>.yaml`` (``core`` for the core group)."""
    g = group or "core"
    if namespace:
        return f"namespaces/{namespace}/{g}/{kind}/{name}.yaml"
    return f"cluster/{g}/{kind}/{name}.yaml"


def dump_manifest(obj: dict[str, Any]) -> str:
    """Deterministic YAML (sorted keys): the same object gives the same bytes."""
    import yaml  # loaded by the commands that write manifests, not by every safehold command

    return yaml.safe_dump(obj, sort_keys=True, default_flow_style=False, allow_unicode=True)
