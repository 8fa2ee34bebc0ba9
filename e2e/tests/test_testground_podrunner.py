"""The pod runner on its own: a cluster without one, and the runner started and stopped here.

This module's cluster is always a local one (also when ``$KUBECONFIG`` names another cluster);
it runs beside the session's, and starts a third one, which checks that test-ground clusters
coexist (own ports, own directories). Its start-up time is the warm-start figure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testground import controlplane
from testground.kube import Cluster, Namespace
from testground.manifests import claim, container, pod, python_command

pytestmark = pytest.mark.e2e
E2E = Path(__file__).resolve().parent.parent
WARM_START_LIMIT = 15.0


class RunnerProcess:
    """``python -m testground.podrunner`` for one cluster directory, logging to a file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.log = directory / "logs" / "pod-runner-test.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        ready = self.directory / "pods" / "runner.ready"
        ready.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env["PYTHONPATH"] = str(E2E)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "testground.podrunner",
                "--cluster-dir",
                str(self.directory),
                "--log-file",
                str(self.log),
            ],
            env=env,
        )
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "the pod runner did not become ready"
            time.sleep(0.1)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self.proc = None
        return code


@pytest.fixture(scope="module")
def bare(testground_factory: Callable[..., Cluster]) -> Cluster:
    """A local cluster of this module's own, without a pod runner (even when $KUBECONFIG is set)."""
    cluster: Cluster = testground_factory("bare", pod_runner=False)
    return cluster


@pytest.fixture(scope="module")
def runner(bare: Cluster) -> Iterator[RunnerProcess]:
    assert bare.local is not None
    proc = RunnerProcess(bare.local.path)
    proc.start()
    yield proc
    if proc.proc is not None:
        assert proc.stop() == 0


@pytest.fixture
def ns(bare: Cluster, runner: RunnerProcess, request: pytest.FixtureRequest) -> Iterator[Namespace]:
    if runner.proc is None:
        runner.start()
    namespace = bare.create_namespace(request.node.name)
    yield namespace
    bare.delete_namespace(namespace)


def _waiting_message(ns: Namespace, name: str) -> str | None:
    pod_doc = ns.get("pod", name) or {}
    for st in pod_doc.get("status", {}).get("containerStatuses", []):
        waiting = st.get("state", {}).get("waiting", {})
        if waiting.get("reason") == "CreateContainerConfigError":
            return str(waiting.get("message"))
    return None


def test_testground_warm_start_and_two_clusters_side_by_side(bare: Cluster) -> None:
    assert bare.local is not None
    print(f"warm start of a test-ground cluster: {bare.local.ready_seconds:.1f}s")
    assert bare.local.ready_seconds < WARM_START_LIMIT
    other = controlplane.up(bare.local.path.parent / "side-by-side", pod_runner=False)
    try:
        assert other.apiserver_port != bare.local.apiserver_port
        assert other.etcd_port != bare.local.etcd_port
        second = Cluster(other.kubeconfig, other)
        second.kubectl("create", "namespace", "only-in-second")
        assert bare.get("namespace", "only-in-second") is None
        assert second.get("namespace", "only-in-second") is not None
        os.kill(other.pids["etcd"], signal.SIGKILL)
        with pytest.raises(AssertionError, match=r"the test ground's etcd is not running any more"):
            second.wait_for(lambda: second.check_alive(), timeout=10, what="etcd to be noticed")
    finally:
        controlplane.down(other.path, remove=True)
    assert all(bare.local.running().values())


def test_testground_runner_survives_bad_pods(ns: Namespace) -> None:
    ns.apply(
        pod(
            "nfs",
            [container("c", ["true"])],
            volumes=[{"name": "v", "nfs": {"server": "x", "path": "/"}}],
        )
    )
    ns.apply(pod("no-command", [{"name": "c", "image": "busybox"}]))
    env = [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "later", "key": "k"}}}]
    ns.apply(
        pod(
            "needs-secret",
            [container("c", ["sh", "-c", 'printf %s "$K" > /dev/termination-log'], env=env)],
        )
    )
    ns.apply(pod("crashes-runner-not", [container("c", ["/nonexistent/binary"])]))

    message = ns.cluster.wait_for(lambda: _waiting_message(ns, "nfs"), what="nfs to wait")
    assert "volume v: type ['nfs'] is not supported" in message
    term = ns.terminated("no-command")
    assert term["exitCode"] == 128
    assert "cannot run image 'busybox' without a command" in term["message"]
    message = ns.cluster.wait_for(lambda: _waiting_message(ns, "needs-secret"), what="waiting")
    assert message == 'secret "later" not found (env K)'
    ns.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "later"},
            "stringData": {"k": "arrived"},
        }
    )
    assert ns.terminated("needs-secret")["message"] == "arrived"
    assert ns.terminated("crashes-runner-not")["exitCode"] == 127
    ns.apply(pod("good", [container("c", ["true"])]))
    assert ns.terminated("good")["reason"] == "Completed"


def test_testground_runner_init_containers_volumes_and_working_dir(ns: Namespace) -> None:
    ns.apply(
        [
            claim("src"),
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "cfg"},
                "data": {"greeting": "hi"},
            },
        ]
    )
    volumes = [
        {"name": "scratch", "emptyDir": {}},
        {"name": "cfg", "configMap": {"name": "cfg"}},
        {"name": "src", "persistentVolumeClaim": {"claimName": "src"}},
    ]
    init = container(
        "init",
        ["sh", "-c", "echo from-init > /scratch/note; echo pvc > /src/f"],
        volumeMounts=[
            {"name": "scratch", "mountPath": "/scratch"},
            {"name": "src", "mountPath": "/src"},
        ],
    )
    main = container(
        "main",
        [
            "sh",
            "-c",
            'printf "%s %s %s %s" "$(cat note)" "$(cat /cfg/greeting)" "$PWD" "$HOSTNAME"'
            " > /dev/termination-log",
        ],
        workingDir="/scratch",
        volumeMounts=[
            {"name": "scratch", "mountPath": "/scratch"},
            {"name": "cfg", "mountPath": "/cfg"},
        ],
    )
    ns.apply(pod("layered", [main], initContainers=[init], volumes=volumes))
    assert ns.terminated("layered")["message"] == "from-init hi /scratch layered"
    pod_doc: dict[str, Any] = ns.get("pod", "layered")  # type: ignore[assignment]
    assert pod_doc["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"] == 0

    # a claim cloned from another starts with its data
    clone = claim("copy")
    clone["spec"]["dataSource"] = {"kind": "PersistentVolumeClaim", "name": "src"}
    ns.apply(clone)
    reader = container(
        "r",
        ["sh", "-c", "cat /c/f > /dev/termination-log"],
        volumeMounts=[{"name": "c", "mountPath": "/c"}],
    )
    ns.apply(
        pod(
            "clone-reader",
            [reader],
            volumes=[{"name": "c", "persistentVolumeClaim": {"claimName": "copy"}}],
        )
    )
    assert ns.terminated("clone-reader")["message"] == "pvc\n"


def test_testground_runner_restarts_on_failure_and_keeps_previous_logs(
    ns: Namespace, bare: Cluster
) -> None:
    script = textwrap.dedent("""
        import os, sys
        seen = os.path.exists('/state/ran')
        open('/state/ran', 'w').write('1')
        print('second run' if seen else 'first run', flush=True)
        sys.exit(0 if seen else 1)
    """)
    ns.apply(
        pod(
            "flaky",
            [
                container(
                    "c", python_command(script), volumeMounts=[{"name": "s", "mountPath": "/state"}]
                )
            ],
            restartPolicy="OnFailure",
            volumes=[{"name": "s", "emptyDir": {}}],
        )
    )
    pod_doc = ns.wait_pod_finished("flaky")
    st = pod_doc["status"]["containerStatuses"][0]
    assert pod_doc["status"]["phase"] == "Succeeded"
    assert st["restartCount"] == 1
    assert st["lastState"]["terminated"]["exitCode"] == 1
    assert bare.local is not None
    cli = [str(E2E / "cluster"), "logs", "flaky", "-n", str(ns), "--dir", bare.local.directory]
    current = subprocess.run(cli, capture_output=True, text=True, check=True).stdout
    previous = subprocess.run([*cli, "--previous"], capture_output=True, text=True, check=True)
    assert (current, previous.stdout) == ("second run\n", "first run\n")


def test_testground_runner_enforces_active_deadline(ns: Namespace) -> None:
    ns.apply(pod("slow", [container("c", ["sleep", "120"])], activeDeadlineSeconds=2))
    pod_doc = ns.wait_pod_finished("slow", timeout=30)
    assert pod_doc["status"]["phase"] == "Failed"
    assert pod_doc["status"]["reason"] == "DeadlineExceeded"


def _pid_of(ns: Namespace, name: str) -> int:
    def running() -> int | None:
        pod_doc = ns.get("pod", name) or {}
        for st in pod_doc.get("status", {}).get("containerStatuses", []):
            if "running" in st.get("state", {}):
                return int(st["containerID"].removeprefix("testground://"))
        return None

    return ns.cluster.wait_for(running, timeout=30, what=f"pod {name} to run")


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def test_testground_runner_kills_the_processes_of_a_deleted_pod(ns: Namespace) -> None:
    ns.apply(pod("sleeper", [container("c", ["sleep", "300"])]))
    pid = _pid_of(ns, "sleeper")
    ns.kubectl("delete", "pod", "sleeper", "--wait=false")
    ns.cluster.wait_for(lambda: _gone(pid), timeout=30, what="the pod's process to end")


def test_testground_runner_stops_pods_on_sigterm_and_fails_orphans(
    ns: Namespace, runner: RunnerProcess, bare: Cluster
) -> None:
    ns.apply(pod("orphan", [container("c", ["sleep", "300"])]))
    pid = _pid_of(ns, "orphan")
    assert runner.stop() == 0
    assert _gone(pid)
    runner.start()
    pod_doc = ns.wait_pod_finished("orphan", timeout=30)
    assert (pod_doc["status"]["phase"], pod_doc["status"]["reason"]) == (
        "Failed",
        "PodRunnerRestarted",
    )
    log = runner.log.read_text()
    assert "pod runner stopped" in log
    assert bare.local is not None
    assert bare.local.pki.token("admin") not in log
