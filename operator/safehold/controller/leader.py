"""Leader election on a coordination.k8s.io/v1 Lease: of the operator's replicas, one acts.

The chart runs two replicas. Each starts here: the one that holds the Lease runs kopf; the
others wait, answering their probes, and take the Lease over once it has not been renewed
for :data:`LEASE_SECONDS` (the leader's process died, or its node did). This is what
client-go's leader election does, and ``kubectl get lease -n NAMESPACE`` shows the holder.

The leader renews every :data:`RETRY_SECONDS`; if it cannot renew for :data:`RENEW_SECONDS`
(the apiserver unreachable, the Lease taken), it stops acting at once by exiting, so that two
replicas never act together for longer than that; its pod restarts as a standby. That check
runs in a thread of its own, and each Lease call times out: a renewal that hangs on a
connection the apiserver never answers cannot keep a replica leading after a standby took
the Lease. A leader that stops cleanly (SIGTERM, a rolling update) releases the Lease, so a
standby takes over within :data:`RETRY_SECONDS` instead of waiting for it to expire.

Jobs and state live in the cluster, so a new leader adopts the runs in flight (their Jobs are
found by name) and records each once. :func:`decide` is the pure rule, tested alone.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from safehold.controller.kube import TimedApi

__all__ = [
    "LEASE_SECONDS",
    "RENEW_SECONDS",
    "RETRY_SECONDS",
    "Elector",
    "decide",
    "elector_from_env",
]

log = logging.getLogger(__name__)

#: How long a Lease holds without renewal (client-go's default is 15 s too).
LEASE_SECONDS = 15
#: How long the leader tries to renew before it gives up leading.
RENEW_SECONDS = 10.0
#: How often the leader renews and a standby looks; also each Lease call's timeout.
RETRY_SECONDS = 2.0
#: How often the leader checks that its last renewal is recent enough.
_WATCH_SECONDS = 0.5

Action = Literal["take", "renew", "wait"]


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None


def decide(spec: Mapping[str, Any], me: str, now: datetime) -> Action:
    """What ``me`` does with a Lease whose spec (camelCase keys) is ``spec``: ``renew`` it
    (mine), ``take`` it (free: no holder, or not renewed within its duration), or ``wait``."""
    holder = spec.get("holderIdentity") or ""
    if holder == me:
        return "renew"
    if not holder:
        return "take"
    renewed = _time(spec.get("renewTime")) or _time(spec.get("acquireTime"))
    duration = int(spec.get("leaseDurationSeconds") or LEASE_SECONDS)
    if renewed is None or now - renewed > timedelta(seconds=duration):
        return "take"
    return "wait"


@dataclass
class Elector:
    """Holds the Lease ``name`` in ``namespace`` as ``identity``."""

    name: str
    namespace: str
    identity: str
    api: Any = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    on_lost: Callable[[], None] = lambda: os._exit(1)

    def __post_init__(self) -> None:
        self.api = self.api or TimedApi(client.CoordinationV1Api(), RETRY_SECONDS)
        self._stop = threading.Event()
        self._renewed = 0.0  # monotonic time of the last renewal
        self._leading = threading.Event()
        self._mine: dict[str, Any] | None = None  # the Lease as this replica last wrote it

    @property
    def leading(self) -> bool:
        return self._leading.is_set()

    def _read(self) -> dict[str, Any] | None:
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        out: dict[str, Any] = self.api.api_client.sanitize_for_serialization(lease)
        return out

    def _spec(self, old: Mapping[str, Any] | None, now: datetime) -> dict[str, Any]:
        spec = dict((old or {}).get("spec") or {})
        mine = spec.get("holderIdentity") == self.identity
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=LEASE_SECONDS,
            renewTime=now.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        )
        if not mine:
            spec["acquireTime"] = spec["renewTime"]
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (
                1 if old is not None else 0
            )
        return spec

    def try_once(self) -> bool:
        """One look: take or renew the Lease if this replica may; whether it leads now.
        A write that lost a race (409), any API error and no answer count as not leading."""
        now = self.clock()
        try:
            # renewing, the Lease as last written will do: if anyone changed it since, its
            # resourceVersion no longer matches and the write fails (409), then it is read
            lease, self._mine = self._mine or self._read(), None
            if lease is None:
                body = {"metadata": {"name": self.name}, "spec": self._spec(None, now)}
                self._keep(self.api.create_namespaced_lease(self.namespace, body))
                return True
            if decide(lease.get("spec") or {}, self.identity, now) == "wait":
                return False
            lease["spec"] = self._spec(lease, now)  # resourceVersion kept: a race is a 409
            self._keep(self.api.replace_namespaced_lease(self.name, self.namespace, lease))
            return True
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning("leader election: Lease %s: %s", self.name, exc.reason)
            return False
        except (HTTPError, OSError) as exc:  # no answer: refused, timed out, reset
            log.warning("leader election: Lease %s: %s", self.name, type(exc).__name__)
            return False

    def _keep(self, written: Any) -> None:
        self._mine = self.api.api_client.sanitize_for_serialization(written)

    def acquire(self) -> None:
        """Block until this replica leads, then renew in the background."""
        log.info("waiting to lead (Lease %s/%s, as %s)", self.namespace, self.name, self.identity)
        while not self.try_once():
            if self._stop.wait(RETRY_SECONDS):
                raise SystemExit(0)
        self._renewed = time.monotonic()
        self._leading.set()
        log.info("leading (Lease %s/%s, as %s)", self.namespace, self.name, self.identity)
        threading.Thread(target=self._renew, name="lease-renewal", daemon=True).start()
        threading.Thread(target=self._watch, name="lease-watch", daemon=True).start()

    def _renew(self) -> None:
        while not self._stop.wait(RETRY_SECONDS):
            if self.try_once():
                self._renewed = time.monotonic()

    def _watch(self) -> None:
        """Stop leading once no renewal succeeded for :data:`RENEW_SECONDS`, whether the
        renewals fail or one hangs."""
        while not self._stop.wait(_WATCH_SECONDS):
            if time.monotonic() - self._renewed > RENEW_SECONDS:
                log.critical(
                    "lost the Lease %s/%s (not renewed for %.0f s): stopping so that only "
                    "one replica acts",
                    self.namespace,
                    self.name,
                    RENEW_SECONDS,
                )
                self._leading.clear()
                self._stop.set()
                self.on_lost()
                return

    def release(self) -> None:
        """Stop renewing and hand the Lease over at once (a clean stop)."""
        self._stop.set()
        if not self._leading.is_set():
            return
        self._leading.clear()
        try:
            lease = self._read()
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = ""
                self.api.replace_namespaced_lease(self.name, self.namespace, lease)
                log.info("released the Lease %s/%s", self.namespace, self.name)
        except ApiException as exc:
            log.warning("could not release the Lease %s: %s", self.name, exc.reason)
        except (HTTPError, OSError) as exc:  # it expires instead
            log.warning("could not release the Lease %s: %s", self.name, type(exc).__name__)


def elector_from_env() -> Elector | None:
    """The elector the chart configures (``$SAFEHOLD_LEADER_LEASE``: the Lease's name, in
    ``$SAFEHOLD_POD_NAMESPACE``, held as ``$SAFEHOLD_POD_NAME``); None when unset."""
    name = os.environ.get("SAFEHOLD_LEADER_LEASE", "").strip()
    if not name:
        return None
    namespace = os.environ.get("SAFEHOLD_POD_NAMESPACE", "").strip() or "default"
    identity = os.environ.get("SAFEHOLD_POD_NAME", "").strip() or socket.gethostname()
    return Elector(name, namespace, identity)
