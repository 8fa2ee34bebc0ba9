"""``safehold export-resources``, ``apply-resources`` and ``diff-resources``: cluster
configuration (resource manifests) into the repository and back. See
docs/cluster-resources.md.

They talk to the cluster with the pod's service account inside a Job, else with the
kubeconfig (``--kubeconfig``, ``$KUBECONFIG``, ``~/.kube/config``).
"""

from __future__ import annotations

import argparse
from argparse import Namespace
from typing import TYPE_CHECKING

from safehold.cli import exitcodes
from safehold.cli.context import UsageError, open_repo
from safehold.cli.hosts import add_host_filter, add_host_option
from safehold.cli.meta import add_meta_option, read_meta
from safehold.cli.output import Output

if TYPE_CHECKING:
    # The commands import the engine when they run: every other command builds this
    # parser too, and needs none of it (the Kubernetes client least of all).
    from safehold.engine.cluster.apply import ApplyAction
    from safehold.engine.cluster.kube import KubeApi

__all__ = ["apply_resources", "diff_resources", "export_resources_command", "register"]

_DEFAULT_SOURCE = "resources"


def _list(values: list[str]) -> list[str]:
    """Repeatable options that also take comma-separated lists."""
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def _cluster_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", metavar="PATH", help="default: in a pod its service account")
    p.add_argument("--context", metavar="NAME", help="the kubeconfig context to use")


def _selection(p: argparse.ArgumentParser, *, restore: bool) -> None:
    what = "in the snapshot" if restore else "to export"
    p.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help=f"namespaces {what} (repeatable, globs, comma lists; default: all)",
    )
    p.add_argument("--exclude-namespace", action="append", default=[], metavar="NS")
    p.add_argument(
        "--include-resources",
        action="append",
        default=[],
        metavar="TYPE",
        help="resource types: deployments.apps, configmaps, Deployment, deploy (default: all)",
    )
    p.add_argument("--exclude-resources", action="append", default=[], metavar="TYPE")
    p.add_argument("-l", "--selector", metavar="SELECTOR", help="labels: app=web,tier in (a,b)")


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """Add the three commands to the main parser."""
    exp = sub.add_parser(
        "export-resources",
        parents=[common],
        help="back up resource manifests of a cluster",
        description="Store clean manifests of the selected objects as a snapshot.",
    )
    _selection(exp, restore=False)
    exp.add_argument(
        "--cluster-scoped",
        action="store_true",
        help="also the cluster-scoped objects they use (CRDs, StorageClasses, ClusterRoles)",
    )
    exp.add_argument(
        "--include-secrets", action="store_true", help="also Secrets (left out by default)"
    )
    exp.add_argument("--source", default=_DEFAULT_SOURCE, metavar="NAME", help="the source name")
    exp.add_argument("--tag", action="append", default=[], metavar="TAG")
    exp.add_argument("--type", choices=("full", "incremental", "differential"))
    add_host_option(exp)
    add_meta_option(exp, adds="source.kind=clusterResources")
    _cluster_options(exp)
    exp.set_defaults(func=export_resources_command)

    app = sub.add_parser(
        "apply-resources",
        parents=[common],
        help="restore resource manifests into a cluster",
        description="Create (or update) the objects of a resource snapshot in dependency order.",
    )
    app.add_argument("snapshot", metavar="SNAPSHOT", help="an id (prefix) or 'latest'")
    app.add_argument("--source", metavar="NAME", help="with 'latest': of this source")
    add_host_filter(app)
    _selection(app, restore=True)
    app.add_argument("--name", action="append", default=[], metavar="NAME", help="object names")
    app.add_argument(
        "--map-namespace",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="restore the objects of namespace OLD into NEW (repeatable)",
    )
    app.add_argument(
        "--only-namespace",
        action="append",
        default=[],
        metavar="NS",
        help="write only into these namespaces (after mapping; repeatable): an object of "
        "another stops the restore before its first write",
    )
    app.add_argument(
        "--existing",
        choices=("skip", "update", "fail"),
        default="skip",
        help="objects that exist: leave (default), server-side apply, or stop before writing",
    )
    app.add_argument("--dry-run", action="store_true", help="only list what would be done")
    _cluster_options(app)
    app.set_defaults(func=apply_resources)

    diff = sub.add_parser(
        "diff-resources",
        parents=[common],
        help="what changed between two resource snapshots",
    )
    diff.add_argument("old", metavar="SNAPSHOT1")
    diff.add_argument("new", metavar="SNAPSHOT2")
    diff.add_argument("--source", metavar="NAME", help="with 'latest': of this source")
    add_host_filter(diff)
    diff.add_argument(
        "--show-secrets", action="store_true", help="also show changed Secret contents"
    )
    diff.set_defaults(func=diff_resources)


def _connect(args: Namespace) -> KubeApi:
    from safehold.engine.cluster.kube import KubeError, connect

    try:
        return connect(args.kubeconfig, args.context)
    except KubeError as exc:
        raise UsageError(str(exc)) from None


def export_resources_command(args: Namespace, out: Output) -> int:
    from safehold.engine import BackupOptions
    from safehold.engine.cluster.export import ExportOptions, export_resources
    from safehold.engine.cluster.kube import KubeError
    from safehold.engine.cluster.selection import LabelSelectorError, parse_selector
    from safehold.repo import RepositoryLock

    try:
        parse_selector(args.selector)
    except LabelSelectorError as exc:
        raise UsageError(f"--selector: {exc}") from None
    opts = ExportOptions(
        include_namespaces=_list(args.namespace),
        exclude_namespaces=_list(args.exclude_namespace),
        include_resources=_list(args.include_resources),
        exclude_resources=_list(args.exclude_resources),
        label_selector=args.selector,
        include_cluster_scoped=args.cluster_scoped,
        include_secrets=args.include_secrets,
    )
    meta = read_meta(args, {"source.kind": "clusterResources"})
    api = _connect(args)
    repo = open_repo(args)
    backup = BackupOptions(
        source=args.source, type=args.type, tags=args.tag, meta=meta, host=args.host
    )
    try:
        with RepositoryLock(repo, exclusive=False, operation="backup"):
            result = export_resources(api, repo, opts, backup)
    except KubeError as exc:
        out.error(f"reading the cluster failed: {exc}")
        out.summary({"ok": False, "error": str(exc), "exit_code": exitcodes.ERROR})
        return exitcodes.ERROR
    assert result.backup is not None
    snap = result.backup.snapshot
    for w in result.warnings:
        out.warn(w)
    out.print(
        f"snapshot {snap.id[:12]} of {snap.source}: {sum(result.objects.values())} objects"
        f" ({', '.join(f'{n} {t}' for t, n in sorted(result.objects.items()))}), "
        f"{snap.summary.get('bytes_new', 0)} new bytes"
    )
    out.summary({"ok": True, **result.summary(), "exit_code": exitcodes.OK})
    return exitcodes.OK


def _mapping(items: list[str]) -> dict[str, str]:
    mapping = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old or not new:
            raise UsageError(f"--map-namespace takes OLD=NEW, got {item!r}")
        mapping[old] = new
    return mapping


def apply_resources(args: Namespace, out: Output) -> int:
    from safehold.engine.cluster.apply import (
        ApplyOptions,
        ExistingObjects,
        NamespacesNotAllowed,
        apply_manifests,
        check_namespaces,
        read_tree,
        select_manifests,
    )
    from safehold.engine.cluster.kube import KubeError
    from safehold.engine.cluster.selection import LabelSelectorError, parse_selector
    from safehold.engine.cluster.snapshot_tree import NotAResourceSnapshot, snapshot_tree
    from safehold.repo import RepositoryLock

    try:
        parse_selector(args.selector)
    except LabelSelectorError as exc:
        raise UsageError(f"--selector: {exc}") from None
    opts = ApplyOptions(
        include_namespaces=_list(args.namespace),
        exclude_namespaces=_list(args.exclude_namespace),
        include_resources=_list(args.include_resources),
        exclude_resources=_list(args.exclude_resources),
        names=_list(args.name),
        label_selector=args.selector,
        namespace_mapping=_mapping(args.map_namespace),
        existing=args.existing,
        dry_run=args.dry_run,
        only_namespaces=_list(args.only_namespace),
    )
    api = _connect(args)
    repo = open_repo(args)
    source = args.source or (_DEFAULT_SOURCE if args.snapshot == "latest" else None)
    snap = repo.find_snapshot(args.snapshot, source=source, host=args.host)

    def show(a: ApplyAction) -> None:
        verb = {"create": "create", "update": "update", "skip": "skip (exists)", "fail": "FAILED"}
        prefix = "would " if opts.dry_run and a.action in ("create", "update") else ""
        out.print(f"{prefix}{verb[a.action]} {a.target}" + (f": {a.error}" if a.error else ""))

    try:
        with (
            RepositoryLock(repo, exclusive=False, operation="restore"),
            snapshot_tree(repo, snap) as root,
        ):
            chosen = select_manifests(read_tree(root), opts, api)
            check_namespaces(chosen, opts.only_namespaces)
            result = apply_manifests(api, chosen, opts, report=show)
    except NotAResourceSnapshot as exc:
        raise UsageError(str(exc)) from None
    except (ExistingObjects, NamespacesNotAllowed, KubeError) as exc:
        out.error(str(exc))
        out.summary({"ok": False, "error": str(exc), "exit_code": exitcodes.ERROR})
        return exitcodes.ERROR
    code = exitcodes.OK if result.ok else exitcodes.PARTIAL
    word = "would be" if opts.dry_run else "were"
    out.print(
        f"{result.count('create')} {word} created, {result.count('update')} updated, "
        f"{result.count('skip')} skipped, {result.count('fail')} failed "
        f"(snapshot {snap.id[:12]})"
    )
    doc = {"ok": result.ok, "snapshot": snap.id, **result.summary(), "exit_code": code}
    # what a RestoreRequest's status.restored shows: objects written (or, in a dry run,
    # that would be) and objects left alone
    doc["files"] = result.count("create") + result.count("update")
    doc["files_skipped"] = result.count("skip")
    if not result.ok:
        failed = [a for a in result.actions if a.action == "fail"]
        doc["error"] = "; ".join(f"{a.target}: {a.error}" for a in failed[:5])
    out.summary(doc)
    return code


def diff_resources(args: Namespace, out: Output) -> int:
    from safehold.engine.cluster.diff import diff_trees
    from safehold.engine.cluster.snapshot_tree import NotAResourceSnapshot, snapshot_tree
    from safehold.repo import RepositoryLock

    repo = open_repo(args)
    source = args.source or _DEFAULT_SOURCE
    old = repo.find_snapshot(
        args.old, source=source if args.old == "latest" else None, host=args.host
    )
    new = repo.find_snapshot(
        args.new, source=source if args.new == "latest" else None, host=args.host
    )
    try:
        with (
            RepositoryLock(repo, exclusive=False, operation="restore"),
            snapshot_tree(repo, old) as a,
            snapshot_tree(repo, new) as b,
        ):
            diff = diff_trees(a, b, secrets=args.show_secrets)
    except NotAResourceSnapshot as exc:
        raise UsageError(str(exc)) from None
    for p in diff.added:
        out.print(f"added    {p}")
    for p in diff.removed:
        out.print(f"removed  {p}")
    for p, text in diff.changed.items():
        out.print(f"changed  {p}")
        out.print(text.rstrip("\n"))
    out.print(
        f"{len(diff.added)} added, {len(diff.removed)} removed, {len(diff.changed)} changed, "
        f"{diff.unchanged} unchanged ({old.id[:12]} -> {new.id[:12]})"
    )
    out.summary({"ok": True, "old": old.id, "new": new.id, **diff.summary()})
    return exitcodes.OK
