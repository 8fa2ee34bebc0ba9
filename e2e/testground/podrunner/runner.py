"""The pod runner's main loop: find pods to run, notice deletions, provision volumes.

It polls (every quarter second) rather than watching: a list of a small test cluster's pods is
cheap, and polling has no watch expiry or dropped connection to recover from. Every error in
one round is logged and the next round starts anyway, so a bad pod or a restarting apiserver
never stops the runner.
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib.util
import logging
import os
import threading
from pathlib import Path
from typing import Any

from testground.podrunner.env import ConfigError
from testground.podrunner.logserver import LogServer
from testground.podrunner.node import NODE_NAME, bind, register_node, unschedulable
from testground.podrunner.pods import Context, PodWorker
from testground.podrunner.provisioner import Provisioner
from testground.podrunner.status import now
from testground.rest import Api, ApiError

__all__ = ["DEFAULT_ENTRYPOINTS", "Runner"]

Json = dict[str, Any]
log = logging.getLogger("podrunner")
# Images are never pulled. A container without `command` runs the entrypoint its image would
# have; Safehold's own image's entrypoint is the `safehold` CLI.
DEFAULT_ENTRYPOINTS = {"*safehold*": ["safehold"]}
SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def _ca_bundle(work_dir: Path, ca: Path) -> Path:
    """The public CAs (certifi's, as an image holds them) and the test ground's CA, which
    signs the servers that stand in for public HTTPS services (testground/entra.py): what
    pods' HTTP clients trust (``REQUESTS_CA_BUNDLE``)."""
    import certifi

    directory = work_dir / "node-ca"  # kept visible in every pod, like the venv
    directory.mkdir(exist_ok=True)
    bundle = directory / "ca-bundle.crt"
    bundle.write_text(Path(certifi.where()).read_text() + "\n" + ca.read_text())
    return bundle


class Runner:
    """Plays the kubelet for every pod of one cluster."""

    def __init__(
        self,
        api: Api,
        work_dir: Path,
        volumes_dir: Path,
        *,
        apiserver_port: int,
        venv_bin: Path,
        entrypoints: dict[str, list[str]] | None = None,
        interval: float = 0.25,
        node_name: str = NODE_NAME,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        """``tls`` is (serving cert, key, client CA) for the log server behind ``kubectl logs``."""
        self.api = api
        self.node_name = node_name
        self.log_server = (
            LogServer(work_dir, tls[0], tls[1], tls[2], self._pod_running) if tls else None
        )
        self.released: set[str] = set()
        self.work_dir = work_dir
        self.interval = interval
        self.entrypoints = entrypoints if entrypoints is not None else DEFAULT_ENTRYPOINTS
        self.provisioner = Provisioner(api, volumes_dir)
        self.workers: dict[str, PodWorker] = {}
        self.finished: set[str] = set()
        port = str(apiserver_port)
        base_env = {
            "PATH": os.pathsep.join([str(venv_bin), *SYSTEM_PATH]),
            "VIRTUAL_ENV": str(venv_bin.parent),
            "LANG": "C.UTF-8",
            **_source_path(),
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://127.0.0.1:{port}",
            "KUBERNETES_PORT_443_TCP": f"tcp://127.0.0.1:{port}",
            "KUBERNETES_PORT_443_TCP_ADDR": "127.0.0.1",
            "KUBERNETES_PORT_443_TCP_PORT": port,
            "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
        }
        visible = _environment_dirs(venv_bin)
        if tls:
            bundle = _ca_bundle(work_dir, tls[2])
            base_env["REQUESTS_CA_BUNDLE"] = str(bundle)
            visible = (*visible, bundle.parent)
        self.ctx = Context(
            api=api,
            pods_dir=work_dir,
            base_env=base_env,
            fetch=self._fetch,
            claims=self._claim,
            tokens=self._token,
            entrypoint=self._entrypoint,
            keep_visible=visible,
        )

    def _unschedulable(self, pod: Json) -> bool:
        """Whether this Node cannot take ``pod``; if so, say why in its status once, as
        kube-scheduler does (PodScheduled False, Unschedulable)."""
        spec = pod.get("spec") or {}
        if not spec.get("nodeSelector") and not spec.get("affinity"):
            return False
        why = unschedulable(pod, self.api.get(f"/api/v1/nodes/{self.node_name}"))
        if why is None:
            return False
        said = [
            c
            for c in (pod.get("status") or {}).get("conditions") or []
            if c.get("type") == "PodScheduled" and c.get("message") == why
        ]
        if not said:
            meta = pod["metadata"]
            condition = {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": why,
                "lastProbeTime": None,
                "lastTransitionTime": now(),
            }
            path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status"
            with contextlib.suppress(ApiError):  # deleted meanwhile: nothing to say
                self.api.merge_patch(path, {"status": {"conditions": [condition]}})
        return True

    # ------------------------------------------------------------------ lookups
    def _fetch(self, kind: str, namespace: str, name: str) -> Json | None:
        try:
            return self.api.get(f"/api/v1/namespaces/{namespace}/{kind}/{name}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def _claim(self, namespace: str, name: str) -> Path:
        path = self.provisioner.claim_dir(namespace, name)
        if path is None:
            raise ConfigError(f'persistentvolumeclaim "{name}" is not bound')
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _token(self, namespace: str, sa: str, audience: str | None, seconds: int) -> str:
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": [audience] if audience else [], "expirationSeconds": seconds},
        }
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token"
        try:
            return str(self.api.post(path, body)["status"]["token"])
        except ApiError as exc:
            raise ConfigError(f"token request for service account {sa} failed: {exc}") from exc

    def _entrypoint(self, image: str) -> list[str] | None:
        for pattern, command in self.entrypoints.items():
            if fnmatch.fnmatch(image, pattern):
                return list(command)
        return None

    def _pod_running(self, namespace: str, name: str) -> bool:
        return any(
            w.namespace == namespace and w.pod_name == name and w.is_alive()
            for w in list(self.workers.values())
        )

    # ------------------------------------------------------------------ loop
    def _release(self, pod: Json) -> None:
        """Finish a graceful deletion once the pod's processes are gone (the kubelet's part)."""
        meta = pod["metadata"]
        if meta["uid"] in self.released:
            return
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": meta["uid"]},
        }
        try:
            self.api.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body)
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise
        self.released.add(meta["uid"])

    def _orphan(self, pod: Json) -> None:
        """A pod marked Running that no worker owns: the runner restarted under it."""
        meta = pod["metadata"]
        body = {
            "metadata": {"uid": meta["uid"]},
            "status": {
                "phase": "Failed",
                "reason": "PodRunnerRestarted",
                "message": "the pod runner restarted while this pod ran",
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now()}],
            },
        }
        with contextlib.suppress(ApiError):
            self.api.merge_patch(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status", body
            )

    def sync_pods(self) -> None:
        pods = self.api.get("/api/v1/pods")["items"]
        seen: set[str] = set()
        for pod in pods:
            meta = pod["metadata"]
            uid = meta["uid"]
            seen.add(uid)
            worker = self.workers.get(uid)
            node = pod["spec"].get("nodeName")
            if node and node != self.node_name:
                continue  # another node's pod (a cluster with real kubelets too)
            if meta.get("deletionTimestamp"):
                if worker is not None and worker.is_alive():
                    worker.stop()
                elif node:
                    self._release(pod)
                continue
            if worker is not None or uid in self.finished:
                continue
            phase = pod.get("status", {}).get("phase", "Pending")
            if phase == "Pending":
                if not node:
                    if self._unschedulable(pod):
                        continue
                    if not bind(self.api, pod, self.node_name):
                        continue
                    pod["spec"]["nodeName"] = self.node_name
                worker = PodWorker(pod, self.ctx)
                self.workers[uid] = worker
                worker.start()
            elif phase == "Running":
                self._orphan(pod)
                self.finished.add(uid)
        for uid, worker in list(self.workers.items()):
            if uid not in seen:
                worker.stop()
            if not worker.is_alive():
                del self.workers[uid]
                self.finished.add(uid)
        self.finished &= seen
        self.released &= seen

    def run(self, stop: threading.Event, ready_file: Path | None = None) -> None:
        """Loop until ``stop`` is set, then stop every pod's processes."""
        if self.log_server is not None:
            self.log_server.start()
        port = self.log_server.port if self.log_server is not None else 10250
        while not stop.is_set():
            try:
                self.provisioner.ensure_storage_class()
                register_node(self.api, self.node_name, port)
                break
            except Exception as exc:  # noqa: BLE001 - the apiserver may be restarting
                log.warning("cannot register the node and storage class yet: %s", exc)
                stop.wait(1.0)
        if ready_file is not None:
            ready_file.write_text(str(os.getpid()))
        log.info("pod runner ready")
        while not stop.is_set():
            for step in (self.sync_pods, self.provisioner.sync):
                try:
                    step()
                except Exception:
                    log.exception("%s failed; retrying", step.__name__)
            stop.wait(self.interval)
        self.shutdown()

    def shutdown(self) -> None:
        log.info("stopping %d pod(s)", len(self.workers))
        for worker in self.workers.values():
            worker.stop()
        for worker in self.workers.values():
            worker.join(timeout=15)
        if self.log_server is not None:
            self.log_server.stop()
        # Mount points this runner created on the host stay: removing one would detach the
        # mounts other runners' pods (another test session) hold on it in their namespaces.
        if self.ctx.mount_roots:
            created = ", ".join(sorted(map(str, self.ctx.mount_roots)))
            log.info("mount points created on the host (left in place): %s", created)
        log.info("pod runner stopped")


def _source_path() -> dict[str, str]:
    """``PYTHONPATH`` for the pods: the source root of the safehold this runner imports, so
    that Jobs run the code under test (a worktree's, given by the session's PYTHONPATH)
    rather than the checkout the environment's editable install names."""
    spec = importlib.util.find_spec("safehold")
    if spec is None or not spec.submodule_search_locations:
        return {}
    return {"PYTHONPATH": str(Path(next(iter(spec.submodule_search_locations))).parent.absolute())}


def _environment_dirs(venv_bin: Path) -> tuple[Path, ...]:
    """The directories a pod's command runs from: the environment and safehold's source root.

    An editable install's code lives in the checkout, not in the environment, so both must stay
    visible inside every pod whatever volumes it mounts.
    """
    dirs = [venv_bin.parent.absolute()]
    spec = importlib.util.find_spec("safehold")
    if spec is not None and spec.submodule_search_locations:
        dirs.append(Path(next(iter(spec.submodule_search_locations))).parent.absolute())
    return tuple(dirs)
