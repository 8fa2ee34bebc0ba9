"""The operator loses its watch streams (the apiserver restarts) in the middle of a run:
the run still ends, once, and later events are seen again (issue 17: correctness does
not depend on the timing of events)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from testground import controlplane
from testground.kube import Namespace, WaitTimeout
from testground.objectstores import RunningStore


def _jobs_of(namespace: Namespace, run: str) -> list[str]:
    out = namespace.kubectl("get", "jobs", "-l", f"safehold.io/run={run}", "-o", "json").stdout
    return [j["metadata"]["name"] for j in json.loads(out)["items"]]


def _events(namespace: Namespace, name: str, reason: str) -> int:
    items = json.loads(namespace.kubectl("get", "events", "-o", "json").stdout)["items"]
    return sum(
        e.get("count") or 1
        for e in items
        if e["involvedObject"]["name"] == name and e["reason"] == reason
    )


def test_a_run_survives_an_apiserver_restart(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    state = namespace.cluster.local
    if state is None:
        pytest.fail("this test restarts the apiserver: it needs the test ground's cluster")
    runner = operator()
    data_dir = kit.make_claim(namespace, "data")
    kit.write_data(data_dir, seed=3, files=40)
    kit.store_location(namespace, s3_store)
    namespace.wait_condition("backuplocation", "loc", "Available", timeout=120)
    kit.policy(namespace, "pol", "loc", ["data"])
    namespace.wait_condition("backuppolicy", "pol", "Ready", timeout=60)

    kit.backup_run(namespace, "during", "pol")
    namespace.cluster.wait_for(
        lambda: _jobs_of(namespace, "during") or None, timeout=60, what="the run's Job"
    )
    controlplane.restart_apiserver(state)  # every watch breaks, events are lost meanwhile
    # While the restarted apiserver registers the CRDs, a watch of them can get a 404, which
    # kopf takes as fatal: the operator stops, and may hang on its way out (a watch that was
    # re-authenticating waits for credentials that no one will bring). In a cluster the
    # kubelet restarts a container that has exited or stops answering its liveness probe
    # (the chart's: 3 failures in a row). The test plays the kubelet's part.
    runners = [runner]
    unanswered = 0  # probes in a row

    def completed() -> bool | None:
        nonlocal unanswered
        current = runners[-1]
        if current.answers():
            unanswered = 0
        else:
            unanswered += 1
            if not current._thread.is_alive() or unanswered >= 3:
                current.kill()
                runners.append(operator())
                unanswered = -5  # the new one's endpoint takes a moment to open
        conditions = (kit.get(namespace, "backuprun", "during").get("status") or {}).get(
            "conditions"
        ) or []
        return any(c["type"] == "Complete" and c["status"] == "True" for c in conditions) or None

    try:
        namespace.cluster.wait_for(
            completed, timeout=180, interval=1.0, what="the run's Complete condition"
        )
    except WaitTimeout as exc:
        raise AssertionError(f"{exc}\n{runners[-1].stacks()}") from exc
    run = kit.get(namespace, "backuprun", "during")
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert len(_jobs_of(namespace, "during")) == 1
    assert _events(namespace, "during", "Succeeded") == 1

    # the watches came back: a run created now gets its Job and ends
    kit.backup_run(namespace, "after", "pol")
    kit.kubectl_wait(namespace, "backuprun/after", "Complete", timeout=180)
    assert kit.get(namespace, "backuprun", "after")["status"]["phase"] == "Succeeded"
    assert _events(namespace, "after", "Succeeded") == 1
