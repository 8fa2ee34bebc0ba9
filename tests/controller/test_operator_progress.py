"""While a Job runs, the operator copies its progress lines into ``status.progress``."""

from __future__ import annotations

import os
import threading
from typing import Any

from kubernetes import client

from testground.kube import Namespace
from testground.objectstores import RunningStore

PARTS = 12


def test_progress_is_reported_while_the_backup_runs(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    operator(poll_interval=0.5, progress_interval=0.5)
    data = kit.make_claim(namespace, "big", size="1Gi")
    # 384 MiB of incompressible data: a backup of several seconds (192 MiB took only ~2 s
    # once the engine got faster, close to the controller's progress interval)
    for i in range(PARTS):
        (data / f"part{i}.bin").write_bytes(os.urandom(32 * 1024 * 1024))
    kit.store_location(namespace, s3_store)
    kit.policy(namespace, "pol", "loc", ["big"])
    namespace.wait_condition("backuplocation", "loc", "Available", timeout=120)

    api = client.CustomObjectsApi(namespace.cluster.api_client())
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                run = api.get_namespaced_custom_object(
                    "safehold.io", "v1alpha1", str(namespace), "backupruns", "run"
                )
            except client.ApiException:
                run = {}
            status = run.get("status") or {}
            if status.get("phase") == "Running" and status.get("progress"):
                seen.append(status["progress"])
            done.wait(0.3)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        kit.backup_run(namespace, "run", "pol")
        kit.kubectl_wait(namespace, "backuprun/run", "Complete", timeout=240)
    finally:
        done.set()
        watcher.join(timeout=5)
    run = kit.get(namespace, "backuprun", "run")
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert seen, "no progress was reported while the run was Running"
    total = PARTS * 32 * 1024 * 1024
    partial = [p for p in seen if p["bytesDone"] < total]
    assert partial, f"only final progress was seen: {seen[-1]}"
    p = partial[-1]
    assert p["bytesTotal"] == total
    assert 0 <= p["percent"] < 100
    assert "updateTime" in p
    final = run["status"]["progress"]
    assert final["percent"] == 100
    assert final["bytesDone"] == total
