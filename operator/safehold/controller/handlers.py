"""The kopf registration: watch the four kinds and the operator's Jobs; reconcile through
the work queue.

kopf's ``on.event`` handlers write nothing to the objects (no annotations, no
finalizers), so the operator writes only ``status``. Each watch event updates the cache
(safehold.controller.cache) and makes its object, and the objects it concerns, due in the
work queue (safehold.controller.queue); a reconcile reads the cache and, through
safehold.controller.wakeups, puts its object back for the next time that matters. There
is no pass over everything: an idle policy is looked at at its next slot, and a failed
reconcile is retried with a back-off from 1 second to 5 minutes.

``kopf run -m safehold.controller.handlers`` (and :func:`safehold.controller.run`) loads
this module.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from safehold.api import GROUP, VERSION
from safehold.controller import (
    admission,
    backuplocation,
    backuppolicy,
    backuprun,
    metrics,
    restorerequest,
)
from safehold.controller.cache import Cache
from safehold.controller.jobs import LABEL_MANAGED_BY, MANAGED_BY
from safehold.controller.kube import load_config
from safehold.controller.runtime import Key, Runtime, runtime, set_runtime
from safehold.controller.status import FINAL_PHASES
from safehold.controller.wakeups import next_look, related

__all__ = ["reconcile_key", "reset"]

log = logging.getLogger(__name__)

_RECONCILERS: dict[str, Callable[[Runtime, dict[str, Any]], None]] = {
    backuplocation.PLURAL: backuplocation.reconcile,
    backuppolicy.PLURAL: backuppolicy.reconcile,
    backuprun.PLURAL: backuprun.reconcile,
    restorerequest.PLURAL: restorerequest.reconcile,
}
_FINISHED_KINDS = (backuprun.PLURAL, restorerequest.PLURAL)
#: The label that names an object of the kind in the metrics.
_METRIC_LABEL = {backuppolicy.PLURAL: "policy", backuplocation.PLURAL: "location"}
#: How many reconciles run at once (each in a thread: the Kubernetes client blocks).
WORKERS = 8
_FIRST_RETRY, _MAX_RETRY = 1.0, 300.0


def _forget_metrics(key: Key) -> None:
    """A deleted policy's or location's series leave the metrics."""
    plural, ns, name = key
    label = _METRIC_LABEL.get(plural)
    if label is not None:
        metrics.forget(ns, **{label: name})


def reconcile_key(rt: Runtime, key: Key) -> float | None:
    """Reconcile one object by (plural, namespace, name), as the cache has it; returns
    the seconds until it needs another look (None: only on an event)."""
    plural, ns, name = key
    body = rt.kube.get_cr(plural, ns, name)
    if body is None:
        _forget_metrics(key)  # also after a reconcile that ran on while it was deleted
        return None
    if plural in _FINISHED_KINDS and (body.get("status") or {}).get("phase") in FINAL_PHASES:
        return None  # final: nothing more to do, no API call
    try:
        _RECONCILERS[plural](rt, body)
    except Exception:
        failures = rt.failures[key] = rt.failures.get(key, 0) + 1
        delay = min(_MAX_RETRY, _FIRST_RETRY * 2.0 ** min(failures - 1, 16))
        log.exception("reconciling %s %s/%s failed; retrying in %.0f s", plural, ns, name, delay)
        return delay
    rt.failures.pop(key, None)
    latest = rt.kube.get_cr(plural, ns, name) or body
    cache = rt.kube.cache
    if cache is None:
        return None
    wait: float | None = next_look(cache, plural, latest, rt.poll_interval)
    return wait


async def _work(rt: Runtime, executor: ThreadPoolExecutor, key: Key) -> None:
    loop = asyncio.get_running_loop()
    delay = await loop.run_in_executor(executor, reconcile_key, rt, key)
    if delay is not None:
        rt.queue.add(key, delay)


def _watched(plural: str, event: kopf.RawEvent) -> None:
    """A watch event: the cache updated, the object and those it concerns made due."""
    rt = runtime()
    cache = rt.kube.cache
    obj: dict[str, Any] = dict(event.get("object") or {})
    meta = obj.get("metadata") or {}
    key = (plural, str(meta.get("namespace")), str(meta.get("name")))
    if cache is None:
        return
    if event.get("type") == "DELETED":
        cache.drop(*key)
        _forget_metrics(key)
        rt.queue.forget(key)
        rt.failures.pop(key, None)
    else:
        cache.watched(plural, obj)
        if plural in _RECONCILERS:
            rt.queue.add(key)
    for other in related(cache, plural, obj):
        rt.queue.add(other)
    if plural == "backupruns" and _queue_changed(event.get("type"), obj):
        for waiting in admission.queue_keys(rt):  # their positions or the queue's length moved
            rt.queue.add(waiting)


def _queue_changed(kind: str | None, run: dict[str, Any]) -> bool:
    """Whether a run's event changes the run queue: a place came free (the run ended or
    was deleted), or a new run joined the queue, which lengthens every queued run's
    "position P of N". A startup's listing (no type) changes nothing."""
    status = run.get("status") or {}
    if kind == "DELETED" or status.get("phase") in FINAL_PHASES:
        return True
    return kind == "ADDED" and not status.get("sources")


def _on_event(plural: str) -> None:
    @kopf.on.event(GROUP, VERSION, plural)
    async def handler(event: kopf.RawEvent, **_: Any) -> None:
        _watched(plural, event)


for _plural in _RECONCILERS:
    _on_event(_plural)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: MANAGED_BY})
async def _job_event(event: kopf.RawEvent, **_: Any) -> None:
    _watched("jobs", event)


@kopf.on.login()
def _login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    """Log kopf in with the same credentials as the client the handlers use: in-cluster,
    else the kubeconfig that $KUBECONFIG names *now* (kopf's own login reads it at import)."""
    from kubernetes import client

    load_config()
    conf = client.Configuration.get_default_copy()
    header = conf.get_api_key_with_prefix("BearerToken") or conf.get_api_key_with_prefix(
        "authorization"
    )
    scheme, _sep, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=conf.host,
        ca_path=conf.ssl_ca_cert,
        insecure=not conf.verify_ssl,
        username=conf.username or None,
        password=conf.password or None,
        scheme=scheme or ("Bearer" if token else None),
        token=token or None,
        certificate_path=conf.cert_file,
        private_key_path=conf.key_file,
        trust_env=settings.networking.trust_env,
    )


@kopf.on.startup()
async def _startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.peering.standalone = True
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.execution.max_workers = 8
    load_config()
    rt = runtime()  # a runtime set before start (tests: another log reader) is kept
    rt.kube.cache = Cache([*_RECONCILERS, "jobs"])
    executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="reconcile")

    async def work(key: Key) -> None:
        await _work(rt, executor, key)

    memo["safehold_queue"] = asyncio.create_task(
        rt.queue.run(work, workers=WORKERS), name="safehold work queue"
    )
    memo["safehold_executor"] = executor


@kopf.on.cleanup()
async def _cleanup(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("safehold_queue")
    if task is not None:
        task.cancel()
    executor = memo.get("safehold_executor")
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)


def reset() -> None:
    """Forget the process's runtime (tests start operators one after another)."""
    set_runtime(None)
