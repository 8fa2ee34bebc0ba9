"""Helpers of the cluster-resource tests: the YAML of docs/cluster-resources.md, the
``safehold`` command run in-process with its JSON summary, and trees of clean manifests
read straight from the test ground for comparisons."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from safehold.cli.main import main
from safehold.engine.cluster.export import ExportOptions, export_tree
from safehold.engine.cluster.kube import connect
from testground.kube import Cluster

DOC = Path(__file__).resolve().parents[2] / "docs" / "cluster-resources.md"
_BLOCK = re.compile(r"^```yaml cluster-resources-example:(\S+)\n(.*?)^```", re.DOTALL | re.M)
PASSWORD = "resources test password"
CRD_NAME = "widgets.example.com"

Cli = Callable[..., dict[str, Any]]


def doc_block(name: str) -> str:
    """The YAML block ``name`` of docs/cluster-resources.md."""
    for m in _BLOCK.finditer(DOC.read_text(encoding="utf-8")):
        if m.group(1) == name:
            return m.group(2)
    raise AssertionError(f"docs/cluster-resources.md has no block cluster-resources-example:{name}")


def doc_objects(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(doc_block(name)) if d]


@pytest.fixture
def cli(
    cluster: Cluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Cli:
    """``cli(*args, code=0)``: run ``safehold ARGS --json`` against a fresh repository and the
    test ground; returns the JSON summary (and checks the exit code)."""
    monkeypatch.setenv("SAFEHOLD_PASSWORD", PASSWORD)
    monkeypatch.setenv("SAFEHOLD_REPOSITORY", (tmp_path / "repo").as_uri())
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    def run(*args: str, code: int = 0) -> dict[str, Any]:
        capsys.readouterr()
        rc = main([*args, "--json"])
        out = capsys.readouterr()
        lines = [line for line in out.out.splitlines() if line.startswith("{")]
        assert rc == code, f"safehold {' '.join(args)} exited {rc}: {out.err}{out.out[-2000:]}"
        assert lines, f"no JSON summary from safehold {' '.join(args)}: {out.err}"
        doc: dict[str, Any] = json.loads(lines[-1])
        return doc

    run("repo", "init")
    return run


class Kit:
    """The example application and comparisons, bound to the test ground (``kit`` fixture)."""

    crd_name = CRD_NAME

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def live_tree(self, root: Path, namespace: str, **options: Any) -> dict[str, str]:
        return live_tree(self.cluster, root, namespace, **options)

    def install_crd(self) -> None:
        install_crd(self.cluster)

    def apply_app(self, namespace: str) -> None:
        apply_app(self.cluster, namespace)

    @staticmethod
    def doc_objects(name: str) -> list[dict[str, Any]]:
        return doc_objects(name)

    @staticmethod
    def doc_block(name: str) -> str:
        return doc_block(name)


@pytest.fixture
def kit(cluster: Cluster) -> Kit:
    return Kit(cluster)


def live_tree(cluster: Cluster, root: Path, namespace: str, **options: Any) -> dict[str, str]:
    """The clean manifests of ``namespace`` as they are now: path -> YAML text."""
    api = connect(str(cluster.kubeconfig))
    root.mkdir(parents=True, exist_ok=True)
    opts = ExportOptions(include_namespaces=[namespace], include_secrets=True, **options)
    export_tree(api, str(root), opts)
    return {
        str(p.relative_to(root)): p.read_text(encoding="utf-8")
        for p in sorted(root.rglob("*.yaml"))
    }


def install_crd(cluster: Cluster) -> None:
    cluster.apply(doc_block("crd"))
    cluster.wait_condition("crd", CRD_NAME, "Established", timeout=60)


def apply_app(cluster: Cluster, namespace: str) -> None:
    """The example application, with its claim bound."""
    cluster.apply(doc_block("app"), namespace=namespace)

    def bound() -> bool:
        pvc = cluster.get("pvc", "web-data", namespace) or {}
        return (pvc.get("status") or {}).get("phase") == "Bound"

    cluster.wait_for(bound, timeout=60, what="claim web-data to be bound")


@pytest.fixture
def operator(
    cluster: Cluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Any]]:
    """Start the operator (kopf in-process) for the test's namespace; stopped at the end."""
    from kopf.testing import KopfRunner

    from safehold.controller import handlers
    from safehold.controller.kube import Kube
    from safehold.controller.runtime import Runtime, set_runtime
    from testground import podlogs

    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("SAFEHOLD_IMAGE", os.environ.get("SAFEHOLD_TEST_IMAGE", "safehold:0.1.0"))
    runners: list[Any] = []

    def read_log(ns: str, pod: str, tail: int) -> str:
        assert cluster.local is not None
        text = podlogs.container_log(cluster.local.path / "pods", ns, pod, None)
        return "\n".join(text.splitlines()[-tail:])

    def start(**settings: Any) -> Any:
        kube = Kube(cluster.api_client(), log_reader=read_log if cluster.local else None)
        set_runtime(Runtime(kube, **settings))
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
