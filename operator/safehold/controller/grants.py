"""Restore grants: who may restore into a namespace other than the request's own.

A namespace is a tenant. A RestoreRequest in namespace A that would write into namespace
B (``spec.target.namespace``, ``spec.namespaceMapping`` for volumes and cluster
resources, a database server addressed as a Service of B) is denied unless B's owners
created, in B, the ConfigMap :data:`GRANT_NAME` whose ``data.fromNamespaces`` lists A
(names separated by commas, spaces or new lines). A namespaced object in B is something
B's owners (the built-in ``admin`` and ``edit`` roles) can create and A's cannot; the
operator reads it with ``get`` on that one name, and reads no other ConfigMap.

The grant is checked when the request is planned (before any claim in B is created or
even looked at, so a denied request learns nothing about B's claims) and again right
before each Job is created, so a grant removed meanwhile stops what has not started. A
Job already running in B is B's to delete. Restores within A are never checked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from safehold.controller.kube import ApiException, Kube

__all__ = ["GRANT_KEY", "GRANT_NAME", "Denial", "allowed_sources", "check_grant", "how_to_grant"]

#: The ConfigMap, in the target namespace, that allows restores into it.
GRANT_NAME = "safehold-restore-grant"
#: Its key listing the namespaces whose RestoreRequests may restore into it.
GRANT_KEY = "fromNamespaces"
DENIED = "CrossNamespaceDenied"
NOT_FOUND = "NamespaceNotFound"


@dataclass(frozen=True)
class Denial:
    reason: str
    message: str


def allowed_sources(configmap: Mapping[str, Any] | None) -> frozenset[str]:
    """The namespaces a grant ConfigMap lists (none for a missing one)."""
    raw = ((configmap or {}).get("data") or {}).get(GRANT_KEY) or ""
    return frozenset(n for n in re.split(r"[\s,]+", str(raw)) if n)


def how_to_grant(source: str, target: str) -> str:
    return (
        f"{target}'s owners allow it by creating, in {target}, ConfigMap {GRANT_NAME} whose "
        f"data.{GRANT_KEY} lists {source} (kubectl create configmap {GRANT_NAME} -n {target} "
        f"--from-literal={GRANT_KEY}={source}; see docs/security.md)"
    )


def check_grant(kube: Kube, source: str, target: str, what: str) -> Denial | None:
    """Why a RestoreRequest in ``source`` may not restore ``what`` into ``target``, or
    None when it may (the same namespace, or ``target`` granted it)."""
    if source == target:
        return None
    try:
        grant = kube.get_configmap(target, GRANT_NAME)
    except ApiException as exc:
        if exc.status != 403:
            raise
        return Denial(
            DENIED,
            f"{what} would restore into namespace {target}, which the operator may not read "
            f"ConfigMap {GRANT_NAME} of (is {target} among the namespaces this installation "
            "watches, the chart's watchNamespaces?), so the restore is denied",
        )
    if grant is not None and source in allowed_sources(grant):
        return None
    if grant is None and not _exists(kube, target):
        return Denial(
            NOT_FOUND,
            f"{what} would restore into namespace {target}, which does not exist: create "
            f"it; then {how_to_grant(source, target)}",
        )
    listed = (
        f"ConfigMap {GRANT_NAME} in {target} does not list {source} in data.{GRANT_KEY}"
        if grant is not None
        else f"namespace {target} has no ConfigMap {GRANT_NAME}"
    )
    return Denial(
        DENIED,
        f"{what} would restore into namespace {target}, and RestoreRequests in {source} may "
        f"not write into another namespace unless its owners allowed it ({listed}): "
        + how_to_grant(source, target),
    )


def _exists(kube: Kube, namespace: str) -> bool:
    try:
        return kube.namespace_exists(namespace)
    except ApiException as exc:
        if exc.status == 403:  # an installation without the right: say what to do anyway
            return True
        raise
