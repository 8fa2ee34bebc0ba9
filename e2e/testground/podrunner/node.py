"""The Node the pod runner stands for, so pods are bound and ``kubectl logs`` reaches it.

The runner binds the pods it runs to this Node (as a scheduler would), and the Node's address
and kubelet port point the apiserver at the runner's log server. The node-lifecycle controller
is not started on the test ground, so the Node needs no heartbeat to stay Ready.

Of the scheduler's rules it follows a pod's ``nodeSelector`` and required node affinity
(``matchExpressions`` on labels, ``matchFields`` on the name): a pod the Node does not match
stays Pending with the condition kube-scheduler would write (PodScheduled False,
Unschedulable). Resources, taints and the rest are not checked.
"""

from __future__ import annotations

import os
import platform
from typing import Any

from testground.podrunner.status import now
from testground.rest import Api, ApiError

__all__ = ["NODE_NAME", "bind", "register_node", "unschedulable"]

#: kube-scheduler 1.20's words for a cluster of one Node that does not match.
UNMATCHED = "0/1 nodes are available: 1 node(s) didn't match node selector."

NODE_NAME = "testground"


def _memory() -> str:
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return f"{pages // 1024}Ki"


def register_node(api: Api, name: str, kubelet_port: int) -> None:
    """Create the Node (if needed) and set its status: Ready, 127.0.0.1, the log server port."""
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
    }
    try:
        api.post(
            "/api/v1/nodes",
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}},
        )
    except ApiError as exc:
        if exc.status != 409:
            raise
    stamp = now()

    def cond(kind: str, status: str, reason: str) -> dict[str, Any]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": "the test ground's pod runner",
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
        }

    resources = {"cpu": str(os.cpu_count() or 1), "memory": _memory(), "pods": "110"}
    status = {
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID"),
            cond("Ready", "True", "KubeletReady"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "capacity": resources,
        "allocatable": resources,
        "nodeInfo": {
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
            "kernelVersion": platform.release(),
            "osImage": "safehold test ground",
            "containerRuntimeVersion": "testground://local-processes",
            "kubeletVersion": "v1.20.2",
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }
    api.merge_patch(f"/api/v1/nodes/{name}/status", {"status": status})


def _expression(e: dict[str, Any], value: str | None) -> bool:
    op, values = e.get("operator"), e.get("values") or []
    if op == "In":
        return value in values
    if op == "NotIn":
        return value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    return False  # Gt, Lt: not needed by anything the test ground runs


def unschedulable(pod: dict[str, Any], node: dict[str, Any]) -> str | None:
    """Why ``node`` cannot take ``pod`` (its nodeSelector or required node affinity), in
    kube-scheduler's words; None when it can."""
    labels = node["metadata"].get("labels") or {}
    spec = pod.get("spec") or {}
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return UNMATCHED
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms")
    if not terms:
        return None
    fields = {"metadata.name": node["metadata"]["name"]}
    for term in terms:
        by_label = all(
            _expression(e, labels.get(e["key"])) for e in term.get("matchExpressions") or []
        )
        by_field = all(_expression(e, fields.get(e["key"])) for e in term.get("matchFields") or [])
        if by_label and by_field:
            return None
    return UNMATCHED


def bind(api: Api, pod: dict[str, Any], node: str) -> bool:
    """Bind a pod to ``node`` like a scheduler. False if someone else bound it first."""
    meta = pod["metadata"]
    body = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": meta["name"], "uid": meta["uid"]},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    }
    try:
        api.post(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding", body)
    except ApiError as exc:
        if exc.status in (404, 409):
            return False
        raise
    return True
