"""The contract between a Job and the controller, proved with the real ``safehold`` command.

Each command the operator runs is run here as its Job runs it (``--no-cache --json
--termination-log``), on real file repositories. What it wrote to the termination log, the
pod's view of the result, must (1) parse as its model in ``safehold.api.summaries``, (2)
carry every field that model declares (so the controller never reads a key the CLI stopped
writing), and (3) become, through the controller's own readers, the status a user reads: the
same numbers the CLI printed. Before this test, the controller's tests fed it hand-written
summaries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from safehold.api import BackupLocation, SourceResult, checks
from safehold.api.backuplocation import BackupLocationStatus
from safehold.api.backuppolicy import (
    RetentionResult,
    SiteReplication,
    VerificationCheck,
    WalArchiveState,
)
from safehold.api.summaries import (
    BackupHooksSummary,
    BackupSummary,
    ForgetSummary,
    JobSummary,
    PitrCheckSummary,
    ReplicateSummary,
    RepositoryInfoSummary,
    RestoreSummary,
    SnapshotsSummary,
    VerifySummary,
    WalArchiveSummary,
)
from safehold.controller import replication, testrestore, verification, walarchive
from safehold.controller.backuplocation import _record_summary
from safehold.controller.job_hooks import record_job_hooks
from safehold.controller.restoresources import parse_resolved
from safehold.controller.retention import retention_result
from safehold.controller.status import JobOutcome, parse_summary, source_result
from testground.databases import DatabaseServer

PASSWORD = "job contract password"
#: Reported on failure only (``_failed`` in cli/main.py adds them; ``reason`` only for a
#: storage error, its kind).
ON_FAILURE = {"error", "exit_code", "reason"}
#: Keys the termination message's trimming adds (``LIST_truncated``) when it cut a list.
WHEN_CUT = {"snapshots_truncated"}


class Cli:
    """The command as a Job runs it; returns what its termination log holds, parsed."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")},
            "SAFEHOLD_REPOSITORY": (tmp / "repo").as_uri(),
            "SAFEHOLD_PASSWORD": PASSWORD,
        }

    def __call__(self, *args: str, code: int = 0) -> dict[str, Any]:
        log = self.tmp / "termination-log"
        log.unlink(missing_ok=True)
        done = subprocess.run(
            [sys.executable, "-m", "safehold", *args,
             "--no-cache", "--json", "--termination-log", str(log)],
            env=self.env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == code, done.stderr
        doc = parse_summary(log.read_text())
        assert doc is not None, log.read_text()
        return doc


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    args = typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if isinstance(annotation, types.UnionType) or args:
        return [m for a in args for m in _models_in(a)]
    return []


def emits_every_field(model: type[BaseModel], doc: dict[str, Any], where: str = "") -> None:
    """Every field of ``model`` is a key of ``doc``, nested models included."""
    missing = set(model.model_fields) - set(doc) - ON_FAILURE - WHEN_CUT
    assert not missing, f"{model.__name__}{where}: the CLI does not report {sorted(missing)}"
    for name, field in model.model_fields.items():
        for sub in _models_in(field.annotation):
            value = doc.get(name)
            if isinstance(value, dict) and sub is not JobSummary:
                emits_every_field(sub, value, f"{where}.{name}")
            elif isinstance(value, list) and value and isinstance(value[0], dict):
                emits_every_field(sub, value[0], f"{where}.{name}[0]")


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    data = tmp_path / "data"
    (data / "dir").mkdir(parents=True)
    (data / "dir" / "a.txt").write_text("alpha\n" * 2000)
    (data / "b.bin").write_bytes(os.urandom(200_000))
    run = Cli(tmp_path)
    run("repo", "init")
    return run


def test_backup_reports_what_a_runs_source_shows(cli: Cli) -> None:
    # the pod ends well (no retry into a second snapshot); the message says what was missed
    doc = cli("backup", str(cli.tmp / "data"), "/proc/self/mem", "--source", "prod/app/data",
              "--verify", code=0)  # fmt: skip
    assert doc["exit_code"] == 3
    emits_every_field(BackupSummary, doc)
    summary = BackupSummary.model_validate(doc)
    shown = source_result(
        SourceResult(name="data", kind="volume"), JobOutcome("Succeeded", summary=doc)
    )
    assert shown.snapshot_id == summary.snapshot
    assert shown.type == "full"
    assert shown.files == summary.total_files
    assert shown.bytes_read == summary.bytes_read
    assert shown.bytes_stored == summary.bytes_stored
    assert shown.verified is True
    assert shown.error is not None
    assert shown.error.reason == "FilesUnreadable"
    assert shown.warnings[0].startswith("/proc/self/mem: ")


def test_backup_hooks_report_what_a_sources_hooks_show(cli: Cli) -> None:
    doc = cli("backup", str(cli.tmp / "data"), "--pre-hook", "true", "--post-hook", "false",
              code=1)  # fmt: skip
    emits_every_field(BackupHooksSummary, doc)
    source = SourceResult(name="data", kind="volume", phase="Succeeded", snapshot_id="abc")
    record_job_hooks(source, doc)
    assert [(h.phase, h.succeeded) for h in source.hooks] == [("pre", True), ("post", False)]
    assert source.error is not None
    assert source.error.reason == "HookFailed"


def test_restore_reports_what_a_restore_request_shows(cli: Cli) -> None:
    cli("backup", str(cli.tmp / "data"))
    doc = cli("restore", "latest", str(cli.tmp / "out"), "--verify")
    emits_every_field(RestoreSummary, doc)
    summary = RestoreSummary.model_validate(doc)
    assert summary.files == 2
    assert summary.verify is not None
    assert (summary.verify.files, summary.verify.problems_total) == (2, 0)
    assert summary.verify.bytes == summary.bytes_written
    # the restore's own clock, read back included: a test restore's durationSeconds
    assert summary.duration_s is not None
    assert summary.duration_s > 0


def test_forget_and_prune_report_what_the_policys_retention_shows(cli: Cli) -> None:
    for _ in range(3):
        cli("backup", str(cli.tmp / "data"), "--source", "prod/app/data")
    doc = cli("forget", "--source-prefix", "prod/app/", "--keep-last", "1", "--prune",
              "--grace", "0")  # fmt: skip
    emits_every_field(ForgetSummary, doc)
    shown = retention_result(
        RetentionResult(run="r1", result="Running"), JobOutcome("Succeeded", summary=doc)
    )
    assert (shown.result, shown.snapshots_kept, shown.snapshots_forgotten) == ("Succeeded", 1, 2)
    assert shown.bytes_freed == ForgetSummary.model_validate(doc).prune.bytes_freed  # type: ignore[union-attr]


def test_replicate_reports_what_the_policys_replication_shows(cli: Cli) -> None:
    cli("backup", str(cli.tmp / "data"), "--source", "prod/app/data")
    doc = cli("replicate", "--to", (cli.tmp / "site").as_uri(), "--source-prefix", "prod/app/")
    emits_every_field(ReplicateSummary, doc)
    state = SiteReplication(location="site", run="r1", attempts=1)
    assert replication._finish(state, JobOutcome("Succeeded", summary=doc), "site") == "Succeeded"
    assert state.snapshots_copied == 1
    assert state.bytes_transferred == ReplicateSummary.model_validate(doc).total.copied_bytes
    assert state.newest_snapshot_time is not None


def test_verify_reports_what_the_policys_verification_shows(cli: Cli) -> None:
    cli("backup", str(cli.tmp / "data"))
    doc = cli("verify", "--read-data")
    emits_every_field(VerifySummary, doc)
    check = VerificationCheck(location="primary")
    verification._finish(check, JobOutcome("Succeeded", summary=doc))
    assert check.result == "Succeeded"
    assert check.packs_read == VerifySummary.model_validate(doc).packs_read
    pack = next(p for p in (cli.tmp / "repo" / "data").rglob("*") if p.is_file())
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    pack.write_bytes(bytes(raw))
    damaged = cli("verify", "--read-data", code=4)
    emits_every_field(VerifySummary, damaged)
    check = VerificationCheck(location="primary")
    verification._finish(check, JobOutcome("Failed", summary=damaged))
    assert check.result == "Failed"
    assert pack.name[:12] in check.message
    assert "repair index" in check.message


def test_the_location_check_reports_what_a_backup_location_shows(cli: Cli) -> None:
    cli("backup", str(cli.tmp / "data"), "--source", "prod/app/data")
    doc = cli("repo", "info")
    emits_every_field(RepositoryInfoSummary, doc)
    info = RepositoryInfoSummary.model_validate(doc)
    location = BackupLocation.model_validate(
        {"metadata": {"name": "primary", "namespace": "prod"},
         "spec": {"provider": "filesystem", "claimName": "backups",
                  "repositoryPasswordSecretRef": {"name": "pw", "key": "pw"}}}
    )  # fmt: skip
    status = BackupLocationStatus()
    _record_summary(status, location, info)
    assert status.repository_id == info.repository
    assert status.snapshot_count == 1
    assert [s.source for s in status.sources] == ["prod/app/data"]


def test_snapshots_report_what_a_fresh_cluster_restore_resolves(cli: Cli) -> None:
    cli("backup", str(cli.tmp / "data"), "--source", "prod/app/data", "--meta", "kind=volume")
    doc = cli("snapshots", "--source-prefix", "prod/app/", "--latest")
    emits_every_field(SnapshotsSummary, doc)
    resolved = parse_resolved(SnapshotsSummary.model_validate(doc))
    assert [r.source for r in resolved] == ["prod/app/data"]
    assert resolved[0].snapshot_id == SnapshotsSummary.model_validate(doc).snapshots[0].id


def test_a_failed_command_reports_its_error_and_exit_code(cli: Cli) -> None:
    cli.env["SAFEHOLD_PASSWORD"] = "not the password of this repository"
    doc = cli("backup", str(cli.tmp / "data"), code=12)
    failed = JobSummary.model_validate(doc)
    assert (failed.ok, failed.exit_code) == (False, 12)
    assert failed.error
    assert PASSWORD not in json.dumps(doc)


def test_point_in_time_commands_report_what_the_status_shows(
    cli: Cli, database_server_factory: Callable[[str], DatabaseServer]
) -> None:
    server = database_server_factory("postgresql")
    password = cli.tmp / "db-password"
    password.write_text(server.password + "\n")
    conn = ["--db-host", server.host, "--db-port", str(server.port), "--db-user", server.user,
            "--db-password-file", str(password), "--source", "prod/app/pg",
            "--host", "prod"]  # fmt: skip
    first = cli("pg-archive-wal", *conn)
    emits_every_field(WalArchiveSummary, first)
    base = cli("pg-basebackup", *conn)
    shown = source_result(
        SourceResult(name="pg", kind="database"), JobOutcome("Succeeded", summary=base)
    )
    assert shown.snapshot_id == base["snapshot"]
    assert shown.type == "full"
    assert shown.files == 1
    assert shown.bytes_read == base["bytes_read"] > 10_000_000
    doc = cli("pg-archive-wal", *conn)
    state = WalArchiveState(source="pg", result="Running", job="j")
    walarchive.finish(state, JobOutcome("Succeeded", summary=doc))
    assert state.result == "Succeeded"
    assert state.archived_until is not None
    assert state.archived_until.isoformat().replace("+00:00", "Z") == doc["archived_until"]
    assert doc["snapshot"][:12] in (state.message or "")

    pitr = cli("pg-restore-pitr", "--check", "--source", "prod/app/pg")
    emits_every_field(PitrCheckSummary, pitr)
    entry = checks.TestRestoreSource(source="pg", kind="database", run="r", message="pg")
    testrestore.finish_point_in_time(entry, JobOutcome("Succeeded", summary=pitr))
    assert entry.result == "Succeeded", entry
    assert entry.bytes == pitr["bytes"] > 10_000_000
    assert doc["archived_until"] in (entry.message or "")

    # a damaged pack: the check names it, the test restore fails with BackupDamaged
    pack = max((p for p in (cli.tmp / "repo" / "data").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)  # fmt: skip
    raw = bytearray(pack.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    pack.write_bytes(bytes(raw))
    damaged = cli("pg-restore-pitr", "--check", "--source", "prod/app/pg", code=4)
    entry = checks.TestRestoreSource(source="pg", kind="database", run="r", message="pg")
    testrestore.finish_point_in_time(entry, JobOutcome("Failed", summary=damaged))
    assert entry.result == "Failed"
    assert entry.reason == "BackupDamaged"
    assert pack.name[:12] in (entry.message or "")
