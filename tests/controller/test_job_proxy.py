"""The chart's ``jobProxy``: every Job reaches the object store through the installation's
egress proxy, a real one (tinyproxy) on the test ground."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from testground.httpproxy import start_proxy
from testground.kube import Namespace
from testground.objectstores import RunningStore


def test_jobs_reach_the_object_store_through_the_installation_s_proxy(
    namespace: Namespace,
    operator: Any,
    kit: Any,
    s3_store: RunningStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = start_proxy(tmp_path / "proxy")
    try:
        # what the chart sets from jobProxy; the Runtime reads it at the operator's start
        monkeypatch.setenv("SAFEHOLD_JOB_HTTP_PROXY", proxy.url)
        monkeypatch.setenv("SAFEHOLD_JOB_NO_PROXY", "kubernetes.default.svc")
        operator(poll_interval=1.0)
        kit.store_location(namespace, s3_store, "primary")
        kit.round_trip(namespace, "primary", seed=9)

        # the check, the backup and the restore all went through the proxy: reads, the
        # packs' uploads, the lock's create and delete
        seen = proxy.requests()
        store = s3_store.endpoint
        methods = {line.split()[0] for line in seen if line.split()[1].startswith(store)}
        assert {"GET", "PUT", "DELETE"} <= methods, seen[:20]

        # and nothing goes around it: with the proxy gone, a new location cannot be reached
        proxy.stop()
        kit.store_location(namespace, s3_store, "after")
        kit.kubectl_wait(namespace, "backuplocation/after", "Available=False", timeout=120)
        conditions = kit.get(namespace, "backuplocation", "after")["status"]["conditions"]
        available = next(c for c in conditions if c["type"] == "Available")
        assert "ProxyConnectionError" in available["message"], available
    finally:
        proxy.stop()
