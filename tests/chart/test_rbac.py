"""The chart's RBAC equals the contract with the controller, in both watch modes.

The contract (docs/install.md, "RBAC"): exactly these (API group, resource, verb) triples, no
Secrets, no wildcards; resourceNames only for the one ConfigMap a restore into another
namespace reads (its owners' grant, docs/security.md), written ``configmaps:NAME``;
cluster-wide rights for namespaced resources only when the operator watches every namespace.
"""

from __future__ import annotations

from typing import Any

import pytest

CONTRACT: frozenset[tuple[str, str, str]] = frozenset(
    {
        *(
            ("safehold.io", plural, verb)
            for plural in ("backuplocations", "backuppolicies", "backupruns", "restorerequests")
            for verb in ("get", "list", "watch")
        ),
        ("safehold.io", "backupruns", "create"),
        ("safehold.io", "backupruns", "delete"),
        *(
            ("safehold.io", f"{plural}/status", verb)
            for plural in ("backuplocations", "backuppolicies", "backupruns", "restorerequests")
            for verb in ("get", "patch", "update")
        ),
        *(("batch", "jobs", verb) for verb in ("get", "list", "watch", "create", "delete")),
        *(("", "pods", verb) for verb in ("get", "list", "watch")),
        ("", "pods/log", "get"),
        *(("", "persistentvolumeclaims", verb) for verb in ("get", "list", "watch", "create")),
        *(
            ("snapshot.storage.k8s.io", "volumesnapshots", verb)
            for verb in ("get", "list", "watch", "create", "delete")
        ),
        *(
            (group, "events", verb)
            for group in ("", "events.k8s.io")
            for verb in ("create", "patch")
        ),
        ("", "events", "list"),  # a Job's FailedCreate events (docs/install.md)
        ("", "configmaps:safehold-restore-grant", "get"),
    }
)
#: Only with ``execHooks.enabled`` (docs/hooks.md): off by default.
EXEC: frozenset[tuple[str, str, str]] = frozenset(
    ("", "pods/exec", verb) for verb in ("create", "get")
)
#: The leader election's Role, in the release's namespace only (docs/operator.md).
LEADER: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("coordination.k8s.io", "leases:safehold-leader", "get"),
        ("coordination.k8s.io", "leases:safehold-leader", "update"),
        ("coordination.k8s.io", "leases", "create"),
    }
)
CLUSTER_ONLY: frozenset[tuple[str, str, str]] = frozenset(
    (group, resource, verb)
    for group, resource in (
        ("apiextensions.k8s.io", "customresourcedefinitions"),
        ("snapshot.storage.k8s.io", "volumesnapshotclasses"),
    )
    for verb in ("get", "list", "watch")
) | {("", "namespaces", "get")}


def triples(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    """Every (group, resource, verb) a Role or ClusterRole grants."""
    out: set[tuple[str, str, str]] = set()
    for rule in role.get("rules", []):
        assert not rule.get("nonResourceURLs"), f"{role['metadata']['name']}: {rule}"
        names = rule.get("resourceNames") or []
        if names:  # only the grant ConfigMap (get), only the leader Lease (get, update)
            assert rule in (
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": ["safehold-restore-grant"],
                    "verbs": ["get"],
                },
                {
                    "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"],
                    "resourceNames": ["safehold-leader"],
                    "verbs": ["get", "update"],
                },
            ), f"{role['metadata']['name']}: {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in names or [None]:
                        out.add((group, f"{resource}:{name}" if name else resource, verb))
    return out


def assert_no_wildcards_or_secrets(granted: set[tuple[str, str, str]]) -> None:
    assert not [t for t in granted if "*" in "".join(t)], "wildcards grant more than asked"
    assert not [t for t in granted if t[1].split("/")[0] == "secrets"], "no Secrets, ever"


VARIANTS: dict[str, dict[str, Any]] = {
    "all-namespaces": {},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "service-monitor": {"serviceMonitor": {"enabled": True}},
    "exec-hooks": {"execHooks": {"enabled": True}},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_no_role_grants_secrets_or_wildcards(render: Any, variant: str) -> None:
    for obj in render(VARIANTS[variant]):
        if obj["kind"] in ("Role", "ClusterRole"):
            assert_no_wildcards_or_secrets(triples(obj))


def _watch_roles(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The Roles or RoleBindings of the watched namespaces (not the leader election's)."""
    return [
        o
        for o in objects
        if o["kind"] == kind and not o["metadata"]["name"].endswith("-leader-election")
    ]


def test_leader_election_may_hold_its_lease_in_its_namespace_only(render: Any) -> None:
    for values in ({}, {"watchNamespaces": ["team-a"]}):
        objects = render(values)
        [role] = [o for o in objects if o["metadata"]["name"] == "safehold-leader-election"
                  and o["kind"] == "Role"]  # fmt: skip
        assert role["metadata"]["namespace"] == "safehold-system"
        assert triples(role) == LEADER
        [binding] = [o for o in objects if o["kind"] == "RoleBinding"
                     and o["metadata"]["name"] == "safehold-leader-election"]  # fmt: skip
        assert binding["roleRef"]["name"] == "safehold-leader-election"
        assert binding["metadata"]["namespace"] == "safehold-system"


def test_all_namespaces_one_cluster_role_with_exactly_the_contract(
    render: Any, of_kind: Any
) -> None:
    objects = render()
    [role] = of_kind(objects, "ClusterRole")
    assert triples(role) == CONTRACT | CLUSTER_ONLY
    assert _watch_roles(objects, "Role") == []
    assert _watch_roles(objects, "RoleBinding") == []
    [binding] = of_kind(objects, "ClusterRoleBinding")
    [account] = of_kind(objects, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": "safehold-system",
        }
    ]


def test_namespaced_a_role_per_namespace_and_cluster_wide_only_crds(
    render: Any, of_kind: Any
) -> None:
    objects = render({"watchNamespaces": ["team-a", "team-b"]})
    roles = _watch_roles(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert triples(role) == CONTRACT
    bindings = _watch_roles(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    [account] = of_kind(objects, "ServiceAccount")
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["roleRef"]["name"] == roles[0]["metadata"]["name"]
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": account["metadata"]["name"],
                "namespace": "safehold-system",
            }
        ]
    # CRDs are cluster-scoped: reading them is the one right a namespaced install holds
    # cluster-wide. Nothing about namespaced resources is granted outside the listed namespaces.
    [cluster_role] = of_kind(objects, "ClusterRole")
    assert triples(cluster_role) == CLUSTER_ONLY


def test_rbac_create_false_renders_no_rbac(render: Any) -> None:
    kinds = {o["kind"] for o in render({"rbac": {"create": False}})}
    assert not kinds & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


def test_an_existing_service_account_is_used_and_must_be_named(render: Any, of_kind: Any) -> None:
    objects = render({"serviceAccount": {"create": False, "name": "backup-operator"}})
    assert of_kind(objects, "ServiceAccount") == []
    [deployment] = of_kind(objects, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "backup-operator"
    [binding] = of_kind(objects, "ClusterRoleBinding")
    assert binding["subjects"][0]["name"] == "backup-operator"
    message = render.fails({"serviceAccount": {"create": False}})
    assert "serviceAccount.name" in message


def test_exec_is_granted_only_when_exec_hooks_are_enabled(render: Any, of_kind: Any) -> None:
    [default] = of_kind(render(), "ClusterRole")
    assert not triples(default) & EXEC
    [enabled] = of_kind(render({"execHooks": {"enabled": True}}), "ClusterRole")
    assert triples(enabled) == CONTRACT | CLUSTER_ONLY | EXEC
    for role in _watch_roles(
        render({"execHooks": {"enabled": True}, "watchNamespaces": ["team-a"]}), "Role"
    ):
        assert triples(role) == CONTRACT | EXEC


def test_the_operator_is_told_whether_exec_hooks_may_run(render: Any, of_kind: Any) -> None:
    def env(values: dict[str, Any]) -> dict[str, str]:
        [deployment] = of_kind(render(values), "Deployment")
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("value") for e in container["env"]}

    assert env({})["SAFEHOLD_EXEC_HOOKS"] == "false"
    assert env({"execHooks": {"enabled": True}})["SAFEHOLD_EXEC_HOOKS"] == "true"
