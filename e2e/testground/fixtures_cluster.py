"""pytest fixtures for the Kubernetes test ground (registered by the repository's conftest.py).

- ``cluster`` (session): a fresh test-ground cluster in a temporary directory, with the CRDs of
  ``crds/`` installed before the controller-manager starts, and the pod runner; or, when
  ``$KUBECONFIG`` is set, that cluster as it is (no pod runner: its kubelets run the pods).
- ``namespace``: a fresh namespace per test, deleted afterwards. When the test fails, its pods'
  logs and events are attached to the report.

The control-plane build (minutes, once per machine) happens after collection and before any
test, so it never counts against a test's timeout; ``make cluster`` does it up front.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from testground import build, controlplane
from testground.kube import Cluster, Namespace

__all__ = ["cluster", "namespace", "testground_factory"]

REPO = Path(__file__).resolve().parent.parent.parent
# $SAFEHOLD_TEST_CRDS points the session at another CRD directory (an empty one: none).
CRDS = Path(os.environ.get("SAFEHOLD_TEST_CRDS") or REPO / "crds")
_REPORT = pytest.StashKey[Namespace]()


def _needs_local_cluster(session: pytest.Session) -> bool:
    if session.config.option.collectonly:
        return False
    given = bool(os.environ.get("KUBECONFIG"))
    for item in session.items:
        names = getattr(item, "fixturenames", ())
        if "testground_factory" in names or ("cluster" in names and not given):
            return True
    return False


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build the control plane now, outside every test's timeout, if a test needs it."""
    if not _needs_local_cluster(session):
        return
    if build.cached_binaries() is None:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("testground: building kube-apiserver (once; several minutes)")
        build.build(echo=False)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The session's Kubernetes cluster: the local test ground, or ``$KUBECONFIG``'s."""
    given = os.environ.get("KUBECONFIG")
    if given:
        remote = Cluster(Path(given))
        if any(CRDS.glob("*.y*ml")):
            remote.install_crds(CRDS)
        yield remote
        return
    directory = tmp_path_factory.mktemp("testground")
    state = controlplane.up(directory, crds=CRDS)
    try:
        yield Cluster(state.kubeconfig, state)
    finally:
        controlplane.down(directory)


@pytest.fixture(scope="session")
def testground_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Cluster]]:
    """Start more local test-ground clusters, whatever ``$KUBECONFIG`` says; all stopped at the end.

    ``start(name="extra", *, pod_runner=True, crds=None) -> Cluster``: for tests of the test
    ground itself, or that need a cluster of their own (a fresh etcd, another set of CRDs).
    """
    directories: list[Path] = []

    def start(name: str = "extra", *, pod_runner: bool = True, crds: Path | None = None) -> Cluster:
        directory = tmp_path_factory.mktemp(name)
        directories.append(directory)
        state = controlplane.up(directory, crds=crds, pod_runner=pod_runner)
        return Cluster(state.kubeconfig, state)

    yield start
    for directory in directories:
        controlplane.down(directory)


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Namespace]:
    """A fresh namespace for one test; its pods' logs are reported if the test fails."""
    ns = cluster.create_namespace(request.node.name)
    request.node.stash[_REPORT] = ns
    try:
        yield ns
    finally:
        cluster.delete_namespace(ns)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    ns = item.stash.get(_REPORT, None)
    if ns is not None and report.when == "call" and report.failed:
        try:
            report.sections.append((f"namespace {ns}", ns.cluster.namespace_report(ns)))
        except Exception as exc:  # noqa: BLE001 - a report must never hide the failure
            report.sections.append((f"namespace {ns}", f"could not collect: {exc}"))
    return report
