#!/usr/bin/env python3
"""The operator demo that ``make quickstart`` runs: Safehold as people use it, on this machine.

It starts the local test ground (a real kube-apiserver and controller-manager, built once by
``make cluster``, plus the pod runner that plays the kubelet), a local SeaweedFS as the S3
object store, installs the operator from the Helm chart, and then applies the YAML of
docs/walkthrough.md: the Secrets, a BackupLocation, a claim filled with sample data by a pod,
and the BackupPolicy. It starts a BackupRun by hand (the policy's schedule would start one at
the next full minute; the demo does not wait for it), waits for it with ``kubectl wait``,
restores it into a new claim with a RestoreRequest, and compares the bytes. Then it prints
what happened and how to look around, and tears everything down, or with ``--keep`` leaves it
running until Ctrl-C.

The walkthrough's YAML is applied as written, with only its marked placeholders (``<S3_ENDPOINT>``,
``<BUCKET>``, ``<RUN>``) filled in, so the demo, the docs and the end-to-end tests
(e2e/tests/test_operator_scenarios.py, which import the helpers below) cannot drift apart.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from testground import controlplane, processes
from testground.kube import Cluster
from testground.objectstores import RunningStore, start_store

__all__ = [
    "CHART",
    "SUCCESS",
    "WALKTHROUGH",
    "claim_path",
    "find_helm",
    "helm",
    "install_operator",
    "main",
    "run_shell_block",
    "tree_digest",
    "walkthrough_block",
    "walkthrough_yaml",
]

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "safehold"
WALKTHROUGH = REPO / "docs" / "walkthrough.md"
#: The last line of a successful demo (the quickstart test looks for it).
SUCCESS = "quickstart: backup and restore succeeded"
_BLOCK = re.compile(r"<!-- walkthrough: ([\w-]+) -->\s*\n```(\w+)\n(.*?)\n```", re.DOTALL)


# ------------------------------------------------------------------ docs/walkthrough.md


def walkthrough_block(name: str) -> str:
    """The text of the code block marked ``<!-- walkthrough: NAME -->`` in the walkthrough."""
    blocks = {m.group(1): m.group(3) for m in _BLOCK.finditer(WALKTHROUGH.read_text())}
    if name not in blocks:
        raise KeyError(f"docs/walkthrough.md has no block marked {name!r} (has {sorted(blocks)})")
    return blocks[name] + "\n"


def walkthrough_yaml(name: str, **placeholders: str) -> str:
    """A YAML block of the walkthrough with its ``<PLACEHOLDERS>`` filled in.

    ``placeholders`` maps a placeholder's name (``S3_ENDPOINT``) to its value; a placeholder
    left unfilled is an error, so a new one in the docs cannot slip through untested.
    """
    text = walkthrough_block(name)
    for key, value in placeholders.items():
        text = text.replace(f"<{key}>", value)
    left = re.findall(r"<[A-Z0-9_]+>", text)
    if left:
        raise ValueError(f"walkthrough block {name!r}: placeholders not filled in: {left}")
    return text


def run_shell_block(
    name: str, cluster: Cluster, namespace: str, env: dict[str, str] | None = None
) -> str:
    """Run a shell block of the walkthrough with bash, in ``namespace`` instead of ``demo``.

    kubectl finds the cluster through ``KUBECONFIG``; ``env`` adds the variables the block
    reads (credentials). Returns the output; raises with it when the block fails.
    """
    script = walkthrough_block(name).replace("--namespace demo", f"--namespace {namespace}")
    kubectl_dir = str(Path(controlplane.kubectl_binary()).parent)
    full_env = {
        "PATH": f"{kubectl_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": os.environ.get("HOME", "/root"),
        "KUBECONFIG": str(cluster.kubeconfig),
        **(env or {}),
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"walkthrough block {name!r} failed: {done.stderr.strip()}")
    return done.stdout


# ------------------------------------------------------------------ helm


def find_helm() -> str:
    """The helm binary ``e2e/install-deps`` installed (found as charts/render_manifest.py does)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "render_manifest", REPO / "charts" / "render_manifest.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found: str = module.find_helm()
    return found


def helm(helm_bin: str, cluster: Cluster, *args: str, values: dict[str, Any] | None = None) -> str:
    """Run helm against ``cluster`` (values as a file on stdin); raise with its stderr."""
    argv = [helm_bin, f"--kubeconfig={cluster.kubeconfig}", *args]
    if values is not None:
        argv += ["-f", "-"]
    done = subprocess.run(
        argv,
        input=yaml.safe_dump(values) if values is not None else None,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return done.stdout


def install_operator(
    helm_bin: str, cluster: Cluster, release: str, namespace: str, image: str | None = None
) -> tuple[int, int]:
    """``helm install`` the chart and wait until the operator's Deployment is Available.

    Pods of the test ground share the host's network, so the metrics and health ports are
    free ports rather than the chart's 8080 and 8081, and one replica runs (two would bind
    the same ports; tests/controller/test_operator_failover.py proves the election with two
    operator processes on ports of their own). Returns (metrics port, health port).
    """
    metrics_port, health_port = processes.free_ports(2)
    values: dict[str, Any] = {
        "replicaCount": 1,
        "metrics": {"port": metrics_port},
        "health": {"port": health_port},
    }
    if image:
        repository, _, tag = image.rpartition(":")
        if not repository or "/" in tag:
            repository, tag = image, "latest"
        values["image"] = {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"}
    helm(helm_bin, cluster, "install", release, str(CHART), "--namespace", namespace,
         values=values)  # fmt: skip
    cluster.kubectl(
        "wait", "deployment", "--for=condition=Available", "--timeout=120s",
        f"--namespace={namespace}", f"--selector=app.kubernetes.io/instance={release}",
        timeout=130,
    )  # fmt: skip
    return metrics_port, health_port


# ------------------------------------------------------------------ claims and data


def claim_path(cluster: Cluster, namespace: str, claim: str, timeout: float = 60) -> Path:
    """The host directory behind a bound claim of the test ground's provisioner."""

    def bound() -> str | None:
        pvc = cluster.get("pvc", claim, namespace) or {}
        if (pvc.get("status") or {}).get("phase") == "Bound":
            return str(pvc["spec"]["volumeName"])
        return None

    volume = cluster.wait_for(bound, timeout=timeout, what=f"claim {claim} to be bound")
    pv = cluster.get("pv", volume)
    assert pv is not None
    return Path(pv["spec"]["hostPath"]["path"])


def tree_digest(root: Path) -> tuple[int, int, str]:
    """(files, bytes, SHA-256 over every relative path and content) of a directory tree."""
    digest = hashlib.sha256()
    files = size = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        digest.update(str(path.relative_to(root)).encode() + b"\0" + data)
        files += 1
        size += len(data)
    return files, size, digest.hexdigest()


# ------------------------------------------------------------------ the demo


def _step(title: str) -> None:
    print(f"\n\033[1m==> {title}\033[0m", flush=True)


def _elapsed(start: float) -> str:
    return f"{time.monotonic() - start:5.1f}s"


def _pod_phase(cluster: Cluster, namespace: str, pod: str) -> str | None:
    """The phase of a pod that has finished, else None."""
    phase = ((cluster.get("pod", pod, namespace) or {}).get("status") or {}).get("phase")
    return str(phase) if phase in ("Succeeded", "Failed") else None


@contextlib.contextmanager
def _store(workdir: Path) -> Iterator[RunningStore]:
    store = start_store("s3", workdir)
    try:
        yield store
    finally:
        store.stop()


def _demo(cluster: Cluster, store: RunningStore, start: float) -> int:
    """Steps 3 to 8, on a running cluster and object store. Returns the exit code."""
    ns = "demo"
    _step(f"3. install the operator with Helm (charts/safehold)  [{_elapsed(start)}]")
    helm_bin = find_helm()
    cluster.kubectl("create", "namespace", "safehold-system")
    metrics_port, _ = install_operator(helm_bin, cluster, "safehold", "safehold-system")
    print(f"operator running; metrics on http://127.0.0.1:{metrics_port}/metrics")

    _step(f"4. Secrets and a BackupLocation on SeaweedFS  [{_elapsed(start)}]")
    cluster.kubectl("create", "namespace", ns)
    bucket = "safehold-demo"
    store.make_bucket(bucket)
    run_shell_block(
        "secrets",
        cluster,
        ns,
        {
            "AWS_ACCESS_KEY_ID": store.options["access_key_id"],
            "AWS_SECRET_ACCESS_KEY": store.options["secret_access_key"],
        },
    )
    location = walkthrough_yaml("location", S3_ENDPOINT=store.endpoint, BUCKET=bucket)
    cluster.apply(location, ns)
    cluster.kubectl("wait", "--for=condition=Available", "backuplocation/s3", "-n", ns,
                    "--timeout=120s", timeout=130)  # fmt: skip
    print(cluster.kubectl("get", "backuplocation", "s3", "-n", ns).stdout.rstrip())

    _step(f"5. a claim with sample data, and the BackupPolicy  [{_elapsed(start)}]")
    cluster.apply(walkthrough_yaml("volume"), ns)
    phase = cluster.wait_for(
        lambda: _pod_phase(cluster, ns, "writer"), timeout=120, what="the writer pod to finish"
    )
    print(cluster.pod_logs(ns, "writer").strip())
    if phase != "Succeeded":
        print(f"the writer pod ended {phase}")
        return 1
    original = tree_digest(claim_path(cluster, ns, "data"))
    print(f"claim data: {original[0]} files, {original[1]:,} bytes, sha256 {original[2][:16]}")
    cluster.apply(walkthrough_yaml("policy"), ns)
    cluster.wait_condition("backuppolicy", "demo", "Ready", ns, timeout=60)

    _step(f"6. back up (a BackupRun by hand; the schedule also runs every minute)  "
          f"[{_elapsed(start)}]")  # fmt: skip
    run = "quickstart"
    cluster.apply(
        {"apiVersion": "safehold.io/v1alpha1", "kind": "BackupRun",
         "metadata": {"name": run}, "spec": {"policyRef": {"name": "demo"}, "type": "full"}},
        ns,
    )  # fmt: skip
    cluster.kubectl("wait", "--for=condition=Complete", f"backuprun/{run}", "-n", ns,
                    "--timeout=180s", timeout=190)  # fmt: skip
    backup = cluster.get("backuprun", run, ns)
    assert backup is not None
    if backup["status"].get("phase") != "Succeeded":
        print(f"the backup did not succeed: {json.dumps(backup['status'], indent=2)}")
        return 1
    source = backup["status"]["sources"][0]

    _step(f"7. restore the run into a new claim  [{_elapsed(start)}]")
    cluster.apply(
        {"apiVersion": "safehold.io/v1alpha1", "kind": "RestoreRequest",
         "metadata": {"name": "to-new-claim"},
         "spec": {"backupRunRef": {"name": run}, "target": {"claimName": "data-restored"}}},
        ns,
    )  # fmt: skip
    cluster.kubectl("wait", "--for=condition=Complete", "restorerequest/to-new-claim", "-n", ns,
                    "--timeout=180s", timeout=190)  # fmt: skip
    restore = cluster.get("restorerequest", "to-new-claim", ns)
    assert restore is not None
    if restore["status"].get("phase") != "Succeeded":
        print(f"the restore did not succeed: {json.dumps(restore['status'], indent=2)}")
        return 1
    restored = tree_digest(claim_path(cluster, ns, "data-restored"))
    print(f"claim data-restored: {restored[0]} files, {restored[1]:,} bytes, "
          f"sha256 {restored[2][:16]}")  # fmt: skip
    if restored != original:
        print("\033[31mthe restored claim differs from the original!\033[0m")
        return 1
    print("\033[32mthe restored bytes match the original claim exactly\033[0m")

    _step(f"8. what happened  [{_elapsed(start)}]")
    print(cluster.kubectl("get", "backuplocations,backuppolicies,backupruns,restorerequests,"
                          "jobs,pvc", "-n", ns).stdout.rstrip())  # fmt: skip
    print(
        f"\nsnapshot {source['snapshotId']} ({source['type']}): {source['files']} files, "
        f"read {source['bytesRead']:,} bytes, stored {source['bytesStored']:,} bytes "
        f"in s3://{bucket}/demo on {store.endpoint}"
    )
    return 0


def _look_around(cluster: Cluster, directory: Path, keep: bool) -> None:
    """How to look at the demo's cluster: now (``--keep``) or on the next run."""
    default = directory.resolve() == controlplane.default_directory("quickstart").resolve()
    select = "--name quickstart" if default else f"--dir {directory}"
    intro = (
        "Look around while it runs"
        if keep
        else "To look around, run it with --keep (make quickstart ARGS=--keep), then"
    )
    print(
        f"\n{intro} (docs/walkthrough.md explains each resource):\n"
        f"  export KUBECONFIG={cluster.kubeconfig}\n"
        "  kubectl -n demo get backupruns,restorerequests -o wide\n"
        "  kubectl -n demo describe backuprun quickstart\n"
        "  kubectl -n safehold-system logs deployment/safehold\n"
        f"  e2e/cluster status {select}\n"
        f"  e2e/cluster logs POD -n demo {select}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--keep", action="store_true", help="keep everything running until Ctrl-C")
    parser.add_argument(
        "--dir",
        type=Path,
        default=controlplane.default_directory("quickstart"),
        help="the cluster's directory (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    directory: Path = args.dir
    start = time.monotonic()
    _step("1. start the local Kubernetes test ground (kube-apiserver, controller-manager, "
          "pod runner)")  # fmt: skip
    try:
        state = controlplane.up(directory, crds=REPO / "crds")
    except controlplane.StartError as exc:  # not built, or a quickstart already running
        print(f"\033[31mquickstart: {exc}\033[0m", file=sys.stderr)
        return 1
    cluster = Cluster(state.kubeconfig, state)
    print(f"ready in {state.ready_seconds:.1f}s; KUBECONFIG={state.kubeconfig}")
    workdir = Path(tempfile.mkdtemp(prefix="safehold-quickstart-"))
    code = 1
    try:
        _step(f"2. start a local SeaweedFS (S3)  [{_elapsed(start)}]")
        with _store(workdir) as store:
            print(f"S3 endpoint {store.endpoint}")
            code = _demo(cluster, store, start)
            if code == 0:
                _look_around(cluster, directory, args.keep)
                print(f"\n\033[32m{SUCCESS} in {time.monotonic() - start:.0f}s\033[0m",
                      flush=True)  # fmt: skip
            if args.keep:
                print("\n--keep: everything keeps running; Ctrl-C tears it down", flush=True)
                for signum in (signal.SIGINT, signal.SIGTERM):  # also when started with &
                    signal.signal(signum, signal.default_int_handler)
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        time.sleep(3600)
    except Exception as exc:  # noqa: BLE001 - the demo reports and tears down whatever failed
        print(f"\033[31mquickstart failed: {exc}\033[0m", file=sys.stderr, flush=True)
        code = 1
    finally:
        _step("tearing down")
        controlplane.down(directory)
        shutil.rmtree(workdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
