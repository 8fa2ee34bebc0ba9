"""Fixtures of the hook tests: the operator in-process (kopf's KopfRunner) against the test
ground, a stand-in application the Job-side hooks call over HTTP, and the YAML of
docs/hooks.md."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "hooks.md"


def guide_blocks() -> list[dict[str, Any]]:
    """The guide's YAML blocks of Safehold resources, in order (not the pod examples)."""
    text = GUIDE.read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    return [b for b in blocks if str(b.get("apiVersion", "")).startswith("safehold.io/")]


@pytest.fixture
def guide() -> Callable[[], list[dict[str, Any]]]:
    """A fresh copy of the guide's objects for each call."""
    return guide_blocks


@pytest.fixture
def operator(
    cluster: Cluster, namespace: Namespace, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[], KopfRunner]]:
    """Start the operator for the test's namespace; stopped at the end."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("SAFEHOLD_IMAGE", os.environ.get("SAFEHOLD_TEST_IMAGE", "safehold:0.1.0"))
    runners: list[KopfRunner] = []
    pods = cluster.local.path / "pods" if cluster.local is not None else None

    def read(namespace: str, pod: str, tail: int) -> str:
        assert pods is not None
        text = podlogs.container_log(pods, namespace, pod, "safehold")  # not the hooks container
        return "\n".join(text.splitlines()[-tail:])

    def start() -> KopfRunner:
        kube = Kube(cluster.api_client(), log_reader=read if pods is not None else None)
        set_runtime(Runtime(kube))
        runner = KopfRunner(
            ["run", "--standalone", "--namespace", str(namespace), "-m", handlers.__name__],
            timeout=60,
        )
        runner.__enter__()
        runners.append(runner)
        return runner

    yield start
    for runner in runners:
        runner.__exit__(None, None, None)
    handlers.reset()


@dataclass
class App:
    """A stand-in application: ``POST /checkpoint`` writes ``checkpoint.txt`` into its data
    directory (as a database writes a checkpoint into its volume); every call is recorded."""

    url: str
    directory: Path | None = None
    calls: list[str] = field(default_factory=list)


@pytest.fixture
def app() -> Iterator[App]:
    state = App(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            state.calls.append(self.path)
            if self.path == "/checkpoint" and state.directory is not None:
                number = state.calls.count(self.path)  # the n-th checkpoint
                (state.directory / "checkpoint.txt").write_text(f"checkpoint {number}\n")
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
