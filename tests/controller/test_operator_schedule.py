"""A policy's schedule starts runs on its own, records its slots, and prunes the history of
the runs it made, never the runs made by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from safehold.controller import metrics
from testground.kube import Namespace
from testground.objectstores import RunningStore

MANAGED = {"app.kubernetes.io/managed-by": "safehold-operator", "safehold.io/policy": "pol"}


def _run(namespace: Namespace, name: str, labels: dict[str, str] | None = None) -> None:
    namespace.apply(
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "BackupRun",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"policyRef": {"name": "pol"}},
        }
    )


def _names(namespace: Namespace) -> set[str]:
    out = namespace.kubectl("get", "backupruns", "-o", "json").stdout
    return {r["metadata"]["name"] for r in json.loads(out)["items"]}


def test_schedule_starts_runs_and_prunes_its_history(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    operator()
    kit.write_data(kit.make_claim(namespace, "data"), seed=4, files=4)
    kit.store_location(namespace, s3_store)
    kit.policy(
        namespace, "pol", "loc", ["data"],
        schedule={"timeZone": "Asia/Kolkata", "slots": [{"cron": "* * * * *"}]},
        successfulRunsHistoryLimit=1,
    )  # fmt: skip
    # two runs as an earlier schedule would have made them, and one made by hand
    _run(namespace, "old-1", MANAGED)
    _run(namespace, "old-2", MANAGED)
    _run(namespace, "by-hand")
    # The old runs are not waited for by name: with a history limit of 1, a run that
    # succeeds may prune the one before it (or a scheduled run both) before the wait starts.
    # That they succeeded is proven below: only succeeded runs are pruned by that limit.
    kit.kubectl_wait(namespace, "backuprun/by-hand", "Complete")

    def scheduled() -> str | None:
        pol = kit.get(namespace, "backuppolicy", "pol")
        last = (pol.get("status") or {}).get("lastSuccessfulRun")
        return last if last and last not in ("old-1", "old-2", "by-hand") else None

    name = namespace.cluster.wait_for(scheduled, timeout=150, what="a scheduled run to succeed")
    run = kit.get(namespace, "backuprun", name)
    assert run["spec"]["policyRef"]["name"] == "pol"
    slot = datetime.fromisoformat(run["status"]["scheduleTime"].replace("Z", "+00:00"))
    assert slot.second == 0
    assert name == f"pol-{int(slot.timestamp() // 60)}"
    pol = namespace.wait_condition("backuppolicy", "pol", "Ready")
    status = pol["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "Scheduled"
    nxt = datetime.fromisoformat(status["nextScheduleTime"].replace("Z", "+00:00"))
    assert nxt > slot
    assert nxt - datetime.now(UTC) <= timedelta(minutes=1)  # every minute
    assert nxt.second == 0

    # history: one succeeded scheduled run is kept; the run made by hand always stays
    def pruned() -> set[str] | None:
        names = _names(namespace)
        return names if "old-1" not in names and "old-2" not in names else None

    names = namespace.cluster.wait_for(pruned, timeout=60, what="old runs to be pruned")
    assert "by-hand" in names
    assert name in names or any(n.startswith("pol-") for n in names)


def _series(namespace: str, **labels: str) -> list[str]:
    """The operator's exported series of ``namespace`` with ``labels``."""
    wanted = {"namespace": namespace, **labels}
    return [
        sample.name
        for family in metrics.REGISTRY.collect()
        for sample in family.samples
        if all(sample.labels.get(k) == v for k, v in wanted.items())
    ]


def test_a_deleted_policy_and_location_leave_no_series_to_alert_on(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    """SafeholdBackupMissing compares a policy's last success with its expected interval,
    and SafeholdLocationUnavailable a location's check: series left behind by a deleted
    policy or location would fire them for objects that no longer exist."""
    operator()
    kit.make_claim(namespace, "data")
    kit.store_location(namespace, s3_store)
    kit.policy(namespace, "pol", "loc", ["data"], schedule={"slots": [{"cron": "0 3 * * *"}]})
    namespace.wait_condition("backuppolicy", "pol", "Ready")
    kit.kubectl_wait(namespace, "backuplocation/loc", "Available", timeout=180)
    ns = str(namespace)
    assert "safehold_backup_policy_expected_interval_seconds" in _series(ns, policy="pol")
    assert "safehold_location_available" in _series(ns, location="loc")

    namespace.kubectl("delete", "backuppolicy", "pol", "--wait=true")
    namespace.cluster.wait_for(
        lambda: not _series(ns, policy="pol") or None,
        timeout=30, what="the deleted policy's series to go",
    )  # fmt: skip
    assert _series(ns, location="loc")  # the location is still there
    namespace.kubectl("delete", "backuplocation", "loc", "--wait=true")
    namespace.cluster.wait_for(
        lambda: not _series(ns, location="loc") or None,
        timeout=30, what="the deleted location's series to go",
    )  # fmt: skip
