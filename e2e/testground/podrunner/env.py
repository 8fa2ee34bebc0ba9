"""A container's environment, resolved the way the kubelet resolves it.

The process starts from a clean environment (never the runner's own, which holds an admin
kubeconfig), then gets the service variables of the ``kubernetes`` service pointing at the
apiserver, then ``envFrom`` sources, then ``env`` entries in order with ``$(VAR)`` expansion
against what is already defined. Missing Secrets, ConfigMaps or keys that are not ``optional``
raise ``ConfigError``; the pod then waits with ``CreateContainerConfigError``, as on a node.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

__all__ = ["ConfigError", "Fetch", "container_env", "expand", "field_value"]

Json = dict[str, Any]
Fetch = Callable[[str, str, str], Json | None]
"""``fetch(kind, namespace, name)`` for kind ``secrets`` or ``configmaps``; None when absent."""

_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_FIELD_KEY = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


class ConfigError(Exception):
    """The pod's configuration cannot be resolved yet (a missing Secret, ConfigMap or key)."""


def expand(text: str, defined: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined names are replaced, ``$$`` escapes a ``$``."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return defined.get(name, match.group(0))

    return _REF.sub(sub, text)


def field_value(pod: Json, path: str) -> str:
    """The downward-API value of ``path`` (``metadata.name``, ``metadata.labels['x']``, ...)."""
    meta = pod.get("metadata", {})
    keyed = _FIELD_KEY.match(path)
    if keyed:
        return str(meta.get(keyed.group(1), {}).get(keyed.group(2), ""))
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod.get("spec", {}).get("nodeName", "") or "testground",
        "spec.serviceAccountName": pod.get("spec", {}).get("serviceAccountName", "default"),
        "status.hostIP": "127.0.0.1",
        "status.podIP": "127.0.0.1",
        "status.podIPs": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path])
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1], {})
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise ConfigError(f"fieldRef {path!r} is not supported by the pod runner")


def _decoded(kind: str, obj: Json) -> dict[str, str]:
    if kind == "secrets":
        return {
            k: base64.b64decode(v).decode(errors="replace") for k, v in obj.get("data", {}).items()
        }
    return dict(obj.get("data", {}))


def _source(fetch: Fetch, namespace: str, kind: str, ref: Json, what: str) -> dict[str, str] | None:
    name = ref.get("name", "")
    obj = fetch(kind, namespace, name)
    if obj is None:
        if ref.get("optional"):
            return None
        singular = "secret" if kind == "secrets" else "configmap"
        raise ConfigError(f'{singular} "{name}" not found ({what})')
    return _decoded(kind, obj)


def container_env(pod: Json, container: Json, base: dict[str, str], fetch: Fetch) -> dict[str, str]:
    """The full environment of ``container`` in ``pod`` on top of ``base``."""
    namespace = pod["metadata"]["namespace"]
    env = dict(base)
    for src in container.get("envFrom", []):
        prefix = src.get("prefix", "")
        if "secretRef" in src:
            values = _source(fetch, namespace, "secrets", src["secretRef"], "envFrom")
        elif "configMapRef" in src:
            values = _source(fetch, namespace, "configmaps", src["configMapRef"], "envFrom")
        else:
            continue
        for key, value in (values or {}).items():
            env[prefix + key] = value
    for item in container.get("env", []):
        name = item["name"]
        if "value" in item or "valueFrom" not in item:
            env[name] = expand(item.get("value", ""), env)
            continue
        vf = item["valueFrom"]
        if "secretKeyRef" in vf or "configMapKeyRef" in vf:
            kind = "secrets" if "secretKeyRef" in vf else "configmaps"
            ref = vf.get("secretKeyRef") or vf["configMapKeyRef"]
            values = _source(fetch, namespace, kind, ref, f"env {name}")
            if values is None:
                continue
            if ref["key"] not in values:
                if ref.get("optional"):
                    continue
                singular = "secret" if kind == "secrets" else "configmap"
                raise ConfigError(
                    f'couldn\'t find key {ref["key"]} in {singular} "{ref.get("name", "")}" '
                    f"(env {name})"
                )
            env[name] = values[ref["key"]]
        elif "fieldRef" in vf:
            env[name] = field_value(pod, vf["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in vf:
            res = vf["resourceFieldRef"]["resource"]
            section, _, kind = res.partition(".")
            env[name] = str(container.get("resources", {}).get(section, {}).get(kind, "0"))
    return env
