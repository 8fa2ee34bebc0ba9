"""The pure parts of replication and location roles: the replication Job's command line and
Secrets, the site checks, the back-off, what an ended Job becomes in status, and the check
command each role runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from safehold.api import BackupLocation
from safehold.api.backuppolicy import SiteReplication
from safehold.controller import commands
from safehold.controller.backuplocation import check_args
from safehold.controller.jobs import JobRequest, build_job
from safehold.controller.replication import (
    MAX_ATTEMPTS,
    _finish,
    backoff,
    site_problem,
)
from safehold.controller.repository import with_repository, with_site
from safehold.controller.sources import policy_prefix
from safehold.controller.status import JobOutcome


def _location(name: str = "primary", **spec: Any) -> BackupLocation:
    return BackupLocation.model_validate(
        {
            "metadata": {"name": name, "namespace": "prod"},
            "spec": {
                "provider": "s3",
                "bucket": "backups",
                "endpoint": "http://s3.local:8333",
                "credentialsSecretRef": {"name": f"{name}-creds"},
                "repositoryPasswordSecretRef": {"name": f"{name}-pw", "key": "pw"},
                **spec,
            },
        }
    )


def _site(**spec: Any) -> BackupLocation:
    base = {
        "provider": "gcs",
        "bucket": "dr",
        "prefix": "prod",
        "endpoint": "http://gcs.local:4443",
        "role": "recovery-site",
    }
    return _location("site", **{**base, **spec})


def test_the_replication_job_opens_both_locations_each_with_its_own_secrets() -> None:
    request = JobRequest(
        name="rep",
        namespace="prod",
        component="replicate",
        args=commands.replicate(policy_prefix("prod", "db")),
        labels={},
        owner=None,
    )
    job = build_job(with_site(with_repository(request, _location()), _site(immutabilityDays=7)))
    pod = job["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[:4] == ["replicate", "--source-prefix", "prod/db/", "--only-newer"]
    assert args[args.index("--repo") + 1] == "s3://backups"
    assert args[args.index("--to") + 1] == "gs://dr/prod"
    assert args[args.index("--to-options-dir") + 1] == "/etc/safehold/site/storage"
    assert args[args.index("--to-password-file") + 1] == "/etc/safehold/site/password/password"
    to_options = [args[i + 1] for i, a in enumerate(args) if a == "--to-option"]
    assert to_options == [
        "endpoint=http://gcs.local:4443",
        "object_lock_mode=governance",
        "object_lock_days=7",
    ]
    secrets = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    assert secrets["storage-options"] == {"secretName": "primary-creds"}
    assert secrets["site-storage-options"] == {"secretName": "site-creds"}
    assert secrets["repository-password"]["secretName"] == "primary-pw"
    assert secrets["site-password"] == {
        "secretName": "site-pw",
        "items": [{"key": "pw", "path": "password"}],
    }
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert all(mounts[name]["readOnly"] for name in secrets)
    # Secrets reach the pod only as files: nothing of them in the environment or args
    assert "secretKeyRef" not in json.dumps(pod["containers"][0]["env"])


def test_a_filesystem_site_is_mounted_apart_from_a_filesystem_primary() -> None:
    primary = _location(
        provider="filesystem",
        bucket=None,
        claimName="repos",
        endpoint=None,
        credentialsSecretRef=None,
    )
    site = _site(
        provider="filesystem",
        bucket=None,
        claimName="dr-repos",
        endpoint=None,
        credentialsSecretRef=None,
    )
    request = JobRequest(
        name="rep",
        namespace="prod",
        component="replicate",
        args=["replicate"],
        labels={},
        owner=None,
    )
    req = with_site(with_repository(request, primary), site)
    claims = {
        m.path: m.volume["persistentVolumeClaim"]["claimName"]
        for m in req.mounts
        if "persistentVolumeClaim" in m.volume
    }
    assert claims == {"/repository": "repos", "/site-repository": "dr-repos"}
    assert "file:///site-repository/prod" in req.args


def test_site_problems_name_the_field_and_what_to_do() -> None:
    primary = _location()
    assert site_problem("replicateTo[0]", "site", _site(), primary) is None
    missing = site_problem("replicateTo[0]", "gone", None, primary)
    assert missing is not None
    assert missing[0] == "SiteNotFound"
    assert "'gone' does not exist" in missing[1]
    wrong_role = site_problem("replicateTo[0]", "site", _site(role="primary"), primary)
    assert wrong_role is not None
    assert wrong_role[0] == "SiteNotRecoverySite"
    assert "role primary" in wrong_role[1]
    assert "recovery-site" in wrong_role[1]
    itself = _location("copy", role="recovery-site")
    same = site_problem("replicateTo[0]", "copy", itself, primary)
    assert same is not None
    assert same[0] == "SiteIsPrimary"
    other_prefix = _location("copy", role="recovery-site", prefix="elsewhere")
    assert site_problem("replicateTo[0]", "copy", other_prefix, primary) is None


def test_backoff_doubles_from_30_seconds_up_to_10_minutes() -> None:
    waits = [backoff(n).total_seconds() for n in range(1, 8)]
    assert waits == [30, 60, 120, 240, 480, 600, 600]


def _ended(state: str, summary: dict[str, Any] | None, code: int = 0) -> JobOutcome:
    from safehold.api import ErrorDetail

    error = None if state == "Succeeded" else ErrorDetail(reason="WrongPassword", message="no key")
    return JobOutcome(
        state=state,  # type: ignore[arg-type]
        summary=summary,
        error=error,
        completion_time="2026-12-04T10:00:00Z",
    )


def test_a_successful_job_records_bytes_snapshots_and_the_sites_newest_time() -> None:
    state = SiteReplication(location="site", run="r1", phase="Running", attempts=1)
    summary = {
        "ok": True,
        "snapshots_copied": 2,
        "total": {"copied_bytes": 1234},
        "site_newest": {"prod/db/a": "2026-12-04T09:00:00Z", "prod/db/b": "2026-12-04T09:30:00Z"},
    }
    assert _finish(state, _ended("Succeeded", summary), "site") == "Succeeded"
    assert state.bytes_transferred == 1234
    assert state.snapshots_copied == 2
    assert state.newest_snapshot_time == datetime(2026, 12, 4, 9, 30, tzinfo=UTC)
    assert state.last_success_time == datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    assert state.message == "copied 2 snapshot(s), 1234 bytes, to site"


def test_a_failed_job_is_retried_later_until_the_attempts_run_out() -> None:
    state = SiteReplication(location="site", run="r1", phase="Running", attempts=1)
    assert _finish(state, _ended("Failed", {"ok": False}), "site") == "Failed"
    assert state.reason == "WrongPassword"
    assert state.next_attempt_time == datetime(2026, 12, 4, 10, 0, 30, tzinfo=UTC)
    assert "replication to site failed: no key" in state.message
    assert "same password" in state.message  # the hint for a site's password
    assert "attempt 1 of 5" in state.message
    state.attempts = MAX_ATTEMPTS
    _finish(state, _ended("Failed", {"ok": False}), "site")
    assert state.next_attempt_time is None
    assert "next successful run catches up" in state.message
    assert state.completion_time is not None
    assert state.completion_time - datetime(2026, 12, 4, 10, tzinfo=UTC) == timedelta(0)


def test_each_role_checks_its_location_with_its_own_command() -> None:
    assert check_args(_location()) == ["repo", "init", "--if-absent"]
    assert check_args(_location(immutabilityDays=30)) == [
        "repo",
        "init",
        "--if-absent",
        "--object-lock-mode",
        "governance",
        "--object-lock-days",
        "30",
    ]
    # once a check of the spec found the repository, later checks must find it again
    assert check_args(_location(immutabilityDays=30), known=True) == ["repo", "info"]
    # a site is never initialised by its check: the first replication creates it
    assert check_args(_site()) == ["repo", "info", "--allow-empty"]
    assert check_args(_site(immutabilityDays=30)) == ["repo", "info", "--allow-empty"]


def test_a_location_check_is_placed_by_the_charts_job_defaults_but_keeps_its_deadline() -> None:
    from safehold.api.jobs import JobSettings
    from safehold.controller.backuplocation import _request
    from safehold.controller.runtime import Runtime

    defaults = JobSettings.model_validate(
        {
            "nodeSelector": {"pool": "backup"},
            "tolerations": [{"key": "backup", "operator": "Exists"}],
            "activeDeadlineSeconds": 7200,
            "backoffLimit": 3,
        }
    )
    rt = Runtime(kube=None, job_defaults=defaults)  # type: ignore[arg-type]
    body = {
        "apiVersion": "safehold.io/v1alpha1",
        "kind": "BackupLocation",
        "metadata": {"name": "site", "namespace": "prod", "uid": "u1", "generation": 2},
    }
    job = build_job(_request(rt, body, _site(), "1700000000"))
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "backup"}
    assert pod["tolerations"] == [{"key": "backup", "operator": "Exists"}]
    assert job["spec"]["activeDeadlineSeconds"] == 300
    assert job["spec"]["backoffLimit"] == 0
    assert pod["containers"][0]["args"][:3] == ["repo", "info", "--allow-empty"]


def test_a_damaged_primary_is_named_by_its_snapshots_not_by_the_whole_report() -> None:
    state = SiteReplication(location="site", run="r1", phase="Running", attempts=1)
    summary = {
        "ok": False,
        "exit_code": 3,
        "snapshots_failed": {"e516df4955bf364a": "tree 383e is in no index"},
        "objects": {"data": {"copied": 10}},
    }
    _finish(state, _ended("Failed", summary), "site")
    assert state.reason == "PrimaryDamaged"
    assert "e516df4955bf: tree 383e is in no index" in state.message
    assert "safehold verify" in state.message
    assert '"objects"' not in state.message
