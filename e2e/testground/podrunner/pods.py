"""One pod's life on the pod runner: volumes, init containers, containers, status.

A ``PodWorker`` thread owns one pod (by UID). It waits until the pod's configuration resolves
(claims bound, Secrets present), runs the init containers one after another, then all
containers side by side, restarts them per ``restartPolicy`` with a short back-off, enforces
``activeDeadlineSeconds``, and patches the pod status at each change. Status patches carry the
pod's UID, so a pod deleted and re-created under the same name is never confused with the old one.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testground.podrunner import sandbox, status
from testground.podrunner.env import ConfigError, Fetch, container_env, expand
from testground.podrunner.volumes import ClaimResolver, Mount, TokenRequest, container_mounts
from testground.podrunner.volumes import prepare_volumes as _prepare_volumes
from testground.rest import Api, ApiError

__all__ = ["Context", "PodWorker", "pod_work_dir"]

Json = dict[str, Any]
log = logging.getLogger("podrunner")
MAX_MESSAGE = 4096
POLL = 0.1


@dataclass
class Context:
    """What every worker shares: the API, the cluster's directories and the pod base env."""

    api: Api
    pods_dir: Path
    base_env: dict[str, str]
    fetch: Fetch
    claims: ClaimResolver
    tokens: TokenRequest
    entrypoint: Callable[[str], list[str] | None]
    mount_roots: set[Path] = field(default_factory=set)
    keep_visible: tuple[Path, ...] = ()
    lock: threading.Lock = field(default_factory=threading.Lock)


def pod_work_dir(pods_dir: Path, pod: Json) -> Path:
    meta = pod["metadata"]
    return pods_dir / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"


@dataclass
class _Container:
    """One container's current process and the state reported for it."""

    spec: Json
    init: bool = False
    restart_count: int = 0
    proc: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    state: Json = field(default_factory=lambda: status.waiting("ContainerCreating"))
    last_state: Json = field(default_factory=dict)
    restart_at: float | None = None
    done: bool = False
    exit_code: int | None = None
    term_file: Path | None = None
    log_file: Path | None = None

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def report(self, *, init: bool) -> Json:
        ready = "running" in self.state
        doc: Json = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": f"testground://{self.spec.get('image', '')}",
            "state": self.state,
            "lastState": self.last_state,
            "ready": ready or (init and self.done and self.exit_code == 0),
            "restartCount": self.restart_count,
            "started": ready,
        }
        cid = self.state.get("terminated", {}).get("containerID") or (
            f"testground://{self.proc.pid}" if self.proc else ""
        )
        if cid:
            doc["containerID"] = cid
        return doc


class PodWorker(threading.Thread):
    """Runs one pod until it ends or is deleted. Never raises: errors end up in the log."""

    def __init__(self, pod: Json, ctx: Context) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.pod = pod
        self.ctx = ctx
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.work = pod_work_dir(ctx.pods_dir, pod)
        self._stop_event = threading.Event()
        self._start_time = status.now()
        self._started_mono = time.monotonic()
        self._last_report: Json | None = None
        self._last_key: Json | None = None
        self._containers: list[_Container] = []
        policy = pod["spec"].get("restartPolicy", "Always")
        self.restart_policy: str = policy
        self.deadline = pod["spec"].get("activeDeadlineSeconds")

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """The pod was deleted: kill its processes; the thread then exits quietly."""
        self._stop_event.set()

    @property
    def stopping(self) -> bool:
        return self._stop_event.is_set()

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("pod %s/%s: the worker failed", self.namespace, self.pod_name)
            try:
                self._kill_all(self._containers)
            except Exception:
                log.exception("pod %s/%s: could not stop it", self.namespace, self.pod_name)
            self._fail_safe("PodRunnerError", "the pod runner failed on this pod; see its log")
        finally:
            if self.stopping:
                shutil.rmtree(self.work / "volumes", ignore_errors=True)

    # ------------------------------------------------------------------ status
    def _patch(self, doc: Json) -> bool:
        """Send the status; False when it did not get through (the caller retries)."""
        if doc == self._last_report or self.stopping:
            return True
        body = {"metadata": {"uid": self.uid}, "status": doc}
        path = f"/api/v1/namespaces/{self.namespace}/pods/{self.pod_name}/status"
        try:
            self.ctx.api.merge_patch(path, body)
        except ApiError as exc:
            if exc.status in (404, 409):
                log.info("pod %s/%s is gone (%s)", self.namespace, self.pod_name, exc.status)
                self.stop()
                return True
            log.warning("pod %s/%s: status patch: %s", self.namespace, self.pod_name, exc)
            return False
        except Exception as exc:  # noqa: BLE001 - connection trouble: retried
            log.warning("pod %s/%s: status patch: %s", self.namespace, self.pod_name, exc)
            return False
        self._last_report = doc
        return True

    def _report(
        self,
        phase: str,
        inits: list[_Container],
        mains: list[_Container],
        *,
        reason: str | None = None,
        message: str | None = None,
    ) -> bool:
        """Report the pod's status if it changed; False if that did not get through."""
        done = phase in ("Succeeded", "Failed")
        initialized = all(c.done and c.exit_code == 0 for c in inits)
        ready = phase == "Running" and all("running" in c.state for c in mains)
        doc: Json = {
            "phase": phase,
            "conditions": status.conditions(
                initialized=initialized, ready=ready, done=done, since=status.now()
            ),
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self._start_time,
            "containerStatuses": [c.report(init=False) for c in mains],
            "reason": reason,
            "message": message,
        }
        if inits:
            doc["initContainerStatuses"] = [c.report(init=True) for c in inits]
        # conditions carry a timestamp; compare without it to avoid needless patches
        key = {**doc, "conditions": [(c["type"], c["status"]) for c in doc["conditions"]]}
        if key == self._last_key:
            return True
        sent = self._patch(doc)
        if sent:
            self._last_key = key
        return sent

    def _report_final(
        self, phase: str, inits: list[_Container], mains: list[_Container], **why: str
    ) -> None:
        """The last report must get through, or the pod would look Running for ever."""
        deadline = time.monotonic() + 120
        while not self._report(phase, inits, mains, **why):
            if self.stopping or time.monotonic() > deadline:
                log.error("pod %s/%s: could not report %s", self.namespace, self.pod_name, phase)
                return
            self._stop_event.wait(1.0)

    def _fail_safe(self, reason: str, message: str) -> None:
        try:
            self._report_final("Failed", [], [], reason=reason, message=message)
        except Exception:
            log.exception("pod %s/%s: could not report the failure", self.namespace, self.pod_name)

    # ------------------------------------------------------------------ running
    def _deadline_passed(self) -> bool:
        return self.deadline is not None and time.monotonic() - self._started_mono > float(
            self.deadline
        )

    def _prepare(self, inits: list[_Container], mains: list[_Container]) -> dict[str, Path] | None:
        """Resolve volumes and check every container's env; wait while something is missing."""
        while not self.stopping:
            try:
                volumes = _prepare_volumes(
                    self.pod, self.work, self.ctx.fetch, self.ctx.claims, self.ctx.tokens
                )
                for c in inits + mains:
                    container_env(self.pod, c.spec, self.ctx.base_env, self.ctx.fetch)
                return volumes
            except ConfigError as exc:
                message = str(exc)
                for c in inits + mains:
                    c.state = status.waiting("CreateContainerConfigError", message)
                self._report("Pending", inits, mains)
            if self._deadline_passed():
                self._finish_deadline(inits, mains)
                return None
            self._stop_event.wait(1.0)
        return None

    def _launch(self, c: _Container, volumes: dict[str, Path]) -> None:
        spec = c.spec
        try:
            env = container_env(self.pod, spec, self.ctx.base_env, self.ctx.fetch)
            env["HOSTNAME"] = self.pod_name
            if "HOME" not in env:  # a home of the pod's own, as an image's /root would be
                env["HOME"] = str(self.work / "home")
                (self.work / "home").mkdir(exist_ok=True)
            mounts = container_mounts(self.pod, spec, volumes, env)
        except ConfigError as exc:
            c.state = status.waiting("CreateContainerConfigError", str(exc))
            c.restart_at = time.monotonic() + 1.0
            return
        command = [expand(a, env) for a in spec.get("command", [])]
        args = [expand(a, env) for a in spec.get("args", [])]
        if not command:
            entry = self.ctx.entrypoint(spec.get("image", ""))
            if entry is None:
                now = status.now()
                c.state = status.terminated(
                    128, now, now, "",
                    f"the pod runner cannot run image {spec.get('image')!r} without a command: "
                    "set `command` (images are not pulled; commands run in the project's "
                    "environment)",
                )  # fmt: skip
                c.exit_code, c.done = 128, True
                return
            command = entry
        n = c.restart_count
        c.log_file = self.work / "logs" / f"{c.name}-{n}.log"
        c.term_file = self.work / "termination" / f"{c.name}-{n}"
        c.term_file.parent.mkdir(parents=True, exist_ok=True)
        c.term_file.write_bytes(b"")
        c.term_file.chmod(0o666)  # the kubelet's mode: any container user writes its message
        term_path = spec.get("terminationMessagePath") or "/dev/termination-log"
        mounts.append(Mount(source=c.term_file, target=term_path, read_only=False))
        with self.ctx.lock:
            self.ctx.mount_roots |= sandbox.missing_roots([m.target for m in mounts])
        launch = sandbox.Launch(
            argv=command + args,
            env=env,
            working_dir=spec.get("workingDir", ""),
            mounts=mounts,
            log=c.log_file,
            keep_visible=self.ctx.keep_visible,
        )
        launch = sandbox.limited(launch, spec)
        c.proc = sandbox.start(launch)
        c.started_at = status.now()
        c.state = status.running(c.started_at)
        c.restart_at = None
        log.info(
            "pod %s/%s: started container %s (pid %d, restart %d)",
            self.namespace, self.pod_name, c.name, c.proc.pid, n,
        )  # fmt: skip

    def _message(self, c: _Container, code: int) -> str:
        text = b""
        if c.term_file is not None and c.term_file.exists():
            text = c.term_file.read_bytes()[:MAX_MESSAGE]
        policy = c.spec.get("terminationMessagePolicy", "File")
        fallback = policy == "FallbackToLogsOnError" and code != 0 and not text.strip()
        if fallback and c.log_file is not None and c.log_file.exists():
            lines = c.log_file.read_bytes().splitlines()[-80:]
            text = b"\n".join(lines)[-2048:]
        return text.decode(errors="replace")

    def _reap(self, c: _Container) -> bool:
        """If ``c`` exited, record it and schedule a restart when the policy asks. True if so."""
        if c.proc is None:
            return False
        code = c.proc.poll()
        if code is None:
            return False
        sandbox.kill_group(c.proc)  # leftovers of the command
        finished = status.now()
        c.state = status.terminated(
            code, c.started_at, finished, f"testground://{c.proc.pid}", self._message(c, code)
        )
        c.exit_code = int(c.state["terminated"]["exitCode"])
        c.proc = None
        log.info(
            "pod %s/%s: container %s exited with %d",
            self.namespace, self.pod_name, c.name, c.exit_code,
        )  # fmt: skip
        policy = self.restart_policy
        if c.init and policy == "Always":
            policy = "OnFailure"  # init containers never restart after success
        if policy == "Always" or (policy == "OnFailure" and c.exit_code != 0):
            c.last_state = c.state
            c.restart_count += 1
            c.restart_at = time.monotonic() + min(0.5 * 2 ** min(c.restart_count, 5), 10.0)
            c.state = status.waiting("CrashLoopBackOff", f"back-off restarting {c.name}")
        else:
            c.done = True
        return True

    def _kill_all(self, containers: list[_Container]) -> None:
        grace = min(float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)), 10.0)
        live = [c for c in containers if c.proc is not None]
        for c in live:
            assert c.proc is not None
            sandbox.kill_group(c.proc, 15)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(
            c.proc is not None and c.proc.poll() is None for c in live
        ):
            time.sleep(POLL)
        for c in live:
            assert c.proc is not None
            sandbox.kill_group(c.proc)
            try:
                c.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.warning("pod %s/%s: %s did not die", self.namespace, self.pod_name, c.name)

    def _finish_deadline(self, inits: list[_Container], mains: list[_Container]) -> None:
        self._kill_all(inits + mains)
        for c in inits + mains:
            if c.proc is not None or "terminated" not in c.state:
                now = status.now()
                c.state = status.terminated(137, c.started_at or now, now, "", "")
                c.proc = None
        self._report_final(
            "Failed",
            inits,
            mains,
            reason="DeadlineExceeded",
            message=f"Pod was active on the node longer than the specified deadline "
            f"({self.deadline}s)",
        )

    def _run_phase(
        self,
        active: list[_Container],
        volumes: dict[str, Path],
        inits: list[_Container],
        mains: list[_Container],
        phase: str,
    ) -> bool:
        """Run ``active`` until each is done; False when the pod ended (failed or deleted)."""
        for c in active:
            self._launch(c, volumes)
        self._report(phase, inits, mains)
        while True:
            if self.stopping:
                self._kill_all(inits + mains)
                return False
            if self._deadline_passed():
                self._finish_deadline(inits, mains)
                return False
            for c in active:
                self._reap(c)
                if c.restart_at is not None and time.monotonic() >= c.restart_at:
                    self._launch(c, volumes)
            if all(c.done for c in active):
                return True
            self._report(phase, inits, mains)  # only sends changes; retries failed ones
            time.sleep(POLL)

    def _run(self) -> None:
        spec = self.pod["spec"]
        inits = [_Container(s, init=True) for s in spec.get("initContainers", [])]
        mains = [_Container(s) for s in spec.get("containers", [])]
        self._containers = inits + mains
        self.work.mkdir(parents=True, exist_ok=True)
        log.info("pod %s/%s (%s): accepted", self.namespace, self.pod_name, self.uid)
        volumes = self._prepare(inits, mains)
        if volumes is None:
            return
        for c in inits:
            if not self._run_phase([c], volumes, inits, mains, "Pending"):
                return
            if c.exit_code != 0:  # only reachable with restartPolicy Never
                self._report_final("Failed", inits, mains)
                return
        if not self._run_phase(mains, volumes, inits, mains, "Running"):
            return
        ok = all(c.exit_code == 0 for c in mains)
        self._report_final("Succeeded" if ok else "Failed", inits, mains)
        log.info("pod %s/%s: %s", self.namespace, self.pod_name, "Succeeded" if ok else "Failed")
