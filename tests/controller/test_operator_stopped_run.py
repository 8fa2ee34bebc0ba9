"""A run stopped part way (its location turned into a recovery site while its Job runs)
still runs its policy's postBackup exec hooks: what the pre hooks did (a freeze, a lock)
is undone, not left for ever. The test ground's pod runner has no exec, so the hooks run
with exec disabled, as the chart installs the operator by default: each is recorded with
the reason it could not reach a pod, which shows it ran."""

from __future__ import annotations

import json
from typing import Any

from testground.kube import Namespace
from testground.objectstores import RunningStore


def _hook(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "podSelector": {"matchLabels": {"app": "db"}},
        "command": ["true"],
        "onError": "Continue",
    }


def _policy(namespace: Namespace, busy_seconds: int, **spec: Any) -> None:
    """Policy ``pol``: claim ``data``, whose Job-side pre hook keeps its Job running for
    ``busy_seconds``, and the exec hooks freeze and thaw."""
    hooks = {"preBackup": [f"sleep {busy_seconds}"], "timeoutSeconds": 2 * busy_seconds}
    namespace.apply(
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "BackupPolicy",
            "metadata": {"name": "pol"},
            "spec": {
                **spec,
                "location": {"name": "loc"},
                "sources": {"volumes": [{"claimName": "data", "hooks": hooks}]},
                "hooks": {"preBackup": [_hook("freeze")], "postBackup": [_hook("thaw")]},
            },
        }
    )


def test_a_stopped_run_runs_its_post_hooks(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    operator()
    kit.write_data(kit.make_claim(namespace, "data"), seed=4, files=4)
    kit.store_location(namespace, s3_store)
    _policy(namespace, busy_seconds=30)
    namespace.wait_condition("backuplocation", "loc", "Available", timeout=120)
    kit.backup_run(namespace, "run", "pol")

    def running() -> bool:
        status = (namespace.get("backuprun", "run") or {}).get("status") or {}
        sources = status.get("sources") or []
        return status.get("phase") == "Running" and bool(sources and sources[0].get("job"))

    namespace.cluster.wait_for(running, timeout=60, what="the run's Job")
    pre = kit.get(namespace, "backuprun", "run")["status"]["hooks"]
    assert [(h["name"], h["phase"]) for h in pre] == [("freeze", "pre")]

    namespace.kubectl(
        "patch", "backuplocation", "loc", "--type=merge", "-p", '{"spec":{"role":"recovery-site"}}'
    )
    kit.kubectl_wait(namespace, "backuprun/run", "Failed", timeout=60)
    status = kit.get(namespace, "backuprun", "run")["status"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "LocationNotPrimary", failed
    assert [(h["name"], h["phase"]) for h in status["hooks"]] == [
        ("freeze", "pre"),
        ("thaw", "post"),
    ]
    assert "exec hooks are disabled" in status["hooks"][1]["error"]


def test_a_replaced_run_runs_its_post_hooks_before_it_goes(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    """concurrencyPolicy Replace: the next slot deletes the run still running (with its
    Jobs) and starts a new one; the deleted run's post hooks run first, and an Event on
    the policy says so (the run's own status goes with it)."""
    operator()
    kit.write_data(kit.make_claim(namespace, "data"), seed=5, files=4)
    kit.store_location(namespace, s3_store)
    namespace.wait_condition("backuplocation", "loc", "Available", timeout=120)
    _policy(
        namespace,
        busy_seconds=300,
        schedule={"slots": [{"cron": "* * * * *"}]},
        concurrencyPolicy="Replace",
    )

    def running_runs() -> list[str]:
        runs = namespace.kubectl("get", "backupruns", "-o", "json").stdout
        return [
            r["metadata"]["name"]
            for r in json.loads(runs)["items"]
            if (r.get("status") or {}).get("phase") == "Running"
        ]

    first = namespace.cluster.wait_for(
        lambda: (running_runs() or [None])[0], timeout=150, what="the first scheduled run"
    )

    def replaced() -> bool:
        return namespace.get("backuprun", first) is None

    namespace.cluster.wait_for(replaced, timeout=150, what=f"{first} to be replaced")
    events = namespace.kubectl(
        "get", "events", "--field-selector", "involvedObject.name=pol", "-o", "json"
    ).stdout
    (event,) = [
        e for e in json.loads(events)["items"] if f"BackupRun {first} replaced" in e["message"]
    ]
    # exec disabled: the thaw ran and could not reach a pod, which the Event says
    assert event["reason"] == "HookFailed", event
    assert event["type"] == "Warning"
    assert (
        "its postBackup hooks ran, 0 of 1 succeeded; postBackup hook thaw failed: exec hooks"
        in event["message"]
    )
