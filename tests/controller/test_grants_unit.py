"""The restore grant's parsing, the namespaces each kind of restore writes into, and the
apply Job's namespace limit (the integration test is test_operator_tenancy.py)."""

from __future__ import annotations

from typing import Any

import pytest

from safehold.api import RestoreRequest
from safehold.controller.grants import allowed_sources
from safehold.controller.sources.databases import service_namespace
from safehold.controller.sources.resources import (
    _apply_args,
    resources_restore_item,
    resources_target_namespaces,
)
from safehold.engine.cluster.apply import Manifest, NamespacesNotAllowed, check_namespaces


def _request(**spec: Any) -> RestoreRequest:
    return RestoreRequest.model_validate(
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "RestoreRequest",
            "metadata": {"name": "rr", "namespace": "team-a"},
            "spec": {"backupRunRef": {"name": "r1"}, **spec},
        }
    )


def test_a_grant_lists_exact_names_separated_by_commas_spaces_or_lines() -> None:
    cm = {"data": {"fromNamespaces": "team-a, team-c\n  team-d\tteam-e,,"}}
    assert allowed_sources(cm) == {"team-a", "team-c", "team-d", "team-e"}
    assert allowed_sources(None) == frozenset()
    assert allowed_sources({"data": {"other": "team-a"}}) == frozenset()


def test_a_resources_restore_writes_into_mapped_and_named_namespaces() -> None:
    req = _request(
        namespaceMapping={"team-a": "team-b", "old": "team-c"},
        resources={"serviceAccountName": "w", "includeNamespaces": ["team-a", "team-d", "x-*"]},
    )
    # mapped targets and literal names (after mapping); a pattern names none
    assert resources_target_namespaces(req) == ["team-b", "team-c", "team-d"]
    item = resources_restore_item(req, {"name": "resources", "snapshotId": "ab" * 32})
    args = _apply_args(req, item)
    only = [args[i + 1] for i, a in enumerate(args) if a == "--only-namespace"]
    assert only == ["team-a", "team-b", "team-c", "team-d"]
    assert resources_target_namespaces(_request()) == []


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("postgres", None),
        ("postgres.team-b", ("team-b", False)),
        ("postgres.team-b.svc", ("team-b", True)),
        ("postgres.team-b.svc.cluster.local.", ("team-b", True)),
        ("db.example.com", None),
        ("10.0.0.7", None),
    ],
)
def test_a_database_host_names_a_namespace_only_as_a_service(
    host: str, expected: tuple[str, bool] | None
) -> None:
    assert service_namespace(host) == expected


def _m(kind: str, name: str, ns: str | None) -> Manifest:
    meta = {"name": name, **({"namespace": ns} if ns else {})}
    return Manifest(f"{kind}/{name}.yaml", {"apiVersion": "v1", "kind": kind, "metadata": meta})


def test_the_apply_job_refuses_objects_outside_its_namespaces_before_writing() -> None:
    objs = [
        _m("Namespace", "team-a", None),
        _m("ConfigMap", "a", "team-a"),
        _m("ClusterRole", "r", None),  # cluster-scoped: the ServiceAccount's RBAC decides
    ]
    check_namespaces(objs, ["team-a"])
    check_namespaces([*objs, _m("ConfigMap", "c", "team-c")], [])  # no limit given
    with pytest.raises(NamespacesNotAllowed) as err:
        check_namespaces([*objs, _m("ConfigMap", "c", "team-c"), _m("Namespace", "team-c", None)],
                         ["team-a"])  # fmt: skip
    assert "team-c (2 objects)" in str(err.value)
    assert "nothing was written" in str(err.value)
