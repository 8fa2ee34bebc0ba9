"""``e2e/cluster``, the command people use by hand: up, status, env, logs, down."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
COMMAND = Path(__file__).resolve().parent.parent / "cluster"


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    return subprocess.run(
        [str(COMMAND), *args], capture_output=True, text=True, env=env, check=check, timeout=180
    )


def test_testground_cluster_command_up_status_env_down(
    tmp_path: Path, testground_factory: object
) -> None:
    # testground_factory: only so that the control plane is built before this test runs
    directory = tmp_path / "by-hand"
    where = ["--dir", str(directory)]
    try:
        up = run("up", *where, "--crds", str(tmp_path / "no-crds"))
        assert up.stdout.splitlines()[-1] == f"export KUBECONFIG={directory / 'kubeconfig'}"
        assert run("env", *where).stdout == f"export KUBECONFIG={directory / 'kubeconfig'}\n"
        status = run("status", *where).stdout
        for component in ("etcd", "kube-apiserver", "kube-controller-manager", "pod-runner"):
            assert f"{component} " in status
        assert "stopped" not in status
        again = run("up", *where, check=False)
        assert again.returncode == 1
        assert "a cluster is already running in" in again.stderr
        kubectl = ["kubectl", f"--kubeconfig={directory / 'kubeconfig'}"]
        subprocess.run(
            [*kubectl, "run", "hi", "--image=x", "--restart=Never", "--command", "--",
             "echo", "hello by hand"],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            [*kubectl, "wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/hi",
             "--timeout=60s"],
            check=True, capture_output=True,
        )  # fmt: skip
        assert run("logs", "hi", *where).stdout == "hello by hand\n"
        assert "Serving securely" in run("logs", "--component", "kube-apiserver", *where).stdout
    finally:
        down = run("down", "--purge", *where, check=False)
    assert down.stdout.startswith("stopped the cluster")
    assert not directory.exists()
    assert "nothing was running" in run("down", *where).stdout
