"""An idle operator makes no API call (issue 17): once its policies are Ready and their
location validated, nothing is due before the next slot, so nothing is read or written.

Counted are the calls the reconciles make through the Kubernetes client (every call the
operator makes besides kopf's long-lived watch streams). The fleet-wide figure, the
apiserver's own request count with 1,000 policies, is `make bench ARGS=operator`'s.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from safehold.controller.runtime import runtime
from testground.kube import Namespace
from testground.objectstores import RunningStore

POLICIES = 12
QUIET_SECONDS = 20


def test_idle_policies_cost_no_api_call(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    operator()
    kit.make_claim(namespace, "data")
    kit.store_location(namespace, s3_store)
    namespace.wait_condition("backuplocation", "loc", "Available", timeout=120)
    for i in range(POLICIES):
        kit.policy(
            namespace,
            f"pol-{i}",
            "loc",
            ["data"],
            schedule={"slots": [{"cron": "0 3 * * *", "type": "incremental"}]},
        )
    for i in range(POLICIES):
        namespace.wait_condition("backuppolicy", f"pol-{i}", "Ready", timeout=60)
    time.sleep(5)  # the answers to the last status writes come back as events

    api = runtime().kube.api
    calls: list[str] = []
    lock = threading.Lock()
    real = api.call_api

    def counted(resource_path: str, method: str, *args: Any, **kwargs: Any) -> Any:
        with lock:
            calls.append(f"{method} {resource_path}")
        return real(resource_path, method, *args, **kwargs)

    api.call_api = counted
    try:
        time.sleep(QUIET_SECONDS)
    finally:
        api.call_api = real
    assert calls == [], f"{len(calls)} API call(s) while idle, e.g. {calls[:5]}"

    # and it is still listening: a change is acted on at once
    kit.policy(namespace, "pol-0", "loc", ["missing"])
    namespace.wait_condition("backuppolicy", "pol-0", "Ready", status="False", timeout=30)
