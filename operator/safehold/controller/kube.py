"""The operator's only door to the apiserver: typed calls on the kubernetes client.

Kind modules call these instead of the client directly, so what the operator does in the
cluster (and so its RBAC, docs/operator.md) can be read off one file. There is no call
here that reads a Secret.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from safehold.api import GROUP, VERSION
from safehold.controller.audit_log import FINAL_PHASES, kind_of, log_action
from safehold.controller.cache import Cache
from safehold.controller.jobs import JOB_CONTAINER, LABEL_MANAGED_BY, MANAGED_BY
from safehold.controller.status import JobOutcome, job_outcome

__all__ = ["REQUEST_TIMEOUT", "ApiException", "Kube", "LogReader", "TimedApi", "load_config"]

log = logging.getLogger(__name__)
Json = dict[str, Any]


class LogReader(Protocol):
    """Reads the last lines of a pod's log (the progress lines a Job prints on stderr)."""

    def __call__(self, namespace: str, pod: str, tail: int) -> str: ...


def load_config() -> None:
    """In-cluster credentials when running in a pod, else the kubeconfig ($KUBECONFIG)."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        # $KUBECONFIG is read now, not when the client was imported
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]


#: The label every Job of the operator carries, so that its Jobs are watched and cached.
JOB_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
#: Seconds to connect, and to wait for an answer, on every call. The kubernetes client has
#: none: a request sent on a connection to an apiserver that went away without closing it
#: (a failed-over control plane, a dropped route) waited forever, and held a reconcile
#: worker and its object's place in the work queue with it. Now it fails and is retried
#: with the reconcile's back-off. The apiserver ends a request itself after 60 s.
REQUEST_TIMEOUT = (10.0, 90.0)


class TimedApi:
    """An API group of the kubernetes client whose calls carry a timeout: ``timeout``
    (seconds in all, or to connect and to answer), else :data:`REQUEST_TIMEOUT`.

    Exec streams (``connect_*``) keep their bound methods: ``kubernetes.stream`` needs one,
    and a hook's stream has its own timeout (controller/exec_hooks.py)."""

    def __init__(self, api: Any, timeout: float | tuple[float, float] | None = None) -> None:
        self._api = api
        self._timeout = timeout

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._api, name)
        if name.startswith("connect_") or not callable(attr):
            return attr
        return functools.partial(attr, _request_timeout=self._timeout or REQUEST_TIMEOUT)


class Kube:
    """Calls on one ``ApiClient``; 404 becomes None where absence is a normal answer.

    With a :class:`~safehold.controller.cache.Cache` (the running operator sets one, fed by
    its watches), reads of the kinds it holds are answered from memory and writes update
    it; without one every read asks the apiserver.
    """

    def __init__(self, api: Any | None = None, log_reader: LogReader | None = None) -> None:
        self.cache: Cache | None = None
        self.api = api or client.ApiClient()
        # Typed as Any: the calls take and return plain JSON dicts here.
        self.custom: Any = TimedApi(client.CustomObjectsApi(self.api))
        self.core: Any = TimedApi(client.CoreV1Api(self.api))
        self.batch: Any = TimedApi(client.BatchV1Api(self.api))
        self.read_log: LogReader = log_reader or self._read_log_api

    # ------------------------------------------------------------ custom resources
    def _cached(self, plural: str, namespace: str) -> Cache | None:
        """The cache, seeded for the namespace, when it holds ``plural``; else None."""
        cache = self.cache
        if cache is None or not cache.holds(plural, namespace):
            return None
        if not cache.seeded(plural, namespace):
            if plural == "jobs":
                listing = self.api.sanitize_for_serialization(
                    self.batch.list_namespaced_job(namespace, label_selector=JOB_SELECTOR)
                )
            else:
                listing = self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural
                )
            cache.seed(plural, namespace, listing)
        return cache

    def _remember(self, plural: str, obj: Any) -> None:
        if self.cache is not None and plural in self.cache.plurals and isinstance(obj, dict):
            self.cache.put(plural, obj)

    def get_cr(self, plural: str, namespace: str, name: str) -> Json | None:
        cache = self._cached(plural, namespace)
        if cache is not None:
            return cache.get(plural, namespace, name)
        try:
            obj: Json = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name
            )
            return obj
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_cr(self, plural: str, namespace: str, selector: str | None = None) -> list[Json]:
        cache = self._cached(plural, namespace)
        if cache is not None:
            return cache.select(plural, namespace, selector)
        kw = {"label_selector": selector} if selector else {}
        items: list[Json] = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, **kw
        )["items"]
        return items

    def create_cr(self, plural: str, namespace: str, body: Json) -> Json | None:
        """Create; None when it exists already (a restart re-creating the same name)."""
        try:
            obj: Json = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, body
            )
            self._remember(plural, obj)
            log_action(kind_of(plural), obj, "created")
            return obj
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    def delete_cr(self, plural: str, namespace: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, propagation_policy="Background"
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
        log_action(kind_of(plural), {"metadata": {"namespace": namespace, "name": name}}, "deleted")
        if self.cache is not None:
            self.cache.drop(plural, namespace, name)

    def patch_status(self, plural: str, namespace: str, name: str, status: Json) -> None:
        """Merge-patch ``status`` (the only part of a resource the operator writes)."""
        try:
            obj = self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, {"status": status}
            )
            self._remember(plural, obj)
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to record
                raise
            return
        if status.get("phase") in FINAL_PHASES:
            log_action(kind_of(plural), obj, "phase", phase=status["phase"])

    # ------------------------------------------------------------ jobs and pods
    def create_job(self, manifest: Json) -> bool:
        """Create the Job; False when one of that name exists (it is then adopted)."""
        try:
            job = self.batch.create_namespaced_job(manifest["metadata"]["namespace"], manifest)
            created: Json = self.api.sanitize_for_serialization(job)
            self._remember("jobs", created)
            log_action("Job", created, "created")
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    def get_job(self, namespace: str, name: str) -> Json | None:
        cache = self._cached("jobs", namespace)
        if cache is not None:
            return cache.get("jobs", namespace, name)
        return self._read(self.batch.read_namespaced_job, name, namespace)

    def list_jobs(self, namespace: str, selector: str) -> list[Json]:
        cache = self._cached("jobs", namespace)
        if cache is not None:
            return cache.select("jobs", namespace, selector)
        jobs = self.batch.list_namespaced_job(namespace, label_selector=selector)
        out: list[Json] = self.api.sanitize_for_serialization(jobs)["items"]
        return out

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise
        if self.cache is not None:
            self.cache.drop("jobs", namespace, name)

    def job_pods(self, namespace: str, job: str) -> list[Json]:
        """The Job's pods, newest last."""
        pods = self.core.list_namespaced_pod(namespace, label_selector=f"job-name={job}")
        items: list[Json] = self.api.sanitize_for_serialization(pods)["items"]
        return sorted(items, key=lambda p: p["metadata"].get("creationTimestamp") or "")

    def outcome_of(self, namespace: str, job: Json | None, name: str) -> JobOutcome:
        """What the Job ``name`` (``job`` as read, None when not created yet) has come to,
        from its pods; while none could be created, why (:meth:`pods_refused`)."""
        pods = self.job_pods(namespace, name) if job is not None else []
        outcome = job_outcome(job, pods)
        if job is not None and not pods and outcome.state == "Pending":
            refused = self.pods_refused(namespace, name)
            if refused is not None:
                outcome.waiting = f"FailedCreate: {refused}"
        return outcome

    def pods_refused(self, namespace: str, job: str) -> str | None:
        """Why the Job controller could not create the Job's pods, in the apiserver's words
        (the newest FailedCreate event: a PriorityClass that does not exist, a ResourceQuota
        or LimitRange the pod exceeds, a PodSecurity level it breaks), or None. The Job is
        retried meanwhile, and would otherwise wait, podless, until its deadline."""
        selector = f"involvedObject.kind=Job,involvedObject.name={job},reason=FailedCreate"
        try:
            found = self.core.list_namespaced_event(namespace, field_selector=selector)
        except ApiException as exc:
            if exc.status == 403:  # an install from before the operator could list events
                return None
            raise
        items: list[Json] = self.api.sanitize_for_serialization(found)["items"]
        if not items:
            return None
        newest = max(items, key=_event_time)
        return str(newest.get("message") or "the Job's pods cannot be created")

    def list_pods(self, namespace: str) -> list[Json]:
        out: list[Json] = self.api.sanitize_for_serialization(
            self.core.list_namespaced_pod(namespace)
        )["items"]
        return out

    def _read_log_api(self, namespace: str, pod: str, tail: int) -> str:
        # by name: a backup Job's pod may also have a hooks container
        text: str = self.core.read_namespaced_pod_log(
            pod, namespace, container=JOB_CONTAINER, tail_lines=tail
        )
        return text

    # ------------------------------------------------------------ claims
    def get_pvc(self, namespace: str, name: str) -> Json | None:
        return self._read(self.core.read_namespaced_persistent_volume_claim, name, namespace)

    def list_pvcs(self, namespace: str, selector: str) -> list[Json]:
        out: list[Json] = self.api.sanitize_for_serialization(
            self.core.list_namespaced_persistent_volume_claim(namespace, label_selector=selector)
        )["items"]
        return out

    def create_pvc(self, namespace: str, manifest: Json) -> bool:
        try:
            self.core.create_namespaced_persistent_volume_claim(namespace, manifest)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    def _read(self, read: Callable[[str, str], Any], name: str, namespace: str) -> Json | None:
        """A core or batch object as JSON, or None when it does not exist."""
        try:
            obj = read(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        out: Json = self.api.sanitize_for_serialization(obj)
        return out

    # ------------------------------------------------------------ restore grants
    def get_configmap(self, namespace: str, name: str) -> Json | None:
        """A ConfigMap, None when absent. The chart grants ``get`` on one name only
        (safehold.controller.grants.GRANT_NAME): the operator reads no other ConfigMap."""
        return self._read(self.core.read_namespaced_config_map, name, namespace)

    def namespace_exists(self, name: str) -> bool:
        """Whether namespace ``name`` exists (``get`` on namespaces: no list, no watch)."""
        try:
            self.core.read_namespace(name)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    # ------------------------------------------------------------ events
    def event(
        self, obj: Mapping[str, Any], reason: str, message: str, *, warning: bool = False
    ) -> None:
        """A core Event about ``obj`` (what ``kubectl describe`` shows); never fails the caller."""
        meta = obj["metadata"]
        now = datetime.now(UTC)
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "safehold-operator"},
            "firstTimestamp": now.isoformat(),
            "lastTimestamp": now.isoformat(),
            "count": 1,
            "reportingComponent": "safehold-operator",
        }
        try:
            self.core.create_namespaced_event(meta["namespace"], body)
        except ApiException as exc:
            log.warning("cannot post event %s on %s: %s", reason, meta["name"], exc.reason)


def _event_time(event: Json) -> str:
    """When an event last happened, as an ISO time that sorts (the older API's fields, then
    the newer's)."""
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )
