"""The cluster-resources engine's calls end: one sent to an apiserver that accepts the
connection and never answers used to wait until the Job's deadline (6 hours by default). It
now fails with a message that names the call. A real socket and the real kubernetes client,
with the timeout shortened."""

from __future__ import annotations

import threading

import pytest
from kubernetes import client

import safehold.engine.cluster.kube as kube_module
from safehold.engine.cluster.kube import KubeApi, KubeError


def _api(host: str) -> KubeApi:
    conf = client.Configuration()
    conf.host = host
    conf.retries = 0
    return KubeApi(client.ApiClient(conf))


def test_a_call_that_gets_no_answer_fails_and_says_which(
    silent_apiserver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kube_module, "REQUEST_TIMEOUT", (1.0, 0.5))
    raised: list[BaseException] = []

    def call() -> None:
        try:
            _api(silent_apiserver).get("/api/v1/namespaces/app/configmaps")
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            raised.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the call did not end"
    assert len(raised) == 1, raised
    assert isinstance(raised[0], KubeError), raised
    assert "no answer from the apiserver to GET /api/v1/namespaces/app/configmaps" in str(raised[0])


def test_a_refused_connection_is_a_kube_error() -> None:
    with pytest.raises(KubeError, match="no answer from the apiserver to GET /api"):
        _api("http://127.0.0.1:9").get("/api")
