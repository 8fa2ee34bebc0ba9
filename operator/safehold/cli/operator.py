"""``safehold operator``: run the Kubernetes operator (kopf, :mod:`safehold.controller`)."""

from __future__ import annotations

import argparse
from argparse import Namespace

from safehold.cli import exitcodes
from safehold.cli.context import UsageError
from safehold.cli.output import Output

__all__ = ["register", "run_operator"]


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    operator = sub.add_parser("operator", help="run the Kubernetes operator (kopf)")
    operator.add_argument(
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable; glob patterns allowed)",
    )
    operator.add_argument(
        "--all-namespaces", action="store_true", help="watch every namespace (cluster-wide)"
    )
    operator.add_argument(
        "--metrics-port", type=int, default=8080, metavar="PORT", help="Prometheus /metrics"
    )
    operator.add_argument(
        "--health-port", type=int, default=8081, metavar="PORT", help="liveness /healthz"
    )
    operator.set_defaults(func=run_operator)


def run_operator(args: Namespace, out: Output) -> int:
    """Run the kopf operator until it is stopped (SIGTERM, SIGINT)."""
    try:
        from safehold.controller import run
        from safehold.controller.runtime import (
            InvalidSetting,
            job_defaults_from_env,
            job_proxy_from_env,
        )
    except ImportError as exc:  # kopf/kubernetes are the `operator` extra
        raise UsageError(
            f"the operator needs the operator extra: pip install 'safehold[operator]' ({exc})"
        ) from exc
    if args.all_namespaces and args.namespace:
        raise UsageError("give --namespace NS... or --all-namespaces, not both")
    if not args.all_namespaces and not args.namespace:
        raise UsageError("say what to watch: --namespace NS (repeatable) or --all-namespaces")
    try:
        job_defaults_from_env()  # checked before the start: never half-applied
        job_proxy_from_env()
    except InvalidSetting as exc:
        raise UsageError(str(exc)) from None
    run(
        namespaces=args.namespace,
        all_namespaces=args.all_namespaces,
        metrics_port=args.metrics_port,
        health_port=args.health_port,
    )
    return exitcodes.OK
