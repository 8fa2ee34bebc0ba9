"""``kubectl get backuplocations`` shows the repository's size and snapshot count, and they
follow the backups (issue 18: they stayed 0 until the next validation interval)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from safehold.controller import backuplocation
from testground.kube import Namespace
from testground.objectstores import RunningStore


def test_size_and_snapshots_follow_the_backups(
    namespace: Namespace,
    s3_store: RunningStore,
    operator: Any,
    kit: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(backuplocation, "REFRESH_GAP", timedelta(seconds=0))
    operator()
    data = kit.make_claim(namespace, "data")
    kit.write_data(data, seed=11, files=10, size=128 * 1024)
    kit.store_location(namespace, s3_store)
    namespace.wait_condition("backuplocation", "loc", "Available", timeout=120)
    empty = kit.get(namespace, "backuplocation", "loc")["status"]
    assert empty["snapshotCount"] == 0

    kit.policy(namespace, "pol", "loc", ["data"])
    kit.backup_run(namespace, "first", "pol")
    kit.kubectl_wait(namespace, "backuprun/first", "Complete")

    def counted() -> dict[str, Any] | None:
        status = kit.get(namespace, "backuplocation", "loc")["status"]
        return status if status.get("snapshotCount") == 1 else None

    status = namespace.cluster.wait_for(counted, timeout=90, what="the location to count it")
    assert status["bytesStored"] > 10 * 128 * 1024  # random data: stored at least once
    assert status["size"].endswith(" MiB")
    table = namespace.kubectl("get", "backuplocations").stdout.splitlines()
    header, row = table[0].split(), table[1].split()
    assert header[:7] == ["NAME", "PROVIDER", "BUCKET", "ROLE", "AVAILABLE", "SIZE", "SNAPSHOTS"]
    assert row[5:8] == [*status["size"].split(), "1"]
