"""Fixtures of the controller's integration tests: the operator in-process (kopf's
KopfRunner) against the test ground, and helpers to make locations, claims and data."""

from __future__ import annotations

import asyncio
import io
import os
import secrets
import sys
import threading
import traceback
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kopf.testing import KopfRunner

from safehold.controller import handlers
from safehold.controller.jobs import JOB_CONTAINER
from safehold.controller.kube import Kube
from safehold.controller.runtime import Runtime, set_runtime
from testground import podlogs
from testground.kube import Cluster, Namespace
from testground.objectstores import RunningStore
from testground.processes import free_ports


class Operator(KopfRunner):
    """The operator in a thread of the test (kopf's runner), for the test's namespace, with
    the liveness endpoint that the chart has the kubelet probe (/healthz)."""

    def __init__(self, namespace: str, rt: Runtime) -> None:
        [port] = free_ports(1)
        self.liveness = f"http://127.0.0.1:{port}/healthz"
        self.runtime = rt
        args = ["run", "--standalone", "--namespace", namespace, "--liveness", self.liveness]
        super().__init__([*args, "-m", handlers.__name__], timeout=60)

    def answers(self) -> bool:
        """Whether the operator runs and answers its liveness probe, as a kubelet sees it."""
        if not self._thread.is_alive():
            return False
        try:
            with urllib.request.urlopen(self.liveness, timeout=2) as answer:  # noqa: S310
                return bool(answer.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        """End an operator that no longer answers, as the kubelet kills its container: its
        event loop is stopped wherever its tasks are (kopf waits for every task on its way
        out, and one that swallowed its cancellation would keep it forever)."""
        self._stop.set()  # see release()
        loop = self.runtime.queue._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), f"the operator outlived its loop\n{self.stacks()}"

    def release(self) -> None:
        """Set the stop flag of an operator that stopped by itself: kopf waits for it in a
        thread of the loop's executor, which outlives the loop, and the test process could
        not exit until it is set."""
        self._stop.set()

    def stacks(self) -> str:
        """What an operator that does not stop is doing: its thread's stack, the stacks of
        the other threads and of the tasks left in its event loop (a task that swallows
        kopf's one cancellation keeps the operator running)."""
        out = io.StringIO()
        frames = sys._current_frames()
        for thread in threading.enumerate():
            frame = frames.get(thread.ident or -1)
            if thread is not threading.main_thread() and frame is not None:
                mine = " (the operator's)" if thread is self._thread else ""
                out.write(f"thread {thread.name}{mine}:\n")
                out.write("".join(traceback.format_stack(frame, limit=16)))
        loop = self.runtime.queue._loop
        if loop is not None and not loop.is_closed():
            for task in asyncio.all_tasks(loop):
                out.write(f"\ntask {task.get_name()}:\n")
                task.print_stack(limit=8, file=out)
        return out.getvalue()


OperatorFactory = Callable[..., Operator]


def log_reader(cluster: Cluster) -> Any:
    """Pod logs as the operator reads them: from the API on a real cluster; on the test
    ground (no kubelet to serve pods/log) from the pod runner's captured logs."""
    if cluster.local is None:
        return None
    pods = cluster.local.path / "pods"

    def read(namespace: str, pod: str, tail: int) -> str:
        # by name, as the API reader does: a backup Job's pod may also have a hooks container
        text = podlogs.container_log(pods, namespace, pod, JOB_CONTAINER)
        return "\n".join(text.splitlines()[-tail:])

    return read


@pytest.fixture
def operator(
    cluster: Cluster, namespace: Namespace, monkeypatch: pytest.MonkeyPatch
) -> Iterator[OperatorFactory]:
    """Start the operator for the test's namespace (``operator()``); stopped at the end."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("SAFEHOLD_IMAGE", os.environ.get("SAFEHOLD_TEST_IMAGE", "safehold:0.1.0"))
    runners: list[Operator] = []

    def start(**settings: Any) -> Operator:
        """``settings``: Runtime fields, e.g. ``poll_interval=1.0``."""
        kube = Kube(cluster.api_client(), log_reader=log_reader(cluster))
        rt = Runtime(kube, **settings)
        set_runtime(rt)
        runner = Operator(str(namespace), rt)
        runner.__enter__()
        runners.append(runner)
        return runner

    yield start
    for runner in runners:
        if not runner._thread.is_alive():  # stopped by the test, or by itself
            runner.release()
        else:
            try:
                runner.__exit__(None, None, None)
            except Exception as exc:
                if runner._thread.is_alive():
                    raise AssertionError(f"{exc}\n{runner.stacks()}") from exc
                raise
    handlers.reset()


def stop(runner: KopfRunner) -> None:
    runner.__exit__(None, None, None)


def claim_dir(namespace: Namespace, claim: str) -> Path:
    """The host directory of a bound claim of the test ground's provisioner."""

    def bound() -> str | None:
        pvc = namespace.get("pvc", claim) or {}
        if (pvc.get("status") or {}).get("phase") == "Bound":
            return str(pvc["spec"]["volumeName"])
        return None

    volume = namespace.cluster.wait_for(bound, timeout=60, what=f"claim {claim} to be bound")
    pv = namespace.cluster.get("pv", volume)
    assert pv is not None
    return Path(pv["spec"]["hostPath"]["path"])


def make_claim(
    namespace: Namespace, name: str, size: str = "64Mi", labels: dict[str, str] | None = None
) -> Path:
    namespace.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, **({"labels": labels} if labels else {})},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": size}},
            },
        }
    )
    return claim_dir(namespace, name)


def write_data(root: Path, seed: int, files: int = 20, size: int = 64 * 1024) -> dict[str, bytes]:
    """Random files (incompressible, so stored sizes are honest) under ``root``."""
    import random

    rng = random.Random(seed)
    out: dict[str, bytes] = {}
    for i in range(files):
        rel = f"dir{i % 3}/file{i}.bin"
        data = rng.randbytes(size + i)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out[rel] = data
    return out


def private_data(root: Path) -> None:
    """A file only its owner (uid 999, gid 998) may read, ``private/key.pem`` (mode 0600,
    mtime 1,600,000,000), in a directory only it may enter, beside a public one."""
    (root / "public.txt").write_text("anyone may read this\n")
    private = root / "private"
    private.mkdir(mode=0o700)
    (private / "key.pem").write_text("only the owner reads this\n")
    os.chmod(private / "key.pem", 0o600)
    os.chown(private / "key.pem", 999, 998)
    os.chown(private, 999, 998)
    os.utime(private / "key.pem", (1_600_000_000, 1_600_000_000))


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def store_location(
    namespace: Namespace,
    store: RunningStore,
    name: str = "loc",
    *,
    bucket: str | None = None,
    make_bucket: bool = True,
    password: str | None = None,
    credentials: dict[str, str] | None = None,
    **spec: Any,
) -> str:
    """A BackupLocation on ``store`` with its credentials and password Secrets; ``spec``
    adds fields, e.g. ``role="recovery-site"``."""
    bucket = bucket or f"b-{secrets.token_hex(4)}"
    if make_bucket:
        store.make_bucket(bucket)
    provider = store.provider
    options = dict(store.options)
    endpoint = options.pop("endpoint")
    region = options.pop("region", None)
    namespace.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"{name}-storage"},
                "stringData": credentials if credentials is not None else options,
            },
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"{name}-password"},
                "stringData": {"password": password or secrets.token_hex(12)},
            },
            {
                "apiVersion": "safehold.io/v1alpha1",
                "kind": "BackupLocation",
                "metadata": {"name": name},
                "spec": {
                    "provider": provider,
                    "bucket": bucket,
                    "prefix": "repo",
                    "endpoint": endpoint,
                    **({"region": region} if region and provider == "s3" else {}),
                    "credentialsSecretRef": {"name": f"{name}-storage"},
                    "repositoryPasswordSecretRef": {"name": f"{name}-password"},
                    **spec,
                },
            },
        ]
    )
    return bucket


def policy(namespace: Namespace, name: str, location: str, claims: list[str], **spec: Any) -> None:
    namespace.apply(
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "BackupPolicy",
            "metadata": {"name": name},
            "spec": {
                "location": {"name": location},
                "sources": {"volumes": [{"claimName": c} for c in claims]},
                **spec,
            },
        }
    )


def backup_run(
    namespace: Namespace, name: str, policy_name: str, type_: str = "incremental"
) -> None:
    namespace.apply(
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "BackupRun",
            "metadata": {"name": name},
            "spec": {"policyRef": {"name": policy_name}, "type": type_},
        }
    )


def restore_request(namespace: Namespace, name: str, **spec: Any) -> None:
    namespace.apply(
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "RestoreRequest",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def kubectl_wait(namespace: Namespace, what: str, condition: str, timeout: int = 120) -> None:
    """``kubectl wait --for=condition=...``, as a user would."""
    namespace.kubectl(
        "wait", f"--for=condition={condition}", what, f"--timeout={timeout}s", timeout=timeout + 10
    )


def get(namespace: Namespace, kind: str, name: str) -> dict[str, Any]:
    obj = namespace.get(kind, name)
    assert obj is not None, f"{kind}/{name} does not exist"
    return obj


def round_trip(namespace: Namespace, location: str, seed: int) -> None:
    """What a user checks first on a new location: a claim backed up by a BackupRun of a
    policy writing to ``location``, restored by a RestoreRequest into a new claim, with the
    same bytes. Waits for the location's check first."""
    kubectl_wait(namespace, f"backuplocation/{location}", "Available", timeout=120)
    data = make_claim(namespace, "data")
    original = write_data(data, seed=seed, files=6)
    policy(namespace, "pol", location, ["data"])
    backup_run(namespace, "run-1", "pol")
    kubectl_wait(namespace, "backuprun/run-1", "Complete", timeout=180)
    run = get(namespace, "backuprun", "run-1")
    assert run["status"]["phase"] == "Succeeded", run["status"]
    restore_request(
        namespace, "back", backupRunRef={"name": "run-1"}, target={"claimName": "restored"}
    )
    kubectl_wait(namespace, "restorerequest/back", "Complete", timeout=180)
    back = get(namespace, "restorerequest", "back")
    assert back["status"]["phase"] == "Succeeded", back["status"]
    assert read_tree(claim_dir(namespace, "restored")) == original


class Kit:
    """The helpers above, as one fixture (test modules cannot import conftest)."""

    claim_dir = staticmethod(claim_dir)
    make_claim = staticmethod(make_claim)
    write_data = staticmethod(write_data)
    read_tree = staticmethod(read_tree)
    private_data = staticmethod(private_data)
    store_location = staticmethod(store_location)
    policy = staticmethod(policy)
    backup_run = staticmethod(backup_run)
    restore_request = staticmethod(restore_request)
    kubectl_wait = staticmethod(kubectl_wait)
    round_trip = staticmethod(round_trip)
    stop = staticmethod(stop)
    get = staticmethod(get)


@pytest.fixture
def kit() -> type[Kit]:
    return Kit
