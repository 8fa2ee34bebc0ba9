"""Export resource manifests from a cluster into a tree, then into a snapshot.

The tree (``namespaces/<ns>/<group>/<Kind>/<name>.yaml``, ``cluster/<group>/<Kind>/
<name>.yaml``) is written to a temporary directory and backed up with the engine's
ordinary directory backup under the top-level name ``resources``: manifests are clean
and dumped with sorted keys, so an unchanged object gives the same bytes and two
exports share every chunk. Objects a controller makes from another one (ReplicaSets of
a Deployment, Pods of a Job, service-account tokens) are left out: restoring the owner
makes them again.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from safehold.engine.backup import BackupOptions, BackupResult, backup_paths
from safehold.engine.cluster.clean import (
    clean_manifest,
    dump_manifest,
    is_generated,
    manifest_path,
)
from safehold.engine.cluster.kube import ApiResource, KubeApi, KubeError
from safehold.engine.cluster.selection import (
    matches_labels,
    matches_type,
    namespace_selected,
    parse_selector,
)
from safehold.engine.progress import ProgressCallback
from safehold.repo import Repository

__all__ = [
    "DEFAULT_EXCLUDED_TYPES",
    "TREE_ROOT",
    "ExportOptions",
    "ExportResult",
    "export_resources",
    "export_tree",
]

#: The snapshot's top-level directory.
TREE_ROOT = "resources"

#: Types never worth restoring: records and objects the cluster keeps up by itself.
DEFAULT_EXCLUDED_TYPES = (
    "events",
    "events.events.k8s.io",
    "endpoints",
    "endpointslices.discovery.k8s.io",
    "controllerrevisions.apps",
    "leases.coordination.k8s.io",
    "pods.metrics.k8s.io",
    "nodes.metrics.k8s.io",
)


@dataclass
class ExportOptions:
    include_namespaces: list[str] = field(default_factory=list)  # globs; empty: all
    exclude_namespaces: list[str] = field(default_factory=list)
    include_resources: list[str] = field(default_factory=list)  # empty: all
    exclude_resources: list[str] = field(default_factory=list)
    label_selector: str | None = None
    include_cluster_scoped: bool = False
    include_secrets: bool = False


@dataclass
class ExportResult:
    objects: dict[str, int] = field(default_factory=dict)  # type -> count
    paths: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "path: why"
    warnings: list[str] = field(default_factory=list)
    backup: BackupResult | None = None

    def summary(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "objects": sum(self.objects.values()),
            "by_type": dict(sorted(self.objects.items())),
            "skipped": len(self.skipped),
            "warnings": self.warnings[:20],
        }
        if self.backup is not None:
            doc.update(self.backup.summary())
        return doc


def _listable(r: ApiResource) -> bool:
    return {"list", "get", "create"} <= r.verbs


def _selected_type(r: ApiResource, opts: ExportOptions) -> bool:
    kw: dict[str, Any] = {
        "plural": r.plural,
        "group": r.group,
        "kind": r.kind,
        "short_names": r.short_names,
    }
    if r.kind == "Secret" and r.group == "" and not opts.include_secrets:
        return False
    if opts.include_resources and not matches_type(opts.include_resources, **kw):
        return False
    if matches_type(opts.exclude_resources, **kw):
        return False
    return opts.include_resources != [] or not matches_type(DEFAULT_EXCLUDED_TYPES, **kw)


def _namespaces(api: KubeApi, opts: ExportOptions) -> list[str]:
    explicit = [n for n in opts.include_namespaces if not any(c in n for c in "*?[")]
    if opts.include_namespaces and len(explicit) == len(opts.include_namespaces):
        names = explicit  # no list right on namespaces needed
    else:
        names = [n["metadata"]["name"] for n in api.get("/api/v1/namespaces").get("items") or []]
    return sorted(
        n for n in names if namespace_selected(n, opts.include_namespaces, opts.exclude_namespaces)
    )


class _Writer:
    def __init__(self, root: str, result: ExportResult) -> None:
        self.root = root
        self.result = result
        self.seen: set[str] = set()

    def write(self, r: ApiResource, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace") if r.namespaced else None
        rel = manifest_path(r.group, r.kind, meta["name"], ns)
        if rel in self.seen:
            return
        why = is_generated(obj)
        if why:
            self.result.skipped.append(f"{rel}: {why}")
            return
        obj.setdefault("apiVersion", r.api_version)
        obj.setdefault("kind", r.kind)
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(dump_manifest(clean_manifest(obj)))
        self.seen.add(rel)
        self.result.paths.append(rel)
        self.result.objects[r.type_name] = self.result.objects.get(r.type_name, 0) + 1


def _list(api: KubeApi, r: ApiResource, ns: str | None, selector: str | None) -> list[Any]:
    query = [("labelSelector", selector)] if selector else []
    items: list[Any] = []
    cont = ""
    while True:
        q = [*query, ("limit", "500")] + ([("continue", cont)] if cont else [])
        doc = api.get(r.path(ns), q)
        items += doc.get("items") or []
        cont = (doc.get("metadata") or {}).get("continue") or ""
        if not cont:
            return items


def export_tree(api: KubeApi, root: str, opts: ExportOptions) -> ExportResult:
    """Write the selected objects' clean manifests under ``root``."""
    result = ExportResult()
    writer = _Writer(root, result)
    requirements = parse_selector(opts.label_selector)
    resources = [r for r in api.resources() if _listable(r)]
    namespaced = [r for r in resources if r.namespaced and _selected_type(r, opts)]
    namespaces = _namespaces(api, opts)
    ns_type = api.find("", "Namespace")
    deps: dict[tuple[str, str], set[str]] = {}  # (group, kind) -> names, cluster-scoped
    for ns in namespaces:
        if ns_type is not None:
            try:
                ns_obj = api.get(ns_type.path(name=ns))
            except KubeError as exc:
                if exc.status == 404:
                    result.warnings.append(f"namespace {ns} does not exist")
                    continue
                if exc.status != 403:
                    raise
                result.warnings.append(
                    f"namespace {ns}: the Namespace object is not readable ({exc}); a restore "
                    "into a namespace that does not exist will fail"
                )
            else:  # always: restoring the namespace's objects needs it
                ns_obj.update(apiVersion="v1", kind="Namespace")
                _write_namespace(writer, ns_obj)
        for r in namespaced:
            try:
                items = _list(api, r, ns, opts.label_selector)
            except KubeError as exc:
                if exc.status in (403, 404, 405):
                    result.warnings.append(f"{r.type_name} in {ns}: not readable ({exc})")
                    continue
                raise
            for obj in items:
                obj.update(apiVersion=r.api_version, kind=r.kind)
                if not matches_labels(requirements, obj["metadata"].get("labels")):
                    continue
                writer.write(r, obj)
                if opts.include_cluster_scoped and not is_generated(obj):
                    _dependencies(r, obj, deps)
    if opts.include_cluster_scoped:
        for r in resources:
            if r.namespaced or not _selected_type(r, opts):
                continue
            for name in sorted(deps.get((r.group, r.kind), ())):
                try:
                    obj = api.get(r.path(name=name))
                except KubeError as exc:
                    result.warnings.append(f"{r.kind} {name}: {exc}")
                    continue
                obj.update(apiVersion=r.api_version, kind=r.kind)
                writer.write(r, obj)
    result.paths.sort()
    return result


def _write_namespace(writer: _Writer, obj: dict[str, Any]) -> None:
    """The Namespace object goes with its contents: ``namespaces/<ns>/core/Namespace/<ns>``."""
    name = obj["metadata"]["name"]
    rel = f"namespaces/{name}/core/Namespace/{name}.yaml"
    path = os.path.join(writer.root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(dump_manifest(clean_manifest(obj)))
    writer.seen.add(rel)
    writer.result.paths.append(rel)
    writer.result.objects["namespaces"] = writer.result.objects.get("namespaces", 0) + 1


def _dependencies(
    r: ApiResource, obj: dict[str, Any], deps: dict[tuple[str, str], set[str]]
) -> None:
    """The cluster-scoped objects ``obj`` needs: its CRD, a claim's StorageClass, a
    binding's ClusterRole."""
    if r.group and not r.group.endswith(".k8s.io") and "." in r.group:
        deps.setdefault(("apiextensions.k8s.io", "CustomResourceDefinition"), set()).add(
            f"{r.plural}.{r.group}"
        )
    spec = obj.get("spec") or {}
    if r.kind == "PersistentVolumeClaim" and spec.get("storageClassName"):
        deps.setdefault(("storage.k8s.io", "StorageClass"), set()).add(spec["storageClassName"])
    if r.kind == "RoleBinding":
        ref = obj.get("roleRef") or {}
        if ref.get("kind") == "ClusterRole" and ref.get("name"):
            deps.setdefault(("rbac.authorization.k8s.io", "ClusterRole"), set()).add(ref["name"])


def export_resources(
    api: KubeApi,
    repo: Repository,
    opts: ExportOptions,
    backup: BackupOptions,
    progress: ProgressCallback | None = None,
) -> ExportResult:
    """Export into a fresh temporary tree and back it up as one snapshot."""
    with tempfile.TemporaryDirectory(
        prefix="safehold-resources-", dir=os.environ.get("SAFEHOLD_TMPDIR")
    ) as tmp:
        root = os.path.join(tmp, TREE_ROOT)
        os.makedirs(root)
        result = export_tree(api, root, opts)
        result.backup = backup_paths(repo, [root], backup, progress=progress)
    return result
