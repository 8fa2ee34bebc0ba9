"""``Cluster`` and ``Namespace``: what tests use to talk to a test ground or any real cluster.

The same tests run against the local test ground (the pod runner plays the kubelet) and against
a cluster named by ``$KUBECONFIG`` (kind in a hosted CI, for example). Everything here goes
through ``kubectl`` or the kubernetes client with the kubeconfig, never through test-ground
internals, except where a local cluster can do better (restarting the controller-manager after
CRDs are installed, reading pod logs the pod runner captured).
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from testground import controlplane, podlogs, processes

__all__ = ["Cluster", "Namespace", "WaitTimeout"]

T = TypeVar("T")
Manifest = str | dict[str, Any] | Iterable[dict[str, Any]]


class WaitTimeout(AssertionError):
    """A wait ran out of time; the message says what was awaited and what was last seen."""


def _yaml(manifest: Manifest) -> str:
    if isinstance(manifest, str):
        return manifest
    if isinstance(manifest, dict):
        return yaml.safe_dump(manifest, sort_keys=False)
    return yaml.safe_dump_all(list(manifest), sort_keys=False)


@dataclass
class Cluster:
    """A cluster reachable through ``kubeconfig``; ``local`` is set for a test ground."""

    kubeconfig: Path
    local: controlplane.ClusterState | None = None

    @functools.cached_property
    def server_minor(self) -> int:
        """The apiserver's minor version (20 on the test ground)."""
        version = json.loads(self.kubectl("get", "--raw", "/version").stdout)
        return int(re.sub(r"\D", "", version["minor"]) or 0)

    @property
    def pod_runner(self) -> bool:
        """Whether pods run through the local pod runner (no kubelet)."""
        return self.local is not None and "pod-runner" in self.local.pids

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; on failure raise with its stderr."""
        argv = [controlplane.kubectl_binary(), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def api_client(self) -> Any:
        """A new ``kubernetes.client.ApiClient`` for this cluster."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]

    def apply(self, manifest: Manifest, namespace: str | None = None) -> str:
        """``kubectl apply`` YAML text, one object or a list of them; returns kubectl's output."""
        args = ["apply", "-f", "-"]
        if namespace:
            args[:0] = ["--namespace", namespace]
        return self.kubectl(*args, input=_yaml(manifest)).stdout

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """One object as a dict, or None when it does not exist."""
        args = ["get", kind, name, "-o", "json", "--ignore-not-found"]
        if namespace:
            args += ["--namespace", namespace]
        out = self.kubectl(*args).stdout.strip()
        if not out:
            return None
        obj: dict[str, Any] = json.loads(out)
        return obj

    def wait_for(
        self,
        check: Callable[[], T | None],
        *,
        timeout: float = 60.0,
        what: str = "a condition",
        interval: float = 0.25,
    ) -> T:
        """Poll ``check()`` until it returns something truthy, which is returned."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(interval)
        raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")

    def wait_condition(
        self,
        kind: str,
        name: str,
        condition: str,
        namespace: str | None = None,
        *,
        status: str = "True",
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """Wait until ``status.conditions`` has ``condition`` = ``status``; returns the object."""

        def check() -> dict[str, Any] | None:
            obj = self.get(kind, name, namespace)
            conds = (obj or {}).get("status", {}).get("conditions") or []
            if any(c.get("type") == condition and c.get("status") == status for c in conds):
                return obj
            return None

        where = f" in {namespace}" if namespace else ""
        return self.wait_for(
            check, timeout=timeout, what=f"{kind}/{name}{where} to be {condition}={status}"
        )

    def install_crds(self, path: Path, *, timeout: float = 90.0) -> list[str]:
        """Install the CRDs in ``path`` (a directory or one file) and wait until they are usable.

        Usable means served by discovery and watched by the garbage collector: on the test
        ground the controller-manager is restarted (its GC discovers types at start); on any
        other cluster this waits out the GC's 30 s discovery resync.
        """
        if self.local is not None:
            names = controlplane.install_crds(self.local, path, timeout=timeout)
            if names:
                controlplane.restart_controller_manager(self.local, timeout=timeout)
            return names
        files = [path] if path.is_file() else sorted(path.glob("*.y*ml"))
        names = []
        for f in files:
            self.kubectl("apply", "-f", str(f))
            for doc in yaml.safe_load_all(f.read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    names.append(doc["metadata"]["name"])
        for name in names:
            self.kubectl(
                "wait", "--for=condition=Established", f"crd/{name}", f"--timeout={timeout:.0f}s"
            )
        if names:
            time.sleep(31)
        return names

    def pod_logs(self, namespace: str, pod: str, *, tail: int = 50) -> str:
        """Every container's recent log lines of one pod, labelled."""
        if self.local is not None:
            return podlogs.pod_logs(self.local.path / "pods", namespace, pod, tail=tail)
        result = self.kubectl(
            "logs", pod, "--namespace", namespace, "--all-containers", "--prefix",
            f"--tail={tail}", check=False,
        )  # fmt: skip
        return result.stdout or result.stderr

    def namespace_report(self, namespace: str) -> str:
        """Pods, their logs and the events of a namespace: what to read when a test fails."""
        parts = [
            self.kubectl("get", "all", "--namespace", namespace, "-o", "wide", check=False).stdout
        ]
        pods = self.kubectl(
            "get", "pods", "--namespace", namespace, "-o", "name", check=False
        ).stdout.split()
        for ref in pods:
            parts.append(self.pod_logs(namespace, ref.split("/", 1)[1]))
        events = self.kubectl(
            "get", "events", "--namespace", namespace, "--sort-by=.lastTimestamp", check=False
        )
        parts.append(events.stdout)
        return "\n".join(parts)

    def check_alive(self) -> None:
        """On the test ground: fail, quoting its log, if a process of the cluster has died."""
        if self.local is None:
            return
        for name, running in self.local.running().items():
            if not running:
                log = self.local.log(name)
                raise AssertionError(
                    f"the test ground's {name} is not running any more; its log ({log}) ends "
                    f"with:\n{processes.log_tail(log)}"
                )

    def create_namespace(self, base: str) -> Namespace:
        """A fresh namespace whose ``default`` service account can already run pods."""
        self.check_alive()
        slug = re.sub(r"[^a-z0-9-]+", "-", base.lower()).strip("-")[:40].strip("-") or "test"
        name = f"{slug}-{int(time.time() * 1000) % 10**8:08d}"
        self.kubectl("create", "namespace", name)

        needs_secret = self.server_minor < 24

        def sa_ready() -> bool:
            sa = self.get("serviceaccount", "default", name)
            # before 1.24 pods are admitted only once the token Secret exists; later, never
            return sa is not None and (bool(sa.get("secrets")) or not needs_secret)

        self.wait_for(sa_ready, timeout=60, what=f"the default service account of {name}")
        return Namespace(name, self)

    def delete_namespace(self, name: str) -> None:
        self.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


class Namespace(str):
    """A namespace name (it is a ``str``) with helpers bound to it."""

    cluster: Cluster

    def __new__(cls, name: str, cluster: Cluster) -> Namespace:
        obj = super().__new__(cls, name)
        obj.cluster = cluster
        return obj

    @property
    def name(self) -> str:
        return str(self)

    def kubectl(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("--namespace", str(self), *args, **kw)

    def apply(self, manifest: Manifest) -> str:
        return self.cluster.apply(manifest, namespace=str(self))

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.cluster.get(kind, name, str(self))

    def wait_condition(self, kind: str, name: str, condition: str, **kw: Any) -> dict[str, Any]:
        return self.cluster.wait_condition(kind, name, condition, str(self), **kw)

    def logs(self, pod: str, *, tail: int = 50) -> str:
        return self.cluster.pod_logs(str(self), pod, tail=tail)

    def wait_pod_finished(self, name: str, *, timeout: float = 90.0) -> dict[str, Any]:
        """Wait until pod ``name`` is Succeeded or Failed; returns the pod."""

        def check() -> dict[str, Any] | None:
            pod = self.get("pod", name)
            phase = (pod or {}).get("status", {}).get("phase")
            return pod if phase in ("Succeeded", "Failed") else None

        return self.cluster.wait_for(check, timeout=timeout, what=f"pod {self}/{name} to finish")

    def terminated(self, name: str, container: str | None = None) -> dict[str, Any]:
        """``state.terminated`` of a finished pod's container (the first when not named)."""
        pod = self.wait_pod_finished(name)
        statuses = pod["status"].get("containerStatuses", [])
        for st in statuses:
            if container is None or st["name"] == container:
                term: dict[str, Any] = st["state"]["terminated"]
                return term
        raise AssertionError(f"pod {self}/{name} has no container {container!r}: {statuses}")
