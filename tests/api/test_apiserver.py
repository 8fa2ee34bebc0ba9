"""The generated CRDs on a real kube-apiserver (the test ground's 1.20, or ``$KUBECONFIG``).

The ``cluster`` fixture installs ``crds/`` before anything else; these tests then do what
a user does with kubectl: apply valid resources, see invalid ones rejected with the field
named, list them with the printer columns and short names, and wait for ``Complete``.
The schema must be valid and enforced on 1.20 (no CEL) as well as on current clusters.
"""

from __future__ import annotations

import copy
import json
import re
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from safehold.api import (
    COMPLETE,
    KINDS,
    BackupRunStatus,
    Condition,
    RestoreRequest,
    RestoreRequestSpec,
    SourceResult,
    validate_object,
    validate_spec,
)
from safehold.api.crd import crd_name
from safehold.api.meta import ObjectMeta
from safehold.api.restorerequest import RestoreTarget
from safehold.api.selectors import LabelSelector, LabelSelectorRequirement
from safehold.controller.jobs import JobRequest, Mount, build_job
from safehold.controller.restoreplan import claim_manifest
from safehold.controller.snapshotmeta import ClaimShape
from safehold.controller.sources.claims import selector_string
from testground.kube import Cluster, Namespace

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "resources.md"


def _examples() -> dict[str, dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOCS.read_text(), re.DOTALL)
    return {doc["kind"]: doc for doc in map(yaml.safe_load, blocks)}


def _manifest(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "safehold.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


def _rejected(namespace: Namespace, manifest: dict[str, Any]) -> str:
    """kubectl's error for a manifest the apiserver must refuse (validated by the server)."""
    result = namespace.kubectl(
        "create", "--validate=false", "-f", "-", input=yaml.safe_dump(manifest), check=False
    )
    assert result.returncode != 0, f"the apiserver accepted {manifest}"
    return result.stderr


def test_crds_are_established_and_stored_unchanged(cluster: Cluster) -> None:
    for model in KINDS.values():
        name = crd_name(model)
        crd = json.loads(cluster.kubectl("get", "crd", name, "-o", "json").stdout)
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("Established") == "True", name
        assert conditions.get("NamesAccepted") == "True", name
        assert conditions.get("NonStructuralSchema") is None, name
        committed = yaml.safe_load((REPO / "crds" / f"{name}.yaml").read_text())
        assert crd["spec"]["versions"] == committed["spec"]["versions"], name


def test_docs_examples_are_accepted_and_defaulted(namespace: Namespace) -> None:
    for kind, example in _examples().items():
        manifest = copy.deepcopy(example)
        manifest["metadata"].pop("namespace", None)
        namespace.apply(manifest)
        stored = namespace.get(kind.lower(), manifest["metadata"]["name"])
        assert stored is not None
        assert validate_object(stored) == [], kind
        # nothing pruned, and the server's defaults are the models' defaults
        model = KINDS[kind]
        assert model.model_validate(stored).spec == model.model_validate(manifest).spec, kind
    location = namespace.get("backuplocation", "primary")
    assert location is not None
    assert location["spec"]["role"] == "primary"  # a schema default
    run = namespace.get("backuprun", "shop-before-upgrade")
    assert run is not None
    assert run["spec"]["policyRef"] == {"name": "shop"}


def test_server_fills_defaults(namespace: Namespace) -> None:
    namespace.apply(_manifest("BackupRun", "by-hand", {"policyRef": {"name": "p"}}))
    run = namespace.get("br", "by-hand")
    assert run is not None
    assert run["spec"]["type"] == "incremental"


_INVALID: list[tuple[str, str, dict[str, Any], tuple[str, ...]]] = [
    (
        "bad-cron",
        "BackupPolicy",
        {
            "sources": {"volumes": [{"claimName": "data"}]},
            "location": {"name": "primary"},
            "schedule": {"slots": [{"cron": "every night"}]},
        },
        ("spec.schedule.slots[0].cron", "should match"),
    ),
    (
        "negative-keep",
        "BackupPolicy",
        {
            "sources": {"volumes": [{"claimName": "data"}]},
            "location": {"name": "primary"},
            "retention": {"keepLast": -1},
        },
        ("spec.retention.keepLast", "greater than or equal to 0"),
    ),
    (
        "no-location",
        "BackupPolicy",
        {"sources": {"volumes": [{"claimName": "data"}]}},
        ("spec.location", "Required value"),
    ),
    (
        "claim-and-selector",
        "BackupPolicy",
        {
            "sources": {"volumes": [{"claimName": "a", "selector": {"matchLabels": {"a": "b"}}}]},
            "location": {"name": "primary"},
        },
        ("spec.sources.volumes", "oneOf"),
    ),
    (
        "bad-policy",
        "BackupPolicy",
        {
            "sources": {"volumes": [{"claimName": "data"}]},
            "location": {"name": "primary"},
            "concurrencyPolicy": "Queue",
        },
        ("spec.concurrencyPolicy", '"Forbid"'),
    ),
    (
        "unknown-provider",
        "BackupLocation",
        {"provider": "ftp", "bucket": "b", "repositoryPasswordSecretRef": {"name": "pw"}},
        ("spec.provider", '"s3"'),
    ),
    (
        "missing-bucket",
        "BackupLocation",
        {"provider": "s3", "repositoryPasswordSecretRef": {"name": "pw"}},
        ("spec.bucket", "Required value"),
    ),
    (
        "bad-immutability",
        "BackupLocation",
        {
            "provider": "gcs",
            "bucket": "b",
            "repositoryPasswordSecretRef": {"name": "pw"},
            "immutabilityDays": "30",
        },
        ("spec.immutabilityDays", "integer"),
    ),
    (
        "bad-type",
        "BackupRun",
        {"policyRef": {"name": "p"}, "type": "snapshot"},
        ("spec.type", '"incremental"'),
    ),
    (
        "two-origins",
        "RestoreRequest",
        {"backupRunRef": {"name": "r"}, "policyRef": {"name": "p"}},
        ("spec", "oneOf"),
    ),
    (
        "bad-claim",
        "RestoreRequest",
        {"backupRunRef": {"name": "r"}, "target": {"claimName": "Not_A_Name"}},
        ("spec.target.claimName", "should match"),
    ),
]


@pytest.mark.parametrize(
    ("name", "kind", "spec", "expected"), _INVALID, ids=[case[0] for case in _INVALID]
)
def test_invalid_resource_is_rejected_naming_the_field(
    namespace: Namespace, name: str, kind: str, spec: dict[str, Any], expected: tuple[str, ...]
) -> None:
    manifest = _manifest(kind, name, spec)
    message = _rejected(namespace, manifest)
    # 1.20 names list items without their index (slots.cron); later versions with it
    field, *words = expected
    assert field in message or _without_index(field) in message, message
    for word in words:
        assert word in message, f"{word!r} not in kubectl's message:\n{message}"
    assert namespace.get(kind.lower(), name) is None
    # the Python validation names the same field
    paths = [_without_index(e.path) for e in validate_object(manifest)]
    bare = _without_index(field)
    assert any(p == bare or p.startswith(bare + ".") for p in paths), paths


def test_short_names_category_and_printer_columns(namespace: Namespace) -> None:
    namespace.apply(_manifest("BackupRun", "listed", {"policyRef": {"name": "nightly"}}))
    table = namespace.kubectl("get", "br").stdout
    header = table.splitlines()[0].split()
    assert header == ["NAME", "POLICY", "TYPE", "PHASE", "STORED", "PROGRESS", "LOCATION", "AGE"]
    assert table.splitlines()[1].split()[:3] == ["listed", "nightly", "incremental"]
    for model in KINDS.values():
        for short in model.crd.short_names:
            namespace.kubectl("get", short)
    assert (
        "backuprun.safehold.io/listed" in namespace.kubectl("get", "safehold", "-o", "name").stdout
    )


def test_status_subresource_and_kubectl_wait(namespace: Namespace) -> None:
    namespace.apply(_manifest("BackupRun", "waited", {"policyRef": {"name": "p"}}))
    now = datetime.now(UTC).replace(microsecond=0)
    status = BackupRunStatus(
        phase="Succeeded",
        location="primary",
        conditions=[
            Condition(
                type=COMPLETE,
                status="True",
                reason="Succeeded",
                message="1 source backed up",
                last_transition_time=now,
                observed_generation=1,
            )
        ],
        sources=[
            SourceResult(
                name="data",
                kind="volume",
                phase="Succeeded",
                snapshot_id="4f2a",
                bytes_read=1000,
                bytes_stored=400,
                duration_seconds=0.5,
            )
        ],
        bytes_stored=400,
    )
    body = {"status": status.model_dump(mode="json", exclude_none=True)}
    # a change of spec through the status subresource is ignored
    body["spec"] = {"policyRef": {"name": "other"}}
    _patch_status(namespace, "waited", body)
    namespace.kubectl("wait", "--for=condition=Complete", "backuprun/waited", "--timeout=20s")
    stored = namespace.get("backuprun", "waited")
    assert stored is not None
    assert stored["spec"]["policyRef"]["name"] == "p"
    assert BackupRunStatus.model_validate(stored["status"]) == status
    row = namespace.kubectl("get", "backuprun", "waited", "--no-headers").stdout.split()
    assert row[3:5] == ["Succeeded", "400"]


def test_status_is_validated_too(namespace: Namespace) -> None:
    namespace.apply(_manifest("BackupRun", "strict", {"policyRef": {"name": "p"}}))
    result = _patch_status(namespace, "strict", {"status": {"phase": "Done"}}, check=False)
    assert result.returncode != 0
    assert "status.phase" in result.stderr


def _without_index(path: str) -> str:
    return re.sub(r"\[[0-9]+\]", "", path)


def _patch_status(
    namespace: Namespace, name: str, body: dict[str, Any], *, check: bool = True
) -> Any:
    """A merge patch of the status subresource, as the controller will write it."""
    return namespace.kubectl(
        "patch",
        "backuprun",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(body),
        check=check,
    )


def _full_statuses(now: datetime) -> dict[str, Any]:
    """A status for each kind with every field set, as the controller may write them."""
    from safehold.api import (
        BackupLocationStatus,
        BackupPolicyStatus,
        ErrorDetail,
        LocalObjectReference,
        Progress,
        ReplicationResult,
        RestoredItem,
        RestoreRequestStatus,
    )
    from safehold.api.backuppolicy import CheckResult
    from safehold.api.checks import TestRestoreResult, TestRestoreSource, TestRestoreState

    def condition(type_: str, status: Any = "True") -> Condition:
        return Condition(
            type=type_,
            status=status,
            reason="Checked",
            message="all good",
            last_transition_time=now,
            observed_generation=1,
        )

    progress = Progress(
        bytes_done=5, bytes_total=10, files_done=1, percent=50, eta=now, update_time=now
    )
    error = ErrorDetail(reason="PermissionDenied", message="the key may not write: fix its policy")
    return {
        "BackupLocation": BackupLocationStatus(
            observed_generation=1,
            conditions=[condition("Available")],
            phase="Available",
            last_validation_time=now,
            repository_id="5b9e",
            bytes_stored=123,
            snapshot_count=4,
        ),
        "BackupPolicy": BackupPolicyStatus(
            observed_generation=1,
            conditions=[condition("Ready")],
            last_schedule_time=now,
            next_schedule_time=now,
            last_successful_run="p-1",
            last_success_time=now,
            active_runs=[LocalObjectReference(name="p-2")],
            last_verification=CheckResult(time=now, result="Succeeded", message="5% read"),
            last_test_restore=TestRestoreResult(
                time=now,
                result="Failed",
                message="x",
                run="p-1",
                files=3,
                bytes=10,
                duration_seconds=1.5,
                sources=[
                    TestRestoreSource(
                        source="data",
                        kind="volume",
                        run="p-1",
                        snapshot="ab" * 32,
                        job="p-test-data-1",
                        claim="p-test-data-1",
                        result="Failed",
                        reason="RestoreMismatch",
                        message="data: 1 difference(s) from the snapshot: a: missing",
                        files=3,
                        bytes=10,
                        restore_seconds=1.5,
                        completion_time=now,
                    )
                ],
            ),
            test_restore=TestRestoreState(
                last_schedule_time=now, next_schedule_time=now, start_time=now, sources=[]
            ),
        ),
        "BackupRun": BackupRunStatus(
            observed_generation=1,
            phase="PartiallyFailed",
            conditions=[condition(COMPLETE), condition("Failed")],
            location="primary",
            schedule_time=now,
            start_time=now,
            completion_time=now,
            bytes_read=10,
            bytes_stored=4,
            sources=[
                SourceResult(
                    name="data",
                    kind="volume",
                    phase="Succeeded",
                    type="full",
                    job="p-1-data",
                    snapshot_id="aa",
                    parent_snapshot_id="bb",
                    files=3,
                    bytes_read=10,
                    bytes_new=6,
                    bytes_stored=4,
                    duration_seconds=0.25,
                    start_time=now,
                    completion_time=now,
                    warnings=["a file vanished"],
                ),
                SourceResult(name="db", kind="database", phase="Failed", error=error),
            ],
            replication=[
                ReplicationResult(location="dr", phase="Failed", bytes_transferred=0, error=error)
            ],
            progress=progress,
        ),
        "RestoreRequest": RestoreRequestStatus(
            observed_generation=1,
            phase="Running",
            conditions=[condition(COMPLETE, "False")],
            backup_run="p-1",
            start_time=now,
            restored=[
                RestoredItem(
                    source="data",
                    kind="volume",
                    snapshot_id="aa",
                    target="persistentvolumeclaim/ns/data",
                    phase="Running",
                    files=1,
                    bytes=5,
                    skipped=0,
                )
            ],
            warnings=["configmap/x exists: skipped"],
            progress=progress,
        ),
    }


def test_every_status_field_is_accepted(namespace: Namespace) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    examples = _examples()
    for kind, status in _full_statuses(now).items():
        manifest = copy.deepcopy(examples[kind])
        manifest["metadata"].pop("namespace", None)
        namespace.apply(manifest)
        name = manifest["metadata"]["name"]
        body = {"status": status.model_dump(mode="json", exclude_none=True)}
        namespace.kubectl(
            "patch", kind.lower(), name, "--subresource=status", "--type=merge",
            "-p", json.dumps(body),
        )  # fmt: skip
        stored = namespace.get(kind.lower(), name)
        assert stored is not None
        assert type(status).model_validate(stored["status"]) == status, kind


def test_kubectl_explain_shows_the_docstrings(cluster: Cluster) -> None:
    def explained() -> str | None:
        text = cluster.kubectl("explain", "backuppolicies.spec.retention").stdout
        return text if "keepLast" in text else None

    # the apiserver publishes a new CRD's schema a few seconds after creating it
    text = cluster.wait_for(explained, timeout=60, what="keepLast in kubectl explain")
    assert "Keep the newest n snapshots." in " ".join(text.split())


def test_null_means_absent(namespace: Namespace) -> None:
    manifest = _manifest(
        "RestoreRequest",
        "nulls",
        {"backupRunRef": {"name": "r"}, "target": None, "pointInTime": None, "sources": None},
    )
    namespace.kubectl("create", "--validate=false", "-f", "-", input=yaml.safe_dump(manifest))
    stored = namespace.get("restorerequest", "nulls")
    assert stored is not None
    assert stored["spec"]["backupRunRef"] == {"name": "r"}
    assert not {"target", "pointInTime", "sources"} & set(stored["spec"])
    assert validate_object(manifest) == []


def test_kubectl_refuses_a_misspelt_field(namespace: Namespace) -> None:
    manifest = _manifest(
        "BackupPolicy",
        "typo",
        {
            "sources": {"volumes": [{"claimName": "data"}]},
            "location": {"name": "primary"},
            "retention": {"keeplast": 3},
        },
    )
    # kubectl validates against the published OpenAPI (on 1.20 client-side, from 1.27 on the
    # server); the apiserver publishes a new CRD's schema a few seconds after creating it
    namespace.cluster.wait_for(
        lambda: "keepLast" in namespace.kubectl("explain", "backuppolicies.spec.retention").stdout,
        timeout=60,
        what="the BackupPolicy schema in the published OpenAPI",
    )
    result = namespace.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest), check=False)
    assert result.returncode != 0
    assert "unknown field" in result.stderr
    assert "keeplast" in result.stderr
    assert namespace.get("backuppolicy", "typo") is None
    assert [e.path for e in validate_object(manifest)] == ["spec.retention.keeplast"]


_PLACEMENTS: list[dict[str, Any]] = [
    {"tolerations": [{"key": "backup", "operator": "Exists"}]},
    {"tolerations": [{"operator": "Exists"}]},
    {
        "tolerations": [
            {"key": "a", "value": "b", "effect": "NoSchedule"},
            {"key": "c", "value": ""},
        ]
    },
    {
        "tolerations": [
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 600,
            }
        ]
    },
    {"tolerations": [{"key": "backup", "effect": "NoSchedule", "tolerationSeconds": 60}]},
    {"tolerations": [{"key": "backup", "tolerationSeconds": 60}]},
    {"tolerations": [{"value": "yes"}]},
    {"tolerations": [{"key": "backup", "operator": "Exists", "value": "yes"}]},
    {"tolerations": [{"key": "back up", "operator": "Exists"}]},
    {"tolerations": [{"key": "backup", "value": "-yes"}]},
    {"nodeSelector": {"topology.kubernetes.io/zone": "eu-1a", "disk": ""}},
    {"nodeSelector": {"disk type": "ssd"}},
    {"nodeSelector": {"zone": "eu 1"}},
    {"resources": {"requests": {"cpu": "500m", "memory": "1024Mi"}, "limits": {"memory": "1Gi"}}},
    {
        "resources": {
            "requests": {"ephemeral-storage": "1G"},
            "limits": {"ephemeral-storage": "1e9"},
        }
    },
    {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
    {"resources": {"requests": {"cpu": "1001m"}, "limits": {"cpu": 1}}},
    {"resources": {"requests": {"CPU": "1"}}},
    {"resources": {"requests": {"memory": "-1Gi"}}},
    {"priorityClassName": "system-cluster-critical"},
    {"priorityClassName": "Backup_Jobs"},
]


@pytest.mark.parametrize("placement", _PLACEMENTS, ids=lambda p: json.dumps(p)[:60])
def test_a_policy_takes_the_placements_and_resources_a_job_can_be_created_with(
    namespace: Namespace, placement: dict[str, Any]
) -> None:
    """A policy's tolerations, node selector and resources go into its Jobs' pods as
    written: the policy is valid exactly when the apiserver takes a Job with them (else
    every run would fail to start, long after the policy was applied)."""
    spec = {"sources": {"volumes": [{"claimName": "data"}]}, "location": {"name": "primary"}}
    ours = validate_spec("BackupPolicy", {**spec, "job": placement})
    request = JobRequest(
        name="placed",
        namespace=str(namespace),
        component="backup",
        args=["backup", "/data"],
        labels={},
        owner=None,
        mounts=[Mount("source", "/data", {"emptyDir": {}})],
    )
    job = build_job(request)
    pod = job["spec"]["template"]["spec"]
    resources = placement.get("resources")
    pod.update({k: v for k, v in placement.items() if k != "resources"})
    if resources is not None:
        pod["containers"][0]["resources"] = resources  # as the builder writes them
    theirs = namespace.kubectl(
        "create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(job), check=False
    )
    assert (ours == []) == (theirs.returncode == 0), (ours, theirs.stderr)


_TARGETS: list[dict[str, Any]] = [
    {"claimName": "copy", "storageClassName": "fast-ssd", "size": "10Gi"},
    {"claimName": "copy", "storageClassName": "", "size": "500m"},
    {"claimName": "copy", "storageClassName": "Fast_SSD"},
    {"claimName": "copy", "size": "0Gi"},
]


@pytest.mark.parametrize("target", _TARGETS, ids=lambda t: json.dumps(t)[:60])
def test_a_restore_takes_the_targets_a_claim_can_be_created_with(
    namespace: Namespace, target: dict[str, Any]
) -> None:
    """A restore's target claim is created as written: the request is valid exactly when
    the apiserver takes that claim (else the restore would fail on it, after its checks)."""
    spec = {"backupRunRef": {"name": "nightly"}, "target": target}
    ours = validate_spec("RestoreRequest", spec)
    request = RestoreRequest.model_construct(
        metadata=ObjectMeta(name="r", namespace=str(namespace)),
        spec=RestoreRequestSpec.model_construct(
            target=RestoreTarget.model_construct(
                claim_name="copy", storage_class_name=target.get("storageClassName"),
                size=target.get("size"), path="",
            ),
            storage_class_mapping={},
        ),
    )  # fmt: skip
    claim = claim_manifest(request, "copy", "data", None, ClaimShape(size="1Gi"))
    claim["metadata"]["namespace"] = str(namespace)
    theirs = namespace.kubectl(
        "create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(claim), check=False
    )
    assert (ours == []) == (theirs.returncode == 0), (ours, theirs.stderr)


_SELECTORS: list[dict[str, Any]] = [
    {"matchLabels": {"app.kubernetes.io/name": "shop", "tier": ""}},
    {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]},
    {"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]},
    {"matchLabels": {"app name": "shop"}},
    {"matchLabels": {"app": "web shop"}},
    {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["a b"]}]},
]


@pytest.mark.parametrize("selector", _SELECTORS, ids=lambda s: json.dumps(s)[:60])
def test_a_policy_takes_the_selectors_the_apiserver_can_list_by(
    namespace: Namespace, selector: dict[str, Any]
) -> None:
    """A volume source's selector lists claims as the operator writes it: the policy is
    valid exactly when the apiserver takes that listing (else every run would fail on it).
    (`In` with no values is refused too, as a metav1.LabelSelector is, though a listing
    takes `app in ()` and selects nothing: tests/api/test_validation.py.)"""
    spec = {"sources": {"volumes": [{"selector": selector}]}, "location": {"name": "primary"}}
    ours = validate_spec("BackupPolicy", spec)
    written = selector_string(
        LabelSelector.model_construct(
            match_labels=selector.get("matchLabels", {}),
            match_expressions=[
                LabelSelectorRequirement.model_construct(**{"values": [], **e})
                for e in selector.get("matchExpressions", [])
            ],
        )
    )
    query = urllib.parse.urlencode({"labelSelector": written})
    theirs = namespace.kubectl(
        "get", "--raw", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims?{query}",
        check=False,
    )  # fmt: skip
    assert (ours == []) == (theirs.returncode == 0), (ours, written, theirs.stderr)
