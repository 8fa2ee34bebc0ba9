"""Fixtures of the snapshot tests: the operator in-process (kopf's KopfRunner) against the
test ground with its CSI snapshot driver, and the YAML of docs/volume-snapshots.md."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kopf.testing import KopfRunner

from safehold.controller import handlers
from safehold.controller.kube import Kube
from safehold.controller.runtime import Runtime, set_runtime
from testground import podlogs
from testground.kube import Cluster, Namespace

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "volume-snapshots.md"


def guide_objects() -> dict[str, dict[str, Any]]:
    """The guide's YAML blocks, by kind."""
    blocks = re.findall(r"```yaml\n(.*?)```", GUIDE.read_text(), re.S)
    out: dict[str, dict[str, Any]] = {}
    for block in blocks:
        obj = yaml.safe_load(block)
        out[obj["kind"]] = obj
    return out


@pytest.fixture
def guide() -> dict[str, dict[str, Any]]:
    return guide_objects()


@pytest.fixture
def operator(
    cluster: Cluster, namespace: Namespace, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., KopfRunner]]:
    """Start the operator for the test's namespace (``operator()``); stopped at the end."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("SAFEHOLD_IMAGE", os.environ.get("SAFEHOLD_TEST_IMAGE", "safehold:0.1.0"))
    runners: list[KopfRunner] = []
    assert cluster.local is not None
    pods = cluster.local.path / "pods"

    def read(namespace: str, pod: str, tail: int) -> str:
        text = podlogs.container_log(pods, namespace, pod, None)
        return "\n".join(text.splitlines()[-tail:])

    def start(**settings: Any) -> KopfRunner:
        set_runtime(Runtime(Kube(cluster.api_client(), log_reader=read), **settings))
        runner = KopfRunner(
            ["run", "--standalone", "--namespace", str(namespace), "-m", handlers.__name__],
            timeout=60,
        )
        runner.__enter__()
        runners.append(runner)
        return runner

    yield start
    for runner in runners:
        if runner._thread.is_alive():
            runner.__exit__(None, None, None)
    handlers.reset()
