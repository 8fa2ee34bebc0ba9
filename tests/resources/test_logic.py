"""Unit tests of the pure rules: what a clean manifest keeps, label selectors, type
names, the apply order, namespace mapping, and the Jobs the controller builds."""

from __future__ import annotations

from typing import Any

import pytest

from safehold.api import BackupPolicy, BackupRun, RestoreRequest, SourceResult
from safehold.controller.sources import RunContext
from safehold.controller.sources.resources import (
    ResourcesSource,
    _apply_args,
    resources_restore_item,
)
from safehold.engine.cluster.apply import Manifest, apply_order, map_namespace
from safehold.engine.cluster.clean import clean_manifest, dump_manifest, is_generated
from safehold.engine.cluster.selection import (
    LabelSelectorError,
    matches_labels,
    matches_type,
    parse_selector,
)


def test_clean_manifest_drops_server_fields_and_keeps_the_users() -> None:
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": "u",
            "resourceVersion": "7",
            "creationTimestamp": "t",
            "managedFields": [{}],
            "labels": {"app": "web"},
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "team": "a",
            },
        },
        "spec": {"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ports": [{"port": 80}]},
        "status": {"loadBalancer": {}},
    }
    out = clean_manifest(svc)
    assert out == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "labels": {"app": "web"},
            "annotations": {"team": "a"},
        },
        "spec": {"ports": [{"port": 80}]},
    }
    assert svc["spec"]["clusterIP"] == "10.0.0.1", "the input is not changed"
    headless = clean_manifest({**svc, "spec": {"clusterIP": "None"}})
    assert headless["spec"] == {"clusterIP": "None"}


def test_clean_claim_and_workload() -> None:
    pvc = clean_manifest(
        {
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": "d",
                "annotations": {"pv.kubernetes.io/bind-completed": "yes"},
            },
            "spec": {"volumeName": "pvc-1", "storageClassName": "fast"},
        }
    )
    assert pvc == {"kind": "PersistentVolumeClaim", "metadata": {"name": "d"},
                   "spec": {"storageClassName": "fast"}}  # fmt: skip
    dep = clean_manifest(
        {
            "kind": "Deployment",
            "metadata": {"name": "w", "generation": 3,
                         "annotations": {"deployment.kubernetes.io/revision": "2"}},
            "spec": {"template": {"metadata": {"creationTimestamp": None,
                                               "labels": {"app": "w", "pod-template-hash": "x"}}}},
        }
    )  # fmt: skip
    assert dep == {"kind": "Deployment", "metadata": {"name": "w"},
                   "spec": {"template": {"metadata": {"labels": {"app": "w"}}}}}  # fmt: skip
    assert dump_manifest({"b": 1, "a": 2}) == "a: 2\nb: 1\n", "sorted: same object, same bytes"


def test_generated_objects_are_not_exported() -> None:
    rs = {"kind": "ReplicaSet", "metadata": {"name": "w-1", "ownerReferences": [
        {"kind": "Deployment", "name": "w", "controller": True}]}}  # fmt: skip
    assert is_generated(rs) == "managed by Deployment w"
    token = {"kind": "Secret", "type": "kubernetes.io/service-account-token", "metadata": {}}
    assert is_generated(token)
    assert is_generated({"kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt"}})
    assert is_generated({"kind": "ConfigMap", "metadata": {"name": "app"}}) is None


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("app=web", {"app": "web"}, True),
        ("app=web", {"app": "api"}, False),
        ("app!=web", {}, True),
        ("tier in (a, b),app", {"tier": "b", "app": "x"}, True),
        ("tier notin (a,b)", {"tier": "a"}, False),
        ("!legacy", {"legacy": "1"}, False),
        ("app==web,!legacy", {"app": "web"}, True),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert matches_labels(parse_selector(selector), labels) is expected


def test_a_bad_selector_says_where() -> None:
    with pytest.raises(LabelSelectorError, match=r"cannot read 'a b c'"):
        parse_selector("app=web,a b c")


def test_type_names() -> None:
    dep: dict[str, Any] = {"plural": "deployments", "group": "apps", "kind": "Deployment",
                           "short_names": ("deploy",)}  # fmt: skip
    for name in ("deployments.apps", "deployments", "Deployment", "deploy", "DEPLOY"):
        assert matches_type([name], **dep), name
    assert not matches_type(["deployments.extensions"], **dep)
    cm: dict[str, Any] = {"plural": "configmaps", "group": "", "kind": "ConfigMap"}
    assert matches_type(["configmaps"], **cm)
    assert matches_type(["configmaps.core"], **cm)


def test_dependency_order() -> None:
    kinds = ["Widget", "Service", "Deployment", "PersistentVolumeClaim", "Secret", "RoleBinding",
             "ServiceAccount", "Namespace", "CustomResourceDefinition"]  # fmt: skip
    ordered = sorted(kinds, key=apply_order)
    assert ordered[:3] == ["CustomResourceDefinition", "Namespace", "ServiceAccount"]
    assert ordered.index("Secret") < ordered.index("PersistentVolumeClaim")
    assert ordered.index("PersistentVolumeClaim") < ordered.index("Deployment")
    assert ordered.index("Deployment") < ordered.index("Service")


def test_namespace_mapping() -> None:
    binding = {
        "kind": "RoleBinding",
        "metadata": {"name": "b", "namespace": "shop"},
        "subjects": [{"kind": "ServiceAccount", "name": "a", "namespace": "shop"},
                     {"kind": "ServiceAccount", "name": "c", "namespace": "other"}],
    }  # fmt: skip
    moved = map_namespace(binding, {"shop": "shop-copy"})
    assert moved["metadata"]["namespace"] == "shop-copy"
    assert [s["namespace"] for s in moved["subjects"]] == ["shop-copy", "other"]
    ns = map_namespace({"kind": "Namespace", "metadata": {"name": "shop"}}, {"shop": "x"})
    assert ns["metadata"]["name"] == "x"
    m = Manifest("p", moved)
    assert m.describe() == "rolebinding shop-copy/b"


def _policy(**source: Any) -> BackupPolicy:
    return BackupPolicy.model_validate(
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "BackupPolicy",
            "metadata": {"name": "pol", "namespace": "shop"},
            "spec": {"location": {"name": "loc"}, "sources": {"clusterResources": source}},
        }
    )


def test_export_job_arguments() -> None:
    policy = _policy(
        serviceAccountName="reader",
        excludeResources=["events"],
        labelSelector={"matchLabels": {"app": "web"}},
        includeClusterScoped=True,
    )
    ctx = _run_context(policy)
    source = SourceResult(name="resources", kind="clusterResources")
    args = list(ResourcesSource().backup_job(ctx, source).args)
    assert args[:3] == ["export-resources", "--source", "shop/pol/resources"]
    assert "--include-secrets" not in args, "Secrets only when the policy says so"
    for pair in (["--namespace", "shop"], ["--exclude-resources", "events"],
                 ["--selector", "app=web"], ["--type", "full"]):  # fmt: skip
        i = args.index(pair[0])
        assert args[i : i + 2] == pair
    assert "--cluster-scoped" in args
    (result,) = ResourcesSource().plan(ctx, set())
    assert result.phase == "Pending"
    assert result.job is not None


def _run_context(policy: BackupPolicy) -> RunContext:
    run = BackupRun.model_validate(
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "BackupRun",
            "metadata": {"name": "r1", "namespace": "shop"},
            "spec": {"policyRef": {"name": "pol"}, "type": "full"},
        }
    )
    return RunContext(None, {}, run, policy, None)  # type: ignore[arg-type]


def test_a_source_without_service_account_fails_and_says_what_to_do() -> None:
    (result,) = ResourcesSource().plan(_run_context(_policy()), set())
    assert result.phase == "Failed"
    assert result.error is not None
    assert result.error.reason == "ServiceAccountRequired"
    assert "spec.sources.clusterResources.serviceAccountName" in result.error.message


def test_restore_job_arguments() -> None:
    req = RestoreRequest.model_validate(
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "RestoreRequest",
            "metadata": {"name": "rr", "namespace": "shop"},
            "spec": {
                "backupRunRef": {"name": "r1"},
                "resources": {"serviceAccountName": "writer", "includeResources": ["cm"],
                              "names": ["web-config"]},
                "namespaceMapping": {"shop": "shop-copy"},
                "existingResourcePolicy": "Overwrite",
                "dryRun": True,
            },
        }
    )  # fmt: skip
    item = resources_restore_item(req, {"name": "resources", "snapshotId": "ab" * 32})
    assert item.phase == "Pending"
    assert item.target == "resources -> shop=shop-copy"
    args = _apply_args(req, item)
    assert args[:2] == ["apply-resources", "ab" * 32]
    assert args[args.index("--map-namespace") + 1] == "shop=shop-copy"
    assert args[args.index("--existing") + 1] == "update"
    assert args[args.index("--name") + 1] == "web-config"
    assert "--dry-run" in args
