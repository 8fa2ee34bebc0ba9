"""Small builders for the manifests tests apply: a pod, a Job, a claim, RBAC.

Containers use ``IMAGE`` (Safehold's own image, which has Python, the kubernetes client and the
``safehold`` CLI). The test ground's pod runner ignores images and runs the command in the
project's environment; on a real cluster, load that image first (``kind load docker-image``)
or point ``$SAFEHOLD_TEST_IMAGE`` at a registry copy.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["IMAGE", "claim", "container", "job", "pod", "python_command", "role_binding"]

Json = dict[str, Any]
IMAGE = os.environ.get("SAFEHOLD_TEST_IMAGE", "safehold:0.1.0")


def python_command(script: str) -> list[str]:
    """A container command running ``script`` with the image's (or the project's) Python."""
    return ["python", "-c", script]


def container(name: str, command: list[str], **extra: Any) -> Json:
    return {"name": name, "image": IMAGE, "command": command, **extra}


def pod(name: str, containers: list[Json], **spec: Any) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": containers, **spec},
    }


def job(
    name: str,
    containers: list[Json],
    *,
    backoff_limit: int = 0,
    owner: Json | None = None,
    **pod_spec: Any,
) -> Json:
    meta: Json = {"name": name}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {"spec": {"restartPolicy": "Never", "containers": containers, **pod_spec}},
        },
    }


def claim(name: str, size: str = "64Mi") -> Json:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    }


def role_binding(
    service_account: str,
    verbs: list[str],
    resources: list[str],
    *,
    more_rules: list[Json] | None = None,
) -> list[Json]:
    """A ServiceAccount with a Role granting ``verbs`` on core ``resources``, and its binding."""
    name = f"{service_account}-role"
    rules = [{"apiGroups": [""], "resources": resources, "verbs": verbs}, *(more_rules or [])]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": service_account}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name},
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": service_account}],
        },
    ]
