"""The shared helpers that put a location's repository and a policy's spec.job into a Job
request, and read the last JSON object of a Job's output."""

from __future__ import annotations

from safehold.api import BackupLocation
from safehold.api.jobs import JobSettings
from safehold.controller.jobs import JobRequest, Mount, build_job, with_settings
from safehold.controller.progress import last_progress_event
from safehold.controller.repository import repository_access, with_repository
from safehold.controller.status import last_json_object, parse_summary


def _location(**spec: object) -> BackupLocation:
    return BackupLocation.model_validate(
        {
            "metadata": {"name": "loc", "namespace": "prod"},
            "spec": {
                "provider": "s3",
                "bucket": "backups",
                "credentialsSecretRef": {"name": "s3-creds"},
                "repositoryPasswordSecretRef": {"name": "repo-pw", "key": "pw"},
                **spec,
            },
        }
    )


def _request(**fields: object) -> JobRequest:
    base: dict[str, object] = {
        "name": "job",
        "namespace": "prod",
        "component": "backup",
        "args": ["backup", "/data"],
        "labels": {},
        "owner": None,
        "mounts": [Mount("source", "/data", {"emptyDir": {}})],
    }
    return JobRequest(**{**base, **fields})  # type: ignore[arg-type]


def test_with_repository_appends_the_locations_arguments_mounts_and_secrets() -> None:
    location = _location()
    access = repository_access(location)
    req = with_repository(_request(), location)
    assert list(req.args) == ["backup", "/data", *access.args]
    assert [m.name for m in req.mounts] == ["source"]
    assert req.credentials_secret == "s3-creds"
    assert req.password_secret == "repo-pw"
    assert req.password_key == "pw"


def test_with_repository_adds_a_filesystem_claim_after_the_requests_mounts() -> None:
    location = _location(
        provider="filesystem", claimName="repo-claim", bucket=None, credentialsSecretRef=None
    )
    req = with_repository(_request(), location)
    assert [m.name for m in req.mounts] == ["source", "repository"]


def test_with_settings_without_settings_keeps_the_request() -> None:
    req = _request(active_deadline_seconds=3600)
    assert with_settings(req, None) is req


def test_with_settings_applies_the_policys_job_settings() -> None:
    settings = JobSettings.model_validate(
        {
            "resources": {"requests": {"cpu": "500m"}},
            "backoffLimit": 3,
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [{"key": "backup", "operator": "Exists"}],
            "priorityClassName": "low",
        }
    )
    req = with_settings(_request(active_deadline_seconds=7200), settings)
    assert req.resources == {"requests": {"cpu": "500m"}}
    assert req.active_deadline_seconds == 7200  # the request's own when the policy sets none
    assert req.backoff_limit == 3
    assert req.node_selector == {"disk": "ssd"}
    assert req.tolerations == [{"key": "backup", "operator": "Exists"}]
    assert req.priority_class_name == "low"


def test_with_settings_deadline_and_empty_resources() -> None:
    settings = JobSettings.model_validate({"activeDeadlineSeconds": 60, "resources": {}})
    req = with_settings(_request(), settings)
    assert req.active_deadline_seconds == 60
    assert req.resources is None
    assert req.backoff_limit == 1


def test_last_json_object_skips_text_and_unwanted_objects() -> None:
    text = 'start\n{"ok": true, "n": 1}\n{"event": "progress"}\nnot {json\n{broken\n'
    assert last_json_object(text, lambda d: "ok" in d) == {"ok": True, "n": 1}
    assert last_json_object(text, lambda d: d.get("event") == "progress") == {"event": "progress"}
    assert last_json_object(text, lambda d: "missing" in d) is None
    assert last_json_object("", lambda d: True) is None


def test_summary_and_progress_read_the_last_matching_line() -> None:
    log = '{"event": "progress", "bytes_done": 1}\n{"event": "progress", "bytes_done": 2}\n'
    assert last_progress_event(log) == {"event": "progress", "bytes_done": 2}
    assert parse_summary(None) is None
    assert parse_summary('{"ok": false, "error": "x"}\ntail') == {"ok": False, "error": "x"}


def test_every_field_of_a_toleration_reaches_the_pod_tolerationseconds_too() -> None:
    """Every field of a toleration is carried to the Job's pod, tolerationSeconds too (the
    CRD accepts it; a NoExecute taint evicts the pod after that long, not at once)."""
    toleration = {
        "key": "node.kubernetes.io/unreachable",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 600,
    }
    settings = JobSettings.model_validate({"tolerations": [toleration]})
    job = build_job(with_settings(_request(), settings))
    assert job["spec"]["template"]["spec"]["tolerations"] == [toleration]
