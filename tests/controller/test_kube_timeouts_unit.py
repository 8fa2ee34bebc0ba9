"""The operator's calls to the apiserver end: one sent to an apiserver that accepts the
connection and never answers (it went away without closing it: a failed-over control plane, a
dropped route) used to wait forever, holding a reconcile worker and its object's place in the
work queue, or keeping a leader that could no longer renew its Lease leading. Proved against
a real socket and the real kubernetes client, with the timeouts shortened."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import urllib3
from kubernetes import client

import safehold.controller.kube as kube_module
from safehold.controller import leader
from safehold.controller.kube import Kube, TimedApi


def _kube(host: str) -> Kube:
    conf = client.Configuration()
    conf.host = host
    return Kube(client.ApiClient(conf))


def _outcome(call: Callable[[], object], *, within: float = 30.0) -> BaseException | None:
    """What ``call`` raised; fails the test if it has not ended ``within`` seconds (a hang
    would otherwise stop the test run, not fail it)."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(within)
    assert not thread.is_alive(), f"the call did not end within {within:.0f} s"
    return raised[0] if raised else None


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda kube: kube.get_cr("backupruns", "ns", "run"), id="read"),
        pytest.param(
            lambda kube: kube.patch_status("backupruns", "ns", "run", {"phase": "Running"}),
            id="status-write",
        ),
    ],
)
def test_a_call_to_an_apiserver_that_never_answers_fails(
    silent_apiserver: str, monkeypatch: pytest.MonkeyPatch, call: Callable[[Kube], object]
) -> None:
    monkeypatch.setattr(kube_module, "REQUEST_TIMEOUT", (1.0, 0.5))
    kube = _kube(silent_apiserver)  # no cache: every call asks the apiserver
    exc = _outcome(lambda: call(kube))
    assert isinstance(exc, urllib3.exceptions.HTTPError), exc
    assert "timed out" in str(exc)


def test_exec_streams_keep_the_clients_bound_method() -> None:
    """kubernetes.stream reaches the client through the method it is given."""
    kube = _kube("http://127.0.0.1:9")
    method = kube.core.connect_get_namespaced_pod_exec
    assert method.__self__.api_client is kube.api


class _Leases:
    """A Lease API that grants the Lease (the election's rule is tested alone)."""

    api_client = client.ApiClient()

    def read_namespaced_lease(self, name: str, namespace: str) -> object:
        raise client.exceptions.ApiException(status=404)

    def create_namespaced_lease(self, namespace: str, body: object) -> object:
        return body


def test_a_leader_whose_renewal_hangs_stops_leading_in_time(
    silent_apiserver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A standby takes the Lease LEASE_SECONDS after its last renewal; the leader must have
    stopped by then even when its renewal never returns (here: a client without a timeout,
    the worst case), or two replicas act at once."""
    monkeypatch.setattr(leader, "RETRY_SECONDS", 0.2)
    monkeypatch.setattr(leader, "RENEW_SECONDS", 1.0)
    lost = threading.Event()
    elector = leader.Elector("lease", "ns", "me", api=_Leases(), on_lost=lost.set)
    elector.acquire()
    assert elector.leading
    conf = client.Configuration()
    conf.host = silent_apiserver
    elector.api = client.CoordinationV1Api(client.ApiClient(conf))  # every renewal hangs
    assert lost.wait(30), "the leader went on leading while its renewal hung"
    assert not elector.leading


def test_the_lease_calls_time_out_before_the_lease_could_pass_to_another() -> None:
    elector = leader.Elector("lease", "ns", "me")
    assert isinstance(elector.api, TimedApi)
    assert elector.api._timeout == leader.RETRY_SECONDS < leader.RENEW_SECONDS


def test_an_apiserver_that_refuses_connections_is_no_lease() -> None:
    """A standby (or a leader renewing) asks an apiserver that is down: not leading, and
    the election goes on (it used to raise out of the renewal thread, which then stopped
    renewing and checking)."""
    conf = client.Configuration()
    conf.host = "http://127.0.0.1:9"  # discard: nothing listens
    conf.retries = 0
    api = TimedApi(client.CoordinationV1Api(client.ApiClient(conf)), 1.0)
    elector = leader.Elector("lease", "ns", "me", api=api)
    assert elector.try_once() is False


def test_a_leader_that_cannot_reach_the_apiserver_at_its_stop_lets_the_lease_expire() -> None:
    lost = threading.Event()
    elector = leader.Elector("lease", "ns", "me", api=_Leases(), on_lost=lost.set)
    elector.acquire()
    conf = client.Configuration()
    conf.host = "http://127.0.0.1:9"
    conf.retries = 0
    elector.api = TimedApi(client.CoordinationV1Api(client.ApiClient(conf)), 1.0)
    elector.release()  # no exception out of a clean stop
    assert not elector.leading
