"""The kopf registration: watch the four kinds, reconcile on every event and on a timer.

kopf's ``on.event`` handlers write nothing to the objects (no annotations, no
finalizers), so the operator writes only ``status``. Each event stores the object and
reconciles it at once; a periodic pass every ``Runtime.pass_interval`` (3 s) re-reads and
reconciles every known object, which drives what no event announces: Jobs finishing,
progress, schedule slots, validation intervals. A lock per object keeps the event and
the pass from reconciling the same object at the same time.

``kopf run -m safehold.controller.handlers`` (and :func:`safehold.controller.run`) loads
this module.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import kopf

from safehold.api import GROUP, VERSION
from safehold.controller import backuplocation, backuppolicy, backuprun, restorerequest
from safehold.controller.kube import load_config
from safehold.controller.runtime import Runtime, runtime, set_runtime
from safehold.controller.status import FINAL_PHASES

__all__ = ["reconcile_key", "reset"]

log = logging.getLogger(__name__)

_RECONCILERS: dict[str, Callable[[Runtime, dict[str, Any]], None]] = {
    backuplocation.PLURAL: backuplocation.reconcile,
    backuppolicy.PLURAL: backuppolicy.reconcile,
    backuprun.PLURAL: backuprun.reconcile,
    restorerequest.PLURAL: restorerequest.reconcile,
}
_FINISHED_KINDS = (backuprun.PLURAL, restorerequest.PLURAL)


def reconcile_key(rt: Runtime, key: tuple[str, str, str]) -> None:
    """Reconcile one object by (plural, namespace, name), reading it fresh first."""
    plural, ns, name = key
    cached = rt.objects.get(key)
    if cached is None:
        return
    if plural in _FINISHED_KINDS and (cached.get("status") or {}).get("phase") in FINAL_PHASES:
        return  # final: nothing more to do, no API call
    with rt.exclusive(key) as mine:
        if not mine:
            return
        try:
            body = rt.kube.get_cr(plural, ns, name)
            if body is None:
                rt.objects.pop(key, None)
                return
            rt.objects[key] = body
            _RECONCILERS[plural](rt, body)
        except Exception:
            log.exception(
                "reconciling %s %s/%s failed; retrying on the next pass", plural, ns, name
            )


def _on_event(plural: str) -> None:
    @kopf.on.event(GROUP, VERSION, plural)
    def handler(event: kopf.RawEvent, **_: Any) -> None:
        obj: dict[str, Any] = dict(event.get("object") or {})
        meta = obj.get("metadata") or {}
        key = (plural, str(meta.get("namespace")), str(meta.get("name")))
        if event.get("type") == "DELETED":
            runtime().objects.pop(key, None)
            return
        runtime().objects[key] = dict(obj)
        reconcile_key(runtime(), key)


for _plural in _RECONCILERS:
    _on_event(_plural)


async def _periodic(rt: Runtime) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(rt.pass_interval)
        for key in list(rt.objects):
            await loop.run_in_executor(None, reconcile_key, rt, key)


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
    memo["safehold_pass"] = asyncio.create_task(_periodic(rt))


@kopf.on.cleanup()
async def _cleanup(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("safehold_pass")
    if task is not None:
        task.cancel()


def reset() -> None:
    """Forget the process's runtime (tests start operators one after another)."""
    set_runtime(None)
