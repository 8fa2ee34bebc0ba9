"""Apply exported manifests to a cluster: selection, namespace mapping, order, policy.

Objects are created in dependency order, so each finds what it refers to: CRDs (and
the API waits until they are served), Namespaces, ServiceAccounts and RBAC,
ConfigMaps and Secrets, StorageClasses/PersistentVolumes/claims, workloads, then the
rest (Services, Ingresses, custom resources). An object that exists already is left
alone (``skip``), brought to the backup's version with server-side apply (``update``;
fields the backup does not set are kept), or stops everything before the first write
(``fail``). A dry run only reports what each object would get.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from safehold.engine.cluster.kube import ApiResource, KubeApi, KubeError
from safehold.engine.cluster.selection import (
    matches_labels,
    matches_type,
    namespace_selected,
    parse_selector,
)

__all__ = [
    "ApplyAction",
    "ApplyOptions",
    "ApplyResult",
    "ExistingPolicy",
    "Manifest",
    "NamespacesNotAllowed",
    "apply_manifests",
    "apply_order",
    "check_namespaces",
    "read_tree",
    "select_manifests",
]

ExistingPolicy = Literal["skip", "update", "fail"]
FIELD_MANAGER = "safehold"

_ORDER: list[tuple[str, ...]] = [
    ("CustomResourceDefinition",),
    ("Namespace",),
    ("StorageClass", "PriorityClass"),
    ("ServiceAccount",),
    ("ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding"),
    ("ConfigMap", "Secret"),
    ("PersistentVolume", "PersistentVolumeClaim", "LimitRange", "ResourceQuota"),
    ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"),
]


def apply_order(kind: str) -> int:
    for i, kinds in enumerate(_ORDER):
        if kind in kinds:
            return i
    return len(_ORDER)


@dataclass
class Manifest:
    path: str  # relative to the tree's root
    obj: dict[str, Any]
    implicit: bool = False  # a Namespace brought along for the objects in it: never updated

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def group(self) -> str:
        return str(self.obj.get("apiVersion", "")).rpartition("/")[0]

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def namespace(self) -> str | None:
        ns = self.obj["metadata"].get("namespace")
        return str(ns) if ns else None

    def describe(self) -> str:
        kind = f"{self.kind}.{self.group}" if self.group else self.kind
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{kind.lower()} {where}{self.name}"


def read_tree(root: str) -> list[Manifest]:
    """Every manifest under ``root`` (an exported tree), sorted by path."""
    import yaml  # loaded by the commands that read manifests, not by every safehold command

    out = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".yaml"):
                continue
            path = os.path.join(dirpath, f)
            with open(path, encoding="utf-8") as fh:
                obj = yaml.safe_load(fh)
            if isinstance(obj, dict) and obj.get("kind") and obj.get("metadata"):
                out.append(Manifest(os.path.relpath(path, root), obj))
    out.sort(key=lambda m: m.path)
    return out


@dataclass
class ApplyOptions:
    include_namespaces: list[str] = field(default_factory=list)
    exclude_namespaces: list[str] = field(default_factory=list)
    include_resources: list[str] = field(default_factory=list)
    exclude_resources: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # object names (globs not supported)
    label_selector: str | None = None
    namespace_mapping: Mapping[str, str] = field(default_factory=dict)
    existing: ExistingPolicy = "skip"
    dry_run: bool = False
    #: Namespaces (after mapping) the objects may be written into; empty: any.
    only_namespaces: list[str] = field(default_factory=list)
    crd_timeout: float = 60.0


@dataclass
class ApplyAction:
    path: str
    target: str  # e.g. "deployment.apps prod-copy/web"
    action: Literal["create", "update", "skip", "fail"]
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"path": self.path, "target": self.target, "action": self.action}
        if self.error:
            doc["error"] = self.error
        return doc


@dataclass
class ApplyResult:
    dry_run: bool
    actions: list[ApplyAction] = field(default_factory=list)

    def count(self, action: str) -> int:
        return sum(1 for a in self.actions if a.action == action)

    @property
    def ok(self) -> bool:
        return self.count("fail") == 0

    def summary(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "created": self.count("create"),
            "updated": self.count("update"),
            "skipped": self.count("skip"),
            "failed": self.count("fail"),
            "objects": len(self.actions),
            "actions": [a.as_dict() for a in self.actions[:200]],
        }


class ExistingObjects(Exception):
    """existing policy ``fail`` and some targets exist; nothing was written."""


class NamespacesNotAllowed(Exception):
    """Selected objects would land in namespaces the restore may not write; nothing was
    written."""


def check_namespaces(manifests: list[Manifest], only: list[str]) -> None:
    """Raise :class:`NamespacesNotAllowed` when a (mapped) object belongs to a namespace
    outside ``only`` (a Namespace object belongs to itself); empty ``only``: no limit.
    Cluster-scoped objects are left to the ServiceAccount's own rights."""
    if not only:
        return
    allowed = set(only)
    outside: dict[str, int] = {}
    for m in manifests:
        ns = m.name if m.kind == "Namespace" else m.namespace
        if ns is not None and ns not in allowed:
            outside[ns] = outside.get(ns, 0) + 1
    if outside:
        found = ", ".join(f"{ns} ({n} objects)" for ns, n in sorted(outside.items()))
        raise NamespacesNotAllowed(
            f"the selection would write into namespaces this restore may not write: {found}; "
            f"it may write only into {', '.join(sorted(allowed))}: leave those out "
            "(excludeNamespaces), or name them (includeNamespaces, namespaceMapping) so "
            "their owners' grant is checked; nothing was written"
        )


def _type_matches(m: Manifest, patterns: list[str], api: KubeApi | None) -> bool:
    r = api.find(m.group, m.kind) if api is not None else None
    plural = r.plural if r else m.kind.lower() + "s"
    shorts = r.short_names if r else ()
    return matches_type(patterns, plural=plural, group=m.group, kind=m.kind, short_names=shorts)


def select_manifests(
    manifests: list[Manifest], opts: ApplyOptions, api: KubeApi | None = None
) -> list[Manifest]:
    """The manifests the options select, namespace-mapped, in apply order."""
    reqs = parse_selector(opts.label_selector)
    out = []
    for m in manifests:
        ns = m.namespace or (m.name if m.kind == "Namespace" else None)
        if ns is not None and not namespace_selected(
            ns, opts.include_namespaces, opts.exclude_namespaces
        ):
            continue
        if m.kind != "Namespace":
            if opts.include_resources and not _type_matches(m, opts.include_resources, api):
                continue
            if opts.exclude_resources and _type_matches(m, opts.exclude_resources, api):
                continue
            if opts.names and m.name not in opts.names:
                continue
            if not matches_labels(reqs, m.obj["metadata"].get("labels")):
                continue
        out.append(Manifest(m.path, map_namespace(m.obj, opts.namespace_mapping)))
    if opts.include_resources or opts.names or reqs:
        # a narrowed selection brings a Namespace only along with something inside it
        used = {m.namespace for m in out if m.namespace}
        out = [m for m in out if m.kind != "Namespace" or m.name in used]
        for m in out:
            m.implicit = m.kind == "Namespace"
    out.sort(key=lambda m: (apply_order(m.kind), m.path))
    return out


def map_namespace(obj: dict[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """A copy of ``obj`` moved by ``mapping`` (a Namespace renamed, namespaced objects
    moved, RoleBinding subjects that name a mapped namespace followed)."""
    obj = json.loads(json.dumps(obj))
    meta = obj["metadata"]
    if obj.get("kind") == "Namespace":
        meta["name"] = mapping.get(meta["name"], meta["name"])
        labels = meta.get("labels") or {}
        if "kubernetes.io/metadata.name" in labels:
            labels["kubernetes.io/metadata.name"] = meta["name"]
    elif meta.get("namespace"):
        meta["namespace"] = mapping.get(meta["namespace"], meta["namespace"])
    if obj.get("kind") in ("RoleBinding", "ClusterRoleBinding"):
        for subject in obj.get("subjects") or []:
            if subject.get("namespace"):
                subject["namespace"] = mapping.get(subject["namespace"], subject["namespace"])
    return obj


def _resource(api: KubeApi, m: Manifest) -> ApiResource:
    r = api.for_api_version(str(m.obj.get("apiVersion", "")), m.kind)
    if r is None:
        api.refresh()
        r = api.for_api_version(str(m.obj.get("apiVersion", "")), m.kind)
    if r is None:
        raise KubeError(
            404,
            f"the cluster serves no {m.kind} of {m.obj.get('apiVersion')}: install its "
            "CustomResourceDefinition or include it (cluster-scoped dependencies) in the backup",
        )
    return r


def _exists(api: KubeApi, r: ApiResource, m: Manifest) -> bool:
    try:
        api.get(r.path(m.namespace, m.name))
    except KubeError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _wait_crds(api: KubeApi, names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    r = api.find("apiextensions.k8s.io", "CustomResourceDefinition")
    if r is None or not names:
        return
    for name in names:
        while True:
            crd = api.get(r.path(name=name))
            conditions = (crd.get("status") or {}).get("conditions") or []
            if any(
                c.get("type") == "Established" and c.get("status") == "True" for c in conditions
            ):
                break
            if time.monotonic() > deadline:
                raise KubeError(0, f"CustomResourceDefinition {name} not Established in time")
            time.sleep(0.5)
    api.refresh()


def apply_manifests(
    api: KubeApi,
    manifests: list[Manifest],
    opts: ApplyOptions,
    report: Callable[[ApplyAction], None] | None = None,
) -> ApplyResult:
    """Create or update ``manifests`` (already selected and mapped) in order."""
    result = ApplyResult(dry_run=opts.dry_run)
    if opts.existing == "fail":
        existing = []
        for m in manifests:
            try:
                if _exists(api, _resource(api, m), m):
                    existing.append(m.describe())
            except KubeError as exc:
                if exc.status != 404:
                    raise
        if existing:
            raise ExistingObjects(
                f"{len(existing)} object(s) exist already ({', '.join(existing[:10])}) and the "
                "policy is fail: delete them, map to another namespace, or choose skip or update"
            )
    new_crds: list[str] = []
    stage = -1
    for m in manifests:
        order = apply_order(m.kind)
        if order != stage:
            if new_crds and not opts.dry_run:
                _wait_crds(api, new_crds, opts.crd_timeout)
                new_crds = []
            stage = order
        action = _apply_one(api, m, opts)
        if action.action == "create" and m.kind == "CustomResourceDefinition":
            new_crds.append(m.name)
        result.actions.append(action)
        if report is not None:
            report(action)
    return result


def _apply_one(api: KubeApi, m: Manifest, opts: ApplyOptions) -> ApplyAction:
    target = m.describe()
    try:
        r = _resource(api, m)
    except KubeError as exc:
        if opts.dry_run and m.kind != "CustomResourceDefinition":
            # its CRD may be created by this very restore
            return ApplyAction(m.path, target, "create")
        return ApplyAction(m.path, target, "fail", str(exc))
    try:
        exists = _exists(api, r, m)
        if exists and (opts.existing == "skip" or m.implicit):
            return ApplyAction(m.path, target, "skip")
        action: Literal["create", "update"] = "update" if exists else "create"
        if opts.dry_run:
            return ApplyAction(m.path, target, action)
        if exists:
            api.call(
                "PATCH",
                r.path(m.namespace, m.name),
                body=json.dumps(m.obj),
                query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                content_type="application/apply-patch+yaml",
            )
        else:
            api.call("POST", r.path(m.namespace), body=m.obj)
        return ApplyAction(m.path, target, action)
    except KubeError as exc:
        if exc.status == 409 and opts.existing == "skip":
            return ApplyAction(m.path, target, "skip")  # created meanwhile
        return ApplyAction(m.path, target, "fail", str(exc))
