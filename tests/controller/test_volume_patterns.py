"""A volume source's include/exclude patterns reach its backup Job as ``safehold backup``
options, and the CLI reads them back exactly (also a pattern that starts with ``-``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from safehold.api import BackupLocation, BackupPolicy, BackupRun
from safehold.cli.main import build_parser
from safehold.controller import backuprun, commands
from safehold.controller.jobs import JobImage
from safehold.controller.limits import Limits
from safehold.controller.sources import RunContext
from safehold.controller.sources.claims import VolumeClaim, resolve_volumes
from safehold.controller.sources.volumes import VolumeSources

INCLUDE = ["db/**", "*.conf"]
EXCLUDE = ["cache/**", "*.tmp", "-odd name"]


def _policy() -> BackupPolicy:
    return BackupPolicy.model_validate(
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "BackupPolicy",
            "metadata": {"name": "pol", "namespace": "shop"},
            "spec": {
                "location": {"name": "loc"},
                "sources": {
                    "volumes": [
                        {"claimName": "data", "include": INCLUDE, "exclude": EXCLUDE},
                        {"claimName": "plain"},
                        {"selector": {"matchLabels": {"app": "web"}}, "exclude": ["tmp"]},
                    ]
                },
            },
        }
    )


def _location() -> BackupLocation:
    return BackupLocation.model_validate(
        {
            "metadata": {"name": "loc", "namespace": "shop"},
            "spec": {
                "provider": "s3",
                "bucket": "backups",
                "credentialsSecretRef": {"name": "s3-creds"},
                "repositoryPasswordSecretRef": {"name": "repo-pw", "key": "pw"},
            },
        }
    )


def _run() -> BackupRun:
    return BackupRun.model_validate(
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "BackupRun",
            "metadata": {"name": "nightly", "namespace": "shop", "uid": "u-1"},
            "spec": {"policyRef": {"name": "pol"}},
        }
    )


class _Kube:
    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []

    def list_pvcs(self, ns: str, selector: str) -> list[dict[str, Any]]:
        return [{"metadata": {"name": "web-1"}}]

    def get_pvc(self, ns: str, name: str) -> dict[str, Any]:
        return {"metadata": {"name": name}, "spec": {"accessModes": ["ReadWriteMany"]}}

    def list_pods(self, ns: str) -> list[dict[str, Any]]:
        return []

    def create_job(self, job: dict[str, Any]) -> None:
        self.jobs.append(job)


def test_resolved_claims_carry_their_sources_patterns() -> None:
    claims = {c.source: c for c in resolve_volumes(_Kube(), _policy())}  # type: ignore[arg-type]
    assert (claims["data"].include, claims["data"].exclude) == (tuple(INCLUDE), tuple(EXCLUDE))
    assert (claims["plain"].include, claims["plain"].exclude) == ((), ())
    assert claims["web-1"].exclude == ("tmp",)
    plain = commands.backup(
        "/v", source="s", host="ns", type="full", run="r", exclude=claims["plain"].exclude
    )
    assert [a for a in plain if a.startswith("--exclude")] == []
    web = commands.backup(
        "/v", source="s", host="ns", type="full", run="r", exclude=claims["web-1"].exclude
    )
    assert [a for a in web if a.startswith("--exclude")] == ["--exclude=tmp"]


def _job_args(claim: VolumeClaim) -> list[str]:
    kube = _Kube()
    rt = SimpleNamespace(
        kube=kube, image=JobImage("safehold:test"), job_settings=lambda job: None, limits=Limits()
    )
    run = _run()
    body = run.model_dump(mode="json", by_alias=True, exclude_none=True)
    ctx = RunContext(rt, body, run, _policy(), _location())  # type: ignore[arg-type]
    volumes = VolumeSources([claim])
    source = backuprun._plan(ctx, {"volume": volumes})[0]
    assert source.warnings == []  # patterns are applied: nothing to warn about
    job = volumes.backup_job(ctx, source)
    assert job is not None
    backuprun._create_backup_job(ctx, source, job)
    (job,) = kube.jobs
    args: list[str] = job["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def test_the_volume_jobs_args_carry_the_patterns_the_cli_reads_back() -> None:
    claims = {c.source: c for c in resolve_volumes(_Kube(), _policy())}  # type: ignore[arg-type]
    args = _job_args(claims["data"])
    assert [a for a in args if a.startswith(("--include", "--exclude"))] == [
        "--include=db/**", "--include=*.conf",
        "--exclude=cache/**", "--exclude=*.tmp", "--exclude=-odd name",
    ]  # fmt: skip
    parsed = build_parser().parse_args(args)
    assert parsed.command == "backup"
    assert parsed.paths == [backuprun.SOURCE_MOUNT]
    assert (parsed.include, parsed.exclude) == (INCLUDE, EXCLUDE)

    plain = build_parser().parse_args(_job_args(claims["plain"]))
    assert (plain.include, plain.exclude) == ([], [])
