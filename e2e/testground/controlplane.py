"""Start and stop one test-ground cluster: etcd, apiserver, controller-manager, pod runner.

Everything a cluster owns lives in one directory: ``pki/``, ``etcd/``, ``logs/``, ``volumes/``
(PVC data), ``pods/`` (pod runner work), ``kubeconfig`` and ``state.json`` (ports and PIDs). Ports
are picked free on 127.0.0.1, so two clusters run side by side in two directories.

Order matters: CRDs found in a ``crds`` directory are applied after the apiserver answers but
before the controller-manager starts, because its garbage collector discovers new resource types
only every 30 seconds. ``restart_controller_manager`` covers CRDs installed later.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from testground import build, pki, processes
from testground.rest import Api, ApiError

__all__ = [
    "COMPONENTS",
    "ClusterState",
    "StartError",
    "default_directory",
    "down",
    "install_crds",
    "kubectl_binary",
    "load_state",
    "restart_apiserver",
    "restart_controller_manager",
    "up",
]

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "pod-runner")
SERVICE_CIDR = "10.0.0.0/24"
# The controllers a cluster without nodes or a cloud needs. Leaving out the rest (node, CSR,
# autoscaling, quota, cloud) lets the controller-manager reach the service-account controllers
# sooner: its start-up is most of a warm start's time after the apiserver's.
CONTROLLERS = (
    "serviceaccount-token", "serviceaccount", "namespace", "garbagecollector", "job", "cronjob",
    "deployment", "replicaset", "replicationcontroller", "statefulset", "daemonset", "disruption",
    "endpoint", "endpointslice", "podgc", "persistentvolume-binder", "pvc-protection",
    "pv-protection", "root-ca-cert-publisher", "clusterrole-aggregation", "ttl-after-finished",
)  # fmt: skip
GC_SYNCED = "Garbage collector: all resource monitors have synced"
E2E_DIR = Path(__file__).resolve().parent.parent


class StartError(RuntimeError):
    """A component did not come up; the message names it and quotes its log."""


@dataclass
class ClusterState:
    """What ``state.json`` records about a running cluster."""

    directory: str
    version: str
    etcd_port: int
    etcd_peer_port: int
    apiserver_port: int
    pids: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0
    ready_seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return Path(self.directory)

    @property
    def kubeconfig(self) -> Path:
        return self.path / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def pki(self) -> pki.Pki:
        return pki.Pki(self.path / "pki")

    def log(self, component: str) -> Path:
        return self.path / "logs" / f"{component}.log"

    def save(self) -> None:
        tmp = self.path / "state.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(self.path / "state.json")

    def api(self) -> Api:
        """An admin client for the test ground's own checks."""
        return Api(self.server, str(self.pki.ca_cert), self.pki.token("admin"))

    def running(self) -> dict[str, bool]:
        return {
            name: processes.alive(pid, self.directory) for name, pid in sorted(self.pids.items())
        }


def default_directory(name: str = "default") -> Path:
    """Where ``e2e/cluster up --name NAME`` keeps a named cluster."""
    return build.cache_root() / "clusters" / name


def load_state(directory: Path) -> ClusterState | None:
    try:
        raw: dict[str, Any] = json.loads((directory / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return ClusterState(**raw)


def kubectl_binary() -> str:
    found = shutil.which("kubectl")
    if found is None:
        raise StartError("kubectl is not installed: run e2e/install-deps (kubernetes-client)")
    return found


def _write_kubeconfig(state: ClusterState) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "testground",
                "cluster": {
                    "server": state.server,
                    "certificate-authority": str(state.pki.ca_cert),
                },
            }
        ],
        "users": [{"name": "admin", "user": {"token": state.pki.token("admin")}}],
        "contexts": [{"name": "testground", "context": {"cluster": "testground", "user": "admin"}}],
        "current-context": "testground",
    }
    for path, user in (
        (state.kubeconfig, "admin"),
        (state.path / "pki" / "controller-manager.kubeconfig", "controller-manager"),
    ):
        config["users"] = [{"name": "admin", "user": {"token": state.pki.token(user)}}]
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)


def _etcd_argv(state: ClusterState) -> list[str]:
    client = f"http://127.0.0.1:{state.etcd_port}"
    peer = f"http://127.0.0.1:{state.etcd_peer_port}"
    return [
        "etcd",
        "--name=testground",
        f"--data-dir={state.path / 'etcd'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=testground={peer}",
        "--initial-cluster-state=new",
        "--logger=zap",
        "--log-level=warn",
        "--unsafe-no-fsync",
        "--quota-backend-bytes=2147483648",
    ]


def _apiserver_argv(state: ClusterState, binary: Path) -> list[str]:
    p = state.pki
    return [
        str(binary),
        f"--etcd-servers=http://127.0.0.1:{state.etcd_port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={state.apiserver_port}",
        "--insecure-port=0",
        f"--cert-dir={state.path / 'pki' / 'apiserver-generated'}",
        f"--tls-cert-file={p.serving_cert}",
        f"--tls-private-key-file={p.serving_key}",
        f"--client-ca-file={p.ca_cert}",
        f"--token-auth-file={p.token_file}",
        "--authorization-mode=Node,RBAC",
        f"--service-account-key-file={p.sa_pub}",
        f"--service-account-signing-key-file={p.sa_key}",
        "--service-account-issuer=https://kubernetes.default.svc",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--endpoint-reconciler-type=none",
        # `kubectl logs` goes through the apiserver to the pod runner's log server
        f"--kubelet-client-certificate={p.kubelet_client_cert}",
        f"--kubelet-client-key={p.kubelet_client_key}",
        f"--kubelet-certificate-authority={p.ca_cert}",
        "--kubelet-preferred-address-types=InternalIP",
        "--allow-privileged=true",
        "--profiling=false",
        "--enable-priority-and-fairness=false",
        "--v=1",
    ]


def _controller_manager_argv(state: ClusterState, binary: Path) -> list[str]:
    p = state.pki
    return [
        str(binary),
        f"--kubeconfig={state.path / 'pki' / 'controller-manager.kubeconfig'}",
        "--leader-elect=false",
        # one identity for every controller (in system:masters, see pki.py): no waiting for
        # a token per controller at start; client-side rate limits lifted for the same reason
        "--use-service-account-credentials=false",
        "--kube-api-qps=200",
        "--kube-api-burst=400",
        f"--service-account-private-key-file={p.sa_key}",
        f"--root-ca-file={p.ca_cert}",
        "--port=0",
        "--secure-port=0",
        f"--controllers={','.join(CONTROLLERS)}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--concurrent-gc-syncs=10",
        "--v=1",
    ]


def _pod_runner_argv(state: ClusterState) -> list[str]:
    return [
        sys.executable,
        "-m",
        "testground.podrunner",
        "--cluster-dir",
        state.directory,
    ]


def _pod_runner_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("KUBECONFIG", None)
    env["PYTHONPATH"] = os.pathsep.join([str(E2E_DIR), *filter(None, [env.get("PYTHONPATH", "")])])
    return env


def _start(state: ClusterState, name: str, argv: list[str], **kw: Any) -> None:
    state.pids[name] = processes.spawn(argv, log=state.log(name), **kw)
    state.save()


def _wait(state: ClusterState, component: str, check: Any, timeout: float, what: str) -> None:
    """Poll ``check()`` until true; fail early when ``component`` died, quoting its log."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        pid = state.pids.get(component)
        if pid is not None and not processes.alive(pid, state.directory):
            raise StartError(
                f"{component} exited while waiting for {what}; its log "
                f"({state.log(component)}) ends with:\n{processes.log_tail(state.log(component))}"
            )
        try:
            if check():
                return
        except (ApiError, OSError, ValueError) as exc:
            last_error = str(exc)
        except Exception as exc:  # urllib3 raises its own hierarchy  # noqa: BLE001
            last_error = str(exc)
        time.sleep(0.1)
    raise StartError(
        f"timed out after {timeout:.0f}s waiting for {what} ({last_error or 'no answer'}); "
        f"log of {component} ({state.log(component)}):\n{processes.log_tail(state.log(component))}"
    )


def _etcd_healthy(state: ClusterState) -> bool:
    import urllib3

    resp = urllib3.request("GET", f"http://127.0.0.1:{state.etcd_port}/health", timeout=1.0)
    return resp.status == 200 and b"true" in resp.data


def _apiserver_ready(api: Api) -> bool:
    return api.request("GET", "/readyz").get("text") == "ok"


def _default_sa_has_token(api: Api) -> bool:
    sa = api.get("/api/v1/namespaces/default/serviceaccounts/default")
    return bool(sa.get("secrets"))


_CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def _put_crd(api: Api, doc: dict[str, Any], source: Path) -> None:
    """Create or replace one CRD (what ``kubectl apply`` would do, without starting kubectl)."""
    name = doc["metadata"]["name"]
    try:
        api.post(_CRD_PATH, doc)
    except ApiError as exc:
        if exc.status != 409:
            raise StartError(f"CRD {name} from {source} was rejected: {exc}") from exc
        current = api.get(f"{_CRD_PATH}/{name}")
        doc = {**doc, "metadata": {**doc["metadata"], **{
            "resourceVersion": current["metadata"]["resourceVersion"]}}}  # fmt: skip
        try:
            api.request("PUT", f"{_CRD_PATH}/{name}", doc)
        except ApiError as exc2:
            raise StartError(f"CRD {name} from {source} was rejected: {exc2}") from exc2


def install_crds(state: ClusterState, crds: Path, *, timeout: float = 60.0) -> list[str]:
    """Apply ``crds`` (one YAML file, or every one in a directory); wait until Established.

    Returns the CRD names. Discovery answers for them once this returns; the garbage collector
    sees them only after ``restart_controller_manager`` (or its 30 s resync). Files holding
    other kinds too are applied with kubectl.
    """
    files = [crds] if crds.is_file() else sorted([*crds.glob("*.yaml"), *crds.glob("*.yml")])
    if not files:
        return []
    api = state.api()
    names: list[str] = []
    others: list[Path] = []
    for f in files:
        docs = [d for d in yaml.safe_load_all(f.read_text()) if isinstance(d, dict)]
        if not all(d.get("kind") == "CustomResourceDefinition" for d in docs):
            others.append(f)
        for doc in docs:
            if doc.get("kind") == "CustomResourceDefinition":
                names.append(str(doc["metadata"]["name"]))
                if f not in others:
                    _put_crd(api, doc, f)
    if others:
        args = [kubectl_binary(), f"--kubeconfig={state.kubeconfig}", "apply"]
        for f in others:
            args += ["-f", str(f)]
        result = subprocess.run(args, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise StartError(f"kubectl apply of {crds} failed:\n{result.stderr.strip()}")

    def established() -> bool:
        for name in names:
            crd = api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            conds = crd.get("status", {}).get("conditions", [])
            if not any(c["type"] == "Established" and c["status"] == "True" for c in conds):
                return False
        return True

    _wait(state, "kube-apiserver", established, timeout, f"CRDs {names} to be Established")
    return names


def restart_controller_manager(state: ClusterState, *, timeout: float = 60.0) -> None:
    """Restart kube-controller-manager and wait until its garbage collector has synced.

    A fresh controller-manager discovers every resource type at start, so custom resources
    installed since are garbage-collected at once instead of after the next 30 s resync.
    """
    binaries = build.cached_binaries(state.version)
    if binaries is None:
        raise StartError(f"the control-plane binaries {state.version} are no longer cached")
    old = state.pids.get("kube-controller-manager")
    if old is not None:
        processes.stop_pid(old, state.directory)
    log = state.log("kube-controller-manager")
    offset = log.stat().st_size if log.exists() else 0
    argv = _controller_manager_argv(state, binaries.controller_manager)
    _start(state, "kube-controller-manager", argv)

    def gc_synced() -> bool:
        with log.open("rb") as f:
            f.seek(offset)
            return GC_SYNCED.encode() in f.read()

    _wait(state, "kube-controller-manager", gc_synced, timeout, "the garbage collector to sync")


def restart_apiserver(state: ClusterState, *, timeout: float = 60.0) -> None:
    """Stop kube-apiserver and start it again (same port, same etcd), waiting for /readyz.

    Every watch of every client breaks meanwhile: what an operator must survive when its
    apiserver is upgraded or restarted.
    """
    binaries = build.cached_binaries(state.version)
    if binaries is None:
        raise StartError(f"the control-plane binaries {state.version} are no longer cached")
    old = state.pids.get("kube-apiserver")
    if old is not None:
        processes.stop_pid(old, state.directory)
    _start(state, "kube-apiserver", _apiserver_argv(state, binaries.apiserver))
    api = state.api()
    _wait(state, "kube-apiserver", lambda: _apiserver_ready(api), timeout, "/readyz")


def up(
    directory: Path,
    *,
    crds: Path | None = None,
    pod_runner: bool = True,
    timeout: float = 90.0,
) -> ClusterState:
    """Start a fresh cluster in ``directory`` (its old contents are removed) and wait for it.

    Ready means: the apiserver answers ``/readyz``, CRDs from ``crds`` are Established, the
    ``default`` service account has its token, and the pod runner is running.
    """
    binaries = build.cached_binaries()
    if binaries is None:
        raise StartError("the control plane is not built yet: run `e2e/cluster build` first")
    started = time.monotonic()
    existing = load_state(directory)
    if existing is not None and any(existing.running().values()):
        raise StartError(f"a cluster is already running in {directory}: `e2e/cluster down` first")
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    directory.chmod(0o700)
    etcd_port, peer_port, api_port = processes.free_ports(3)
    state = ClusterState(
        directory=str(directory.resolve()),
        version=binaries.directory.name.removeprefix("kubernetes-"),
        etcd_port=etcd_port,
        etcd_peer_port=peer_port,
        apiserver_port=api_port,
        started_at=time.time(),
    )
    for sub in ("logs", "volumes", "pods"):
        (directory / sub).mkdir()
    state.save()

    def phase(name: str) -> None:
        state.phases[name] = round(time.monotonic() - started, 2)

    try:
        pki.make_pki(state.path / "pki")
        _write_kubeconfig(state)
        phase("pki")
        # the apiserver retries etcd until it answers: start both at once
        _start(state, "etcd", _etcd_argv(state))
        _start(state, "kube-apiserver", _apiserver_argv(state, binaries.apiserver))
        _wait(state, "etcd", lambda: _etcd_healthy(state), 30, "etcd to answer /health")
        phase("etcd")
        api = state.api()
        _wait(state, "kube-apiserver", lambda: _apiserver_ready(api), timeout, "/readyz")
        phase("kube-apiserver")
        if crds is not None and crds.is_dir():
            install_crds(state, crds)
            phase("crds")
        _start(
            state,
            "kube-controller-manager",
            _controller_manager_argv(state, binaries.controller_manager),
        )
        if pod_runner:  # it needs only the apiserver: let it start meanwhile
            _start(state, "pod-runner", _pod_runner_argv(state), env=_pod_runner_env())
        _wait(
            state,
            "kube-controller-manager",
            lambda: _default_sa_has_token(api),
            timeout,
            "the default service account and its token",
        )
        phase("kube-controller-manager")
        if pod_runner:
            ready = state.path / "pods" / "runner.ready"
            _wait(state, "pod-runner", ready.exists, 30, "the pod runner")
            phase("pod-runner")
    except BaseException:
        down(directory, remove=False)
        raise
    state.ready_seconds = round(time.monotonic() - started, 2)
    state.save()
    return state


def down(directory: Path, *, remove: bool = False) -> bool:
    """Stop every process of the cluster in ``directory`` (newest first). True if one ran."""
    state = load_state(directory)
    if state is None:
        if remove:
            shutil.rmtree(directory, ignore_errors=True)
        return False
    was_running = any(state.running().values())
    for name in reversed(COMPONENTS):
        pid = state.pids.get(name)
        if pid is not None:
            # the pod runner stops its pods first; give it the time to do so
            processes.stop_pid(pid, state.directory, timeout=20.0 if name == "pod-runner" else 10.0)
    if remove:
        with contextlib.suppress(OSError):
            shutil.rmtree(directory)
    return was_running
