"""``safehold operator``: serve metrics, then run kopf with a liveness endpoint until stopped."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

__all__ = ["run"]


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
    kopf.run(
        standalone=True,
        clusterwide=all_namespaces,
        namespaces=list(namespaces),
        liveness_endpoint=f"http://{bind}:{health_port}/healthz" if health_port >= 0 else None,
    )
