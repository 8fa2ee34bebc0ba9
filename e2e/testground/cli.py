"""``e2e/cluster``: build, start, stop and inspect a test-ground cluster by hand.

    e2e/cluster build [--force]          build kube-apiserver/controller-manager (cached)
    e2e/cluster up [--name N|--dir D]    start a fresh cluster (builds first if needed)
    e2e/cluster env                      print `export KUBECONFIG=...`
    e2e/cluster status                   ports, PIDs and whether each process runs
    e2e/cluster logs POD [-n NS] [-c C]  a pod's container log, as the pod runner captured it
    e2e/cluster logs --component NAME    etcd, kube-apiserver, kube-controller-manager, pod-runner
    e2e/cluster down [--purge]           stop every process (and remove the directory)

A cluster is a directory; the default one is ``$SAFEHOLD_CACHE/clusters/default``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from testground import build, controlplane
from testground.podlogs import container_log

__all__ = ["main"]

REPO = Path(__file__).resolve().parent.parent.parent


def _directory(args: argparse.Namespace) -> Path:
    if args.dir is not None:
        return Path(args.dir).resolve()
    return controlplane.default_directory(args.name)


def _state(args: argparse.Namespace) -> controlplane.ClusterState:
    state = controlplane.load_state(_directory(args))
    if state is None:
        raise SystemExit(f"no cluster in {_directory(args)}: run `e2e/cluster up` first")
    return state


def _build(args: argparse.Namespace) -> int:
    started = time.monotonic()
    bins = build.build(force=args.force)
    print(f"{bins.directory} ({time.monotonic() - started:.1f}s)")
    return 0


def _up(args: argparse.Namespace) -> int:
    build.build()
    crds = Path(args.crds) if args.crds else REPO / "crds"
    state = controlplane.up(_directory(args), crds=crds, pod_runner=not args.no_pod_runner)
    print(f"cluster up in {state.ready_seconds:.1f}s: {state.server}")
    print(f"export KUBECONFIG={state.kubeconfig}")
    return 0


def _down(args: argparse.Namespace) -> int:
    directory = _directory(args)
    ran = controlplane.down(directory, remove=args.purge)
    print(f"stopped the cluster in {directory}" if ran else f"nothing was running in {directory}")
    return 0


def _status(args: argparse.Namespace) -> int:
    state = _state(args)
    print(f"directory:  {state.directory}")
    print(f"apiserver:  {state.server}  (kubernetes {state.version})")
    print(f"etcd:       http://127.0.0.1:{state.etcd_port}")
    print(f"kubeconfig: {state.kubeconfig}")
    steps = ", ".join(f"{k} {v}s" for k, v in state.phases.items())
    print(f"ready in:   {state.ready_seconds}s ({steps})")
    running = state.running()
    for name in controlplane.COMPONENTS:
        if name in state.pids:
            word = "running" if running[name] else "stopped"
            print(f"{name:24} pid {state.pids[name]:<8} {word}")
    return 0 if running and all(running.values()) else 1


def _env(args: argparse.Namespace) -> int:
    print(f"export KUBECONFIG={_state(args).kubeconfig}")
    return 0


def _logs(args: argparse.Namespace) -> int:
    state = _state(args)
    if args.component:
        sys.stdout.write(state.log(args.component).read_text(errors="replace"))
        return 0
    if not args.pod:
        raise SystemExit("name a pod, or --component")
    text = container_log(
        state.path / "pods", args.namespace, args.pod, args.container, previous=args.previous
    )
    sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="e2e/cluster", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("build", "up", "down", "status", "env", "logs"):
        p = sub.add_parser(name)
        if name != "build":
            where = p.add_mutually_exclusive_group()
            where.add_argument("--name", default="default", help="a named cluster")
            where.add_argument("--dir", help="a cluster directory")
        if name == "build":
            p.add_argument("--force", action="store_true", help="rebuild even when cached")
        elif name == "up":
            p.add_argument("--crds", help="install these CRDs first (default: the repo's crds/)")
            p.add_argument("--no-pod-runner", action="store_true")
        elif name == "down":
            p.add_argument("--purge", action="store_true", help="also remove the directory")
        elif name == "logs":
            p.add_argument("pod", nargs="?")
            p.add_argument("-n", "--namespace", default="default")
            p.add_argument("-c", "--container")
            p.add_argument("-p", "--previous", action="store_true")
            p.add_argument("--component", choices=controlplane.COMPONENTS)
    args = parser.parse_args(argv)
    handlers = {
        "build": _build,
        "up": _up,
        "down": _down,
        "status": _status,
        "env": _env,
        "logs": _logs,
    }
    try:
        return handlers[args.command](args)
    except (build.BuildError, controlplane.StartError, LookupError) as exc:
        print(f"cluster {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
