"""validate_spec: each mistake a user makes is reported at its field, with what to fix."""

from __future__ import annotations

from typing import Any

import pytest

from safehold.api import FieldError, validate_object, validate_spec


def _errors(kind: str, spec: dict[str, Any]) -> dict[str, str]:
    return {e.path: e.message for e in validate_spec(kind, spec)}


def _only_error(kind: str, spec: dict[str, Any], path: str) -> str:
    """The message of the one problem in ``spec``, which must be at ``path``."""
    errors = _errors(kind, spec)
    assert list(errors) == [path], errors
    return errors[path]


def test_the_minimal_specs_are_valid(valid_spec: dict[str, dict[str, Any]]) -> None:
    for kind, spec in valid_spec.items():
        assert validate_spec(kind, spec) == [], kind


def test_bad_cron_names_the_slot(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupPolicy"]
    spec["schedule"]["slots"] = [
        {"cron": "0 3 * * *"},
        {"cron": "61 * * * *"},
        {"cron": "every night"},
        {"cron": "0 0 31 2 *"},
        {"cron": "0 0 * * * *"},
    ]
    errors = _errors("BackupPolicy", spec)
    assert set(errors) == {
        "spec.schedule.slots[1].cron",
        "spec.schedule.slots[2].cron",
        "spec.schedule.slots[3].cron",
        "spec.schedule.slots[4].cron",
    }
    assert "'61 * * * *' is not a valid cron expression" in errors["spec.schedule.slots[1].cron"]
    assert "minute 0-59" in errors["spec.schedule.slots[1].cron"]
    assert "write five fields" in errors["spec.schedule.slots[2].cron"]
    assert "never fires" in errors["spec.schedule.slots[3].cron"]
    assert "write five fields" in errors["spec.schedule.slots[4].cron"]  # seconds field


@pytest.mark.parametrize("macro", ["@hourly", "@daily", "@midnight", "@weekly", "@yearly"])
def test_cron_macros_are_accepted(valid_spec: dict[str, dict[str, Any]], macro: str) -> None:
    spec = valid_spec["BackupPolicy"]
    spec["schedule"]["slots"] = [{"cron": macro, "type": "full"}]
    assert validate_spec("BackupPolicy", spec) == []


def test_unknown_time_zone(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupPolicy"]
    spec["schedule"]["timeZone"] = "Europe/Atlantis"
    assert _errors("BackupPolicy", spec) == {
        "spec.schedule.timeZone": "'Europe/Atlantis' is not a known IANA time zone: write a "
        "name such as UTC, Europe/Berlin or America/New_York"
    }
    spec["schedule"]["timeZone"] = "America/New_York"
    assert validate_spec("BackupPolicy", spec) == []


def test_path_traversal_is_not_a_time_zone(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupPolicy"]
    spec["schedule"]["timeZone"] = "../../etc/passwd"
    assert "spec.schedule.timeZone" in _errors("BackupPolicy", spec)


def test_negative_keep_last(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupPolicy"]
    spec["retention"] = {"keepLast": -1, "keepDaily": 7}
    assert _errors("BackupPolicy", spec) == {
        "spec.retention.keepLast": "Input should be greater than or equal to 0, got -1"
    }


def test_retention_that_keeps_nothing(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupPolicy"]
    spec["retention"] = {"keepLast": 0}
    message = _errors("BackupPolicy", spec)["spec.retention.keepLast"]
    assert "would delete every snapshot" in message
    assert "remove retention to keep everything" in message


def test_bad_keep_within(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupPolicy"]
    spec["retention"] = {"keepWithin": "1 month"}
    message = _errors("BackupPolicy", spec)["spec.retention.keepWithin"]
    assert "such as 30d, 12h or 1y6mo" in message


def test_keep_within_refuses_a_bare_m(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupPolicy"]
    spec["retention"] = {"keepWithin": "90m"}
    message = _errors("BackupPolicy", spec)["spec.retention.keepWithin"]
    assert "'90m' is ambiguous" in message
    assert "write '90mo' for months or '90min' for minutes" in message


def test_unknown_provider(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupLocation"]
    spec["provider"] = "ftp"
    assert _errors("BackupLocation", spec) == {
        "spec.provider": "Input should be 's3', 'gcs', 'azure' or 'filesystem', got 'ftp'"
    }


@pytest.mark.parametrize(
    ("provider", "word"), [("s3", "bucket"), ("gcs", "bucket"), ("azure", "container")]
)
def test_missing_bucket(valid_spec: dict[str, dict[str, Any]], provider: str, word: str) -> None:
    spec = valid_spec["BackupLocation"]
    spec["provider"] = provider
    del spec["bucket"]
    assert _errors("BackupLocation", spec) == {
        "spec.bucket": f"is required for provider {provider}: name the {word} to write to"
    }


def test_filesystem_needs_a_claim_not_a_bucket(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupLocation"]
    spec["provider"] = "filesystem"
    assert "spec.claimName" in _errors("BackupLocation", spec)
    spec["claimName"] = "nfs-backups"
    assert _errors("BackupLocation", spec) == {
        "spec.bucket": "is not used by provider filesystem: remove it"
    }
    del spec["bucket"]
    assert validate_spec("BackupLocation", spec) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("endpoint", "https://minio.example:9000"),
        ("region", "eu-west-1"),
        ("addressingStyle", "path"),
        ("credentialsSecretRef", {"name": "creds"}),
        ("serviceAccountName", "backup-identity"),
        ("caCert", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"),
    ],
)
def test_filesystem_refuses_what_it_would_not_use(
    valid_spec: dict[str, dict[str, Any]], field: str, value: Any
) -> None:
    """A field the provider would ignore is refused: the user must not believe it acts."""
    spec = valid_spec["BackupLocation"]
    spec["provider"] = "filesystem"
    spec["claimName"] = "nfs-backups"
    del spec["bucket"]
    spec[field] = value
    assert _errors("BackupLocation", spec) == {
        f"spec.{field}": "is not used by provider filesystem: remove it"
    }


def test_filesystem_cannot_lock(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupLocation"]
    spec.update(provider="filesystem", claimName="nfs-backups", immutabilityDays=30)
    del spec["bucket"]
    message = _errors("BackupLocation", spec)["spec.immutabilityDays"]
    assert "cannot lock" in message


@pytest.mark.parametrize(("provider", "word"), [("gcs", "bucket"), ("azure", "container")])
def test_region_is_for_s3_only(
    valid_spec: dict[str, dict[str, Any]], provider: str, word: str
) -> None:
    spec = valid_spec["BackupLocation"]
    spec.update(provider=provider, region="europe-west1")
    message = _errors("BackupLocation", spec)["spec.region"]
    assert message.startswith(f"is only used by provider s3: {provider} finds the {word}'s")
    spec["provider"] = "s3"
    assert validate_spec("BackupLocation", spec) == []


def test_max_concurrent_runs_is_for_a_primary(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupLocation"]
    spec.update(role="recovery-site", maxConcurrentRuns=2)
    message = _errors("BackupLocation", spec)["spec.maxConcurrentRuns"]
    assert "no run writes to a recovery site" in message
    spec["role"] = "primary"
    assert validate_spec("BackupLocation", spec) == []


def test_a_restore_target_path_stays_inside_the_claim(
    valid_spec: dict[str, dict[str, Any]],
) -> None:
    spec = valid_spec["RestoreRequest"]
    for path in ("app/restored", "/app/restored", ""):
        spec["target"] = {"claimName": "copy", "path": path}
        assert validate_spec("RestoreRequest", spec) == [], path
    for path in ("..", "app/../../etc", "/../x"):
        spec["target"] = {"claimName": "copy", "path": path}
        message = _errors("RestoreRequest", spec)["spec.target.path"]
        assert "must stay inside the claim" in message, path


def test_missing_password_secret(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupLocation"]
    del spec["repositoryPasswordSecretRef"]
    assert _errors("BackupLocation", spec) == {"spec.repositoryPasswordSecretRef": "is required"}


def test_typo_names_the_field_and_the_known_ones(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupPolicy"]
    spec["retention"]["keeplast"] = 3
    message = _errors("BackupPolicy", spec)["spec.retention.keeplast"]
    assert message.startswith("is not a known field: check its spelling")
    assert "keepLast" in message
    assert "keepWithin" in message


def test_a_string_is_not_a_number(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupPolicy"]
    spec["retention"]["keepLast"] = "3"
    assert _errors("BackupPolicy", spec) == {
        "spec.retention.keepLast": "Input should be a valid integer, got '3'"
    }


def test_volume_needs_claim_name_or_selector(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupPolicy"]
    spec["sources"]["volumes"] = [
        {"claimName": "a"},
        {"claimName": "b", "selector": {"matchLabels": {"app": "b"}}},
        {"include": ["*"]},
    ]
    errors = _errors("BackupPolicy", spec)
    assert set(errors) == {
        "spec.sources.volumes[1].claimName",
        "spec.sources.volumes[2].claimName",
    }
    assert "set exactly one of claimName" in errors["spec.sources.volumes[1].claimName"]


def test_bad_claim_name(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupPolicy"]
    spec["sources"]["volumes"] = [{"claimName": "Data_Volume"}]
    message = _errors("BackupPolicy", spec)["spec.sources.volumes[0].claimName"]
    assert message.startswith("'Data_Volume' is not a Kubernetes object name: lower-case")


@pytest.mark.parametrize(
    ("selector", "field", "says"),
    [
        ({"matchLabels": {"app name": "shop"}}, "matchLabels", "'app name' is not a label key"),
        ({"matchLabels": {"app": "web shop"}}, "matchLabels.app", "is not a label or taint"),
        (
            {"matchExpressions": [{"key": "app", "operator": "In", "values": []}]},
            "matchExpressions[0].values",
            "operator In needs at least one value",
        ),
        (
            {"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]},
            "matchExpressions[0].values",
            "operator Exists takes no values",
        ),
        (
            {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a,b"]}]},
            "matchExpressions[0].values[0]",
            "is not a label or taint value",
        ),
    ],
)
def test_a_selector_the_apiserver_cannot_take_is_refused_at_its_field(
    valid_spec: dict[str, dict[str, Any]], selector: dict[str, Any], field: str, says: str
) -> None:
    """A value with a comma would have been written into the listing as two values, and
    Exists with values listed as if they were not there."""
    spec = valid_spec["BackupPolicy"]
    spec["sources"] = {"volumes": [{"selector": selector}]}
    assert says in _only_error("BackupPolicy", spec, f"spec.sources.volumes[0].selector.{field}")


def test_a_node_selector_takes_label_keys_and_values(
    valid_spec: dict[str, dict[str, Any]],
) -> None:
    spec = valid_spec["BackupPolicy"]
    spec["job"] = {"nodeSelector": {"disk type": "ssd"}}
    message = _only_error("BackupPolicy", spec, "spec.job.nodeSelector")
    assert message.startswith("'disk type' is not a label key")
    spec["job"] = {"nodeSelector": {"topology.kubernetes.io/zone": "eu 1"}}
    message = _only_error("BackupPolicy", spec, "spec.job.nodeSelector.topology.kubernetes.io/zone")
    assert message.startswith("'eu 1' is not a label or taint value")
    spec["job"] = {"nodeSelector": {"topology.kubernetes.io/zone": "eu-1a", "disk": ""}}
    assert validate_spec("BackupPolicy", spec) == []


def test_a_policy_must_back_up_something(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupPolicy"]
    spec["sources"] = {}
    message = _errors("BackupPolicy", spec)["spec.sources.volumes"]
    assert "backs up nothing" in message


def test_source_names_are_unique(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupPolicy"]
    spec["sources"]["databases"] = [
        {
            "name": "data",
            "engine": "postgresql",
            "host": "db",
            "credentialsSecretRef": {"name": "db"},
        }
    ]
    message = _errors("BackupPolicy", spec)["spec.sources.databases[0].name"]
    assert "'data' is already used by volumes[0]" in message


def test_no_source_takes_the_cluster_resources_name(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupPolicy"]
    spec["sources"]["volumes"] = [{"claimName": "resources"}]
    spec["sources"]["clusterResources"] = {"serviceAccountName": "exporter"}
    message = _errors("BackupPolicy", spec)["spec.sources.volumes[0].name"]
    assert "'resources' is already used by clusterResources" in message
    spec["sources"]["volumes"] = [{"claimName": "resources", "name": "app-data"}]
    assert validate_spec("BackupPolicy", spec) == []  # a name of its own settles it


def test_a_selector_source_takes_no_name(valid_spec: dict[str, dict[str, Any]]) -> None:
    """A selector's sources are named after their claims: a name would be ignored."""
    spec = valid_spec["BackupPolicy"]
    spec["sources"]["volumes"] = [{"selector": {"matchLabels": {"app": "web"}}, "name": "web"}]
    message = _errors("BackupPolicy", spec)["spec.sources.volumes[0].name"]
    assert "named after their claims" in message


def test_job_pre_hooks_cannot_prepare_a_snapshot(valid_spec: dict[str, dict[str, Any]]) -> None:
    """The snapshot is taken before the Job (and its hooks) start."""
    spec = valid_spec["BackupPolicy"]
    volume = {"claimName": "data", "snapshot": {}, "hooks": {"preBackup": ["psql -c CHECKPOINT"]}}
    spec["sources"]["volumes"] = [volume]
    message = _errors("BackupPolicy", spec)["spec.sources.volumes[0].hooks.preBackup"]
    assert "spec.hooks.preBackup" in message
    volume["hooks"] = {"postBackup": ["echo done"]}  # after the backup: still meaningful
    assert validate_spec("BackupPolicy", spec) == []


def test_database_engine_and_port(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupPolicy"]
    spec["sources"]["databases"] = [
        {
            "name": "db",
            "engine": "oracle",
            "host": "db",
            "port": 70000,
            "credentialsSecretRef": {"name": "db"},
        }
    ]
    errors = _errors("BackupPolicy", spec)
    assert errors["spec.sources.databases[0].engine"].startswith(
        "Input should be 'postgresql' or 'mysql'"
    )
    assert errors["spec.sources.databases[0].port"] == (
        "Input should be less than or equal to 65535, got 70000"
    )


def test_a_recovery_site_is_not_the_location(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupPolicy"]
    spec["replicateTo"] = [{"name": "dr"}, {"name": "primary"}]
    message = _errors("BackupPolicy", spec)["spec.replicateTo[1].name"]
    assert "'primary' is already the location" in message


def test_bad_concurrency_policy_and_history(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupPolicy"]
    spec.update(concurrencyPolicy="Queue", failedRunsHistoryLimit=-1)
    errors = _errors("BackupPolicy", spec)
    assert errors["spec.concurrencyPolicy"] == (
        "Input should be 'Forbid', 'Allow' or 'Replace', got 'Queue'"
    )
    assert "spec.failedRunsHistoryLimit" in errors


def test_bad_quantity(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupPolicy"]
    spec["job"] = {
        "resources": {"limits": {"cpu": "lots", "memory": "1Gi"}, "requests": {"cpu": 1}}
    }
    assert _errors("BackupPolicy", spec) == {
        "spec.job.resources.limits.cpu": "'lots' is not a quantity: write a number with an "
        "optional suffix, such as 500m (CPU), 2Gi or 512Mi (memory)"
    }


#: Tolerations a pod cannot carry: (the toleration, its field, what the message says).
_BAD_TOLERATIONS: list[tuple[dict[str, Any], str, str]] = [
    (
        {"key": "backup", "effect": "NoSchedule", "tolerationSeconds": 60},
        "effect",
        "tolerationSeconds only applies to NoExecute taints: set effect: NoExecute",
    ),
    ({"key": "backup", "tolerationSeconds": 60}, "effect", "effect: NoExecute"),
    (
        {"value": "yes"},
        "operator",
        "without a key matches every taint only with operator: Exists",
    ),
    ({"key": "backup", "operator": "Exists", "value": "yes"}, "value", "remove value"),
    ({"key": "back up", "operator": "Exists"}, "key", "'back up' is not a taint key"),
    ({"key": "backup", "value": "-yes"}, "value", "'-yes' is not a label or taint value"),
]
#: Resources a container cannot have: (spec.job.resources, the field, what it says).
_BAD_RESOURCES: list[tuple[dict[str, Any], str, str]] = [
    (
        {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}},
        "requests.cpu",
        "2 is more than the limit of 1",
    ),
    (
        {"requests": {"memory": "1025Mi"}, "limits": {"memory": "1Gi"}},
        "requests.memory",
        "limit of 1Gi",
    ),
    ({"requests": {"cpu": "1001m"}, "limits": {"cpu": 1}}, "requests.cpu", "lower the request"),
    ({"requests": {"CPU": "1"}}, "requests", "'CPU' is not a resource a Job's container asks"),
    ({"limits": {"nvidia.com/gpu": 1}}, "limits", "write cpu, memory or ephemeral-storage"),
    ({"requests": {"memory": "-1Gi"}}, "requests.memory", "'-1Gi' is not a quantity"),
    ({"limits": {"memory": -1}}, "limits.memory", "never negative"),
]
_BAD_JOBS = [
    *(
        ({"tolerations": [{"key": "ok", "operator": "Exists"}, t]}, f"tolerations[1].{f}", says)
        for t, f, says in _BAD_TOLERATIONS
    ),
    *(({"resources": r}, f"resources.{f}", says) for r, f, says in _BAD_RESOURCES),
]


@pytest.mark.parametrize(("job", "field", "says"), _BAD_JOBS)
def test_job_settings_a_pod_cannot_have_are_refused_at_their_field(
    valid_spec: dict[str, dict[str, Any]], job: dict[str, Any], field: str, says: str
) -> None:
    """The apiserver refuses a Job whose pod has such a toleration or such resources: the
    policy says so first, naming the field (tests/api/test_apiserver.py compares with the
    apiserver)."""
    spec = valid_spec["BackupPolicy"]
    spec["job"] = job
    assert says in _only_error("BackupPolicy", spec, f"spec.job.{field}")


def test_requests_are_compared_with_limits_by_amount(
    valid_spec: dict[str, dict[str, Any]],
) -> None:
    spec = valid_spec["BackupPolicy"]
    spec["job"] = {
        "resources": {
            "requests": {"cpu": "500m", "memory": "1024Mi", "ephemeral-storage": "1G"},
            "limits": {"cpu": "0.5", "memory": "1Gi", "ephemeral-storage": "1e9"},
        }
    }
    assert validate_spec("BackupPolicy", spec) == []


def test_a_restore_target_takes_a_class_and_size_a_claim_can_have(
    valid_spec: dict[str, dict[str, Any]],
) -> None:
    spec = valid_spec["RestoreRequest"]
    spec["target"] = {"claimName": "copy", "storageClassName": "Fast_SSD"}
    errors = _errors("RestoreRequest", spec)
    assert errors["spec.target.storageClassName"].startswith(
        "'Fast_SSD' is not a StorageClass name"
    )
    for size in (0, "0Gi"):
        spec["target"] = {"claimName": "copy", "size": size}
        assert _errors("RestoreRequest", spec) == {
            "spec.target.size": "a claim holds more than nothing: write a size such as 10Gi"
        }
    spec["target"] = {"claimName": "copy", "storageClassName": "", "size": "10Gi"}
    spec["storageClassMapping"] = {"gp2": "GP3"}
    assert list(_errors("RestoreRequest", spec)) == ["spec.storageClassMapping.gp2"]


def test_empty_schedule(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupPolicy"]
    spec["schedule"]["slots"] = []
    assert "spec.schedule.slots" in _errors("BackupPolicy", spec)


def test_backup_run_type(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupRun"]
    spec["type"] = "snapshot"
    assert _errors("BackupRun", spec) == {
        "spec.type": "Input should be 'full', 'incremental' or 'differential', got 'snapshot'"
    }


def test_restore_needs_exactly_one_origin(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["RestoreRequest"]
    spec["policyRef"] = {"name": "daily"}
    assert "set exactly one of backupRunRef" in _errors("RestoreRequest", spec)["spec.backupRunRef"]
    assert "spec.backupRunRef" in _errors("RestoreRequest", {})


def test_point_in_time_needs_a_policy(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["RestoreRequest"]
    spec["pointInTime"] = "2026-11-25T22:00:00Z"
    assert "only works with policyRef" in _errors("RestoreRequest", spec)["spec.pointInTime"]
    del spec["backupRunRef"]
    spec["policyRef"] = {"name": "daily"}
    assert validate_spec("RestoreRequest", spec) == []
    spec["pointInTime"] = "yesterday"
    assert "spec.pointInTime" in _errors("RestoreRequest", spec)


def test_restore_policy_enum(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["RestoreRequest"]
    spec["existingResourcePolicy"] = "Merge"
    assert _errors("RestoreRequest", spec) == {
        "spec.existingResourcePolicy": "Input should be 'Skip', 'Overwrite' or 'Fail', got 'Merge'"
    }


def test_every_problem_is_reported_at_once(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupPolicy"]
    spec["schedule"] = {"timeZone": "Nowhere", "slots": [{"cron": "bad"}]}
    spec["retention"] = {"keepLast": -2}
    assert len(validate_spec("BackupPolicy", spec)) == 3


def test_unknown_kind_and_non_mapping() -> None:
    with pytest.raises(ValueError, match="unknown kind 'Backup': Safehold's kinds are"):
        validate_spec("Backup", {})
    assert validate_spec("BackupRun", None) == [
        FieldError("spec", "must be a mapping of fields, got null")
    ]


def test_validate_object_checks_kind_and_spec() -> None:
    assert [str(e) for e in validate_object({"kind": "Backup"})] == [
        "kind: 'Backup' is not a Safehold kind: use one of BackupLocation, BackupPolicy, "
        "BackupRun, RestoreRequest"
    ]
    assert [
        str(e) for e in validate_object({"apiVersion": "safehold.io/v1alpha1", "kind": "BackupRun"})
    ] == ["spec: is required"]
    errors = validate_object(
        {"apiVersion": "safehold.io/v1", "kind": "BackupRun", "spec": {"policyRef": {}}}
    )
    assert [e.path for e in errors] == ["apiVersion", "spec.policyRef.name"]


def test_status_is_not_validated_as_input() -> None:
    obj = {
        "apiVersion": "safehold.io/v1alpha1",
        "kind": "BackupRun",
        "metadata": {"name": "r", "resourceVersion": "7", "managedFields": []},
        "spec": {"policyRef": {"name": "p"}},
        "status": {"whatever": True},
    }
    assert validate_object(obj) == []


def test_provider_specific_fields(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupLocation"]
    spec["addressingStyle"] = "path"
    assert validate_spec("BackupLocation", spec) == []
    spec["provider"] = "gcs"
    assert _errors("BackupLocation", spec) == {
        "spec.addressingStyle": "is only used by provider s3, not gcs"
    }
    del spec["addressingStyle"]
    spec["claimName"] = "nfs"
    assert _errors("BackupLocation", spec) == {
        "spec.claimName": "is only used by provider filesystem, not gcs"
    }


def test_null_is_the_same_as_absent(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupPolicy"]
    spec.update(retention=None, replicateTo=None, hooks=None)
    spec["sources"]["databases"] = None
    assert validate_spec("BackupPolicy", spec) == []
    spec["location"] = None
    assert _errors("BackupPolicy", spec) == {"spec.location": "is required"}


def test_an_empty_path_pattern_names_its_place(valid_spec: dict[str, dict[str, Any]]) -> None:
    spec = valid_spec["BackupPolicy"]
    spec["sources"]["volumes"][0]["exclude"] = ["*.tmp", ""]
    errors = _errors("BackupPolicy", spec)
    assert list(errors) == ["spec.sources.volumes[0].exclude[1]"]
    assert "at least 1 character" in errors["spec.sources.volumes[0].exclude[1]"]
