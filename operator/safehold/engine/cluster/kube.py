"""The Kubernetes API as the resource export and apply need it: discovery and raw calls.

This is the only part of the engine that talks to a cluster (the ``kubernetes`` client
is the ``operator`` extra). It uses the client's ``ApiClient`` for plain REST calls
rather than the typed APIs, because the resources are arbitrary (custom resources
included) and manifests must stay the dicts the server returns. Discovery asks
``/api/v1`` and every group's preferred version once per run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ApiResource",
    "KubeApi",
    "KubeError",
    "connect",
]

_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 - a path


class KubeError(Exception):
    """An API call failed; ``status`` is the HTTP status (0 when none)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ApiResource:
    """One resource type of the API, as discovery describes it."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    verbs: frozenset[str]
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def type_name(self) -> str:
        """``plural.group`` (``deployments.apps``), or the plural for the core group."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return base + (f"/{name}" if name else "")


#: Seconds to connect, and to wait for an answer, on every call. The kubernetes client has
#: none: a call sent on a connection to an apiserver that went away without closing it waited
#: until the Job's deadline (6 hours by default). The apiserver ends a request itself after
#: 60 s.
REQUEST_TIMEOUT = (10.0, 90.0)


class KubeApi:
    """Raw REST calls through a ``kubernetes.client.ApiClient``."""

    def __init__(self, api_client: Any) -> None:
        self.client = api_client
        self._resources: list[ApiResource] | None = None

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        method_, url, headers, payload, _ = self.client.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.client.call_api(
                method_, url, header_params=headers, body=payload, _request_timeout=REQUEST_TIMEOUT
            )
            data = response.read()
        except ApiException as exc:
            raise KubeError(exc.status or 0, _reason(exc.body, exc.status, exc.reason)) from None
        except (HTTPError, OSError) as exc:  # refused, timed out, reset
            raise KubeError(
                0, f"no answer from the apiserver to {method} {path} ({type(exc).__name__})"
            ) from None
        if not 200 <= response.status < 300:
            raise KubeError(response.status, _reason(data, response.status, response.reason))
        return json.loads(data) if data else {}

    def get(self, path: str, query: list[tuple[str, str]] | None = None) -> Any:
        return self.call("GET", path, query=query)

    # ---------------------------------------------------------------- discovery
    def resources(self) -> list[ApiResource]:
        """Every resource type of the cluster (preferred version of each group)."""
        if self._resources is not None:
            return self._resources
        found: list[ApiResource] = []
        found += _parse_list(self.get("/api/v1"), "", "v1")
        groups = self.get("/apis").get("groups") or []
        for g in groups:
            preferred = (g.get("preferredVersion") or {}).get("version")
            if not preferred:
                continue
            try:
                doc = self.get(f"/apis/{g['name']}/{preferred}")
            except KubeError:
                continue  # an unavailable aggregated API: leave it out
            found += _parse_list(doc, g["name"], preferred)
        self._resources = found
        return found

    def find(self, group: str, kind: str) -> ApiResource | None:
        for r in self.resources():
            if r.group == group and r.kind == kind:
                return r
        return None

    def for_api_version(self, api_version: str, kind: str) -> ApiResource | None:
        group, _, version = api_version.rpartition("/")
        for r in self.resources():
            if r.group == group and r.kind == kind:
                return (
                    r
                    if r.version == version
                    else ApiResource(
                        r.group, version, r.plural, r.kind, r.namespaced, r.verbs, r.short_names
                    )
                )
        return None

    def refresh(self) -> None:
        """Forget discovery (new CRDs were created)."""
        self._resources = None


def _parse_list(doc: dict[str, Any], group: str, version: str) -> list[ApiResource]:
    out = []
    for r in doc.get("resources") or []:
        if "/" in r["name"]:
            continue  # subresources (status, scale, log)
        out.append(
            ApiResource(
                group=group,
                version=version,
                plural=r["name"],
                kind=r["kind"],
                namespaced=bool(r.get("namespaced")),
                verbs=frozenset(r.get("verbs") or ()),
                short_names=tuple(r.get("shortNames") or ()),
            )
        )
    return out


def _reason(body: Any, status: int | None, reason: str | None) -> str:
    """The API's own message (a Status object's ``message``), else the HTTP status."""
    try:
        doc = json.loads(body or "{}")
        message = str(doc.get("message") or "") if isinstance(doc, dict) else ""
    except ValueError:
        message = ""
    return message or f"{status} {reason}"


def connect(kubeconfig: str | None = None, context: str | None = None) -> KubeApi:
    """A client for the cluster: the pod's service account inside a pod, else the
    kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``)."""
    try:
        from kubernetes import client, config
    except ImportError as exc:  # pragma: no cover - the operator extra
        raise KubeError(
            0,
            f"talking to Kubernetes needs the operator extra: pip install 'safehold[operator]' "
            f"({exc})",
        ) from exc
    if (
        kubeconfig is None
        and context is None
        and os.path.exists(_TOKEN)
        and os.environ.get("KUBERNETES_SERVICE_HOST")
    ):
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return KubeApi(client.ApiClient())
    configuration = client.Configuration()
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            # $KUBECONFIG is read now: the client reads it once, when first imported
            config_file=kubeconfig or os.environ.get("KUBECONFIG"),
            context=context,
            client_configuration=configuration,
        )
    except (config.ConfigException, OSError) as exc:
        raise KubeError(
            0,
            f"no cluster to talk to: {exc} (set KUBECONFIG or pass --kubeconfig; inside a pod "
            "the Job needs a service account token)",
        ) from None
    return KubeApi(client.ApiClient(configuration))
