"""``safehold operator``: serve metrics, lead (when the chart runs several replicas, see
safehold.controller.leader), then run kopf with a liveness endpoint until stopped."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from safehold.controller.leader import Elector

__all__ = ["EXIT_DEADLINE", "run"]

#: Seconds from the start of a stop (SIGTERM, or kopf stopping by itself) to SIGKILL of this
#: process, if it has not exited by then. kopf's stop can hang: a watch that was logging in
#: again when the stop began waits for a login nobody will run (docs/operator.md). Shorter
#: than a pod's termination grace period (30 s), so a hung stop ends in a restart by the
#: kubelet, not after kopf's default of ten minutes.
EXIT_DEADLINE = 20.0


def run(
    *,
    namespaces: Sequence[str] = (),
    all_namespaces: bool = False,
    metrics_port: int = 8080,
    health_port: int = 8081,
    bind: str = "0.0.0.0",  # noqa: S104 - probes and scrapes come from outside the pod
) -> None:
    """Run the operator in this thread (blocking). ``namespaces`` may hold glob patterns."""
    import kopf

    from safehold.controller import handlers, metrics

    level = os.environ.get("SAFEHOLD_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handlers.reset()
    if metrics_port >= 0:
        port = metrics.serve(metrics_port, bind)
        logging.getLogger(__name__).info("metrics on http://%s:%d/metrics", bind, port)
    elector = _lead(bind, health_port)
    settings = kopf.OperatorSettings()
    settings.process.ultimate_exiting_timeout = EXIT_DEADLINE
    try:
        kopf.run(
            settings=settings,
            standalone=True,
            clusterwide=all_namespaces,
            namespaces=list(namespaces),
            liveness_endpoint=f"http://{bind}:{health_port}/healthz" if health_port >= 0 else None,
        )
    finally:
        if elector is not None:
            elector.release()
            metrics.LEADER.set(0)


def _lead(bind: str, health_port: int) -> Elector | None:
    """With leader election configured, wait to lead, answering /healthz meanwhile (kopf's
    own liveness endpoint takes the port over once this replica leads)."""
    from safehold.controller import metrics
    from safehold.controller.kube import load_config
    from safehold.controller.leader import elector_from_env

    if not os.environ.get("SAFEHOLD_LEADER_LEASE", "").strip():
        return None
    load_config()  # before the elector makes its API client
    elector = elector_from_env()
    if elector is None:
        return None
    metrics.LEADER.set(0)
    standby = _health_server(bind, health_port) if health_port >= 0 else None
    try:
        elector.acquire()
    finally:
        if standby is not None:
            standby.shutdown()
            standby.server_close()
    metrics.LEADER.set(1)
    return elector


def _health_server(bind: str, port: int) -> ThreadingHTTPServer:
    """A standby's /healthz: alive, waiting to lead."""

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path.split("?")[0] == "/healthz"
            body = b'{"standby": true}' if ok else b"not found"
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:  # probes every few seconds: quiet
            return

    server = ThreadingHTTPServer((bind, port), Health)
    threading.Thread(target=server.serve_forever, name="standby-health", daemon=True).start()
    return server
