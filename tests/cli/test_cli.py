"""The ``safehold`` command as a Job runs it: real processes, exit codes, JSON on the last
stdout line, progress as JSON lines on stderr, and errors that say what to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from safehold.cli.output import fit_summary
from safehold.repo import Repository, RepositoryLock
from safehold.storage import open_storage

PASSWORD = "cli test password"

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")},
        "SAFEHOLD_REPOSITORY": (tmp_path / "repo").as_uri(),
        "SAFEHOLD_PASSWORD": PASSWORD,
    }


@pytest.fixture
def run(env: dict[str, str]) -> Run:
    def run(
        *args: str, input: str | None = None, **extra_env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "safehold", *args],
            env={**env, **extra_env},
            capture_output=True,
            text=True,
            input=input,
            timeout=120,
            check=False,
        )

    return run


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "dir").mkdir(parents=True)
    (root / "dir" / "a.txt").write_text("alpha\n" * 1000)
    (root / "b.bin").write_bytes(os.urandom(300_000))
    return root


def _summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, f"--json prints exactly one line on stdout, got {done.stdout!r}"
    assert len(lines[-1].encode()) < 4096
    doc: dict[str, Any] = json.loads(lines[-1])
    return doc


def test_init_backup_snapshots_restore_verify(run: Run, src: Path, tmp_path: Path) -> None:
    init = run("repo", "init", "--json")
    assert init.returncode == 0, init.stderr
    assert _summary(init)["version"] == 2

    first = run("backup", str(src), "--source", "web", "--tag", "nightly", "--json")
    assert first.returncode == 0, first.stderr
    s1 = _summary(first)
    assert s1["type"] == "full"
    assert s1["source"] == "web"
    assert s1["files_new"] == 2
    for key in (
        "snapshot",
        "parent",
        "files_changed",
        "files_unmodified",
        "bytes_read",
        "bytes_new",
        "bytes_stored",
        "duration_s",
        "errors",
    ):
        assert key in s1
    events = [json.loads(line) for line in first.stderr.splitlines() if line.startswith("{")]
    assert events, "progress events are JSON lines on stderr"
    final = events[-1]
    assert final["event"] == "progress"
    assert final["final"] is True
    assert final["bytes_done"] == s1["bytes_read"]
    assert {"files_done", "files_total", "bytes_total", "rate_bps", "eta_s"} <= set(final)

    (src / "dir" / "a.txt").write_text("changed")
    second = run("backup", str(src), "--source", "web", "--json", "--quiet")
    s2 = _summary(second)
    assert second.stderr == "", "--quiet: no progress lines, even with --json"
    assert (s2["type"], s2["parent"], s2["files_changed"]) == ("incremental", s1["snapshot"], 1)

    listing = run("snapshots", "--source", "web", "--tag", "nightly", "--json")
    snaps = _summary(listing)["snapshots"]
    assert [s["id"] for s in snaps] == [s1["snapshot"]]
    human = run("snapshots")
    assert s1["snapshot"][:12] in human.stdout
    assert "web" in human.stdout

    restored = run("restore", "latest", str(tmp_path / "out"), "--source", "web", "--json")
    assert restored.returncode == 0, restored.stderr
    assert (tmp_path / "out" / "data" / "dir" / "a.txt").read_text() == "changed"
    old = run("restore", s1["snapshot"][:10], str(tmp_path / "old"), "--include", "data/dir")
    assert old.returncode == 0, old.stderr
    assert (tmp_path / "old" / "data" / "dir" / "a.txt").read_text() == "alpha\n" * 1000
    assert not (tmp_path / "old" / "data" / "b.bin").exists()

    verify = run("verify", "--read-data=50%", "--json")
    assert verify.returncode == 0, verify.stderr
    assert _summary(verify)["ok"] is True
    info = run("repo", "info", "--json")
    assert _summary(info)["snapshots"] == 2


def test_backup_with_explicit_time_and_stdin(run: Run, tmp_path: Path) -> None:
    run("repo", "init")
    dump = "CREATE TABLE t (x int);\n" * 5000
    done = run(
        "backup",
        "--stdin-name",
        "db.sql",
        "--source",
        "pg",
        "--time",
        "2026-01-02T03:04:05Z",
        "--json",
        input=dump,
    )
    assert done.returncode == 0, done.stderr
    s = _summary(done)
    assert s["type"] == "stdin"
    assert s["time"].startswith("2026-01-02T03:04:05")
    run("restore", "latest", str(tmp_path / "out"), "--source", "pg")
    assert (tmp_path / "out" / "db.sql").read_text() == dump


def test_an_empty_standard_input_is_an_error_not_a_snapshot(run: Run) -> None:
    """A failed ``pg_dump | safehold backup --stdin-name db.sql`` must not be saved as the
    newest backup of the database."""
    run("repo", "init")
    done = run("backup", "--stdin-name", "db.sql", "--json", input="")
    assert done.returncode == 2
    assert "standard input was empty: no snapshot was saved" in done.stderr
    assert _summary(run("snapshots", "--json"))["snapshots"] == []
    assert _summary(run("verify", "--json"))["ok"] is True


def test_no_repository_exits_10_and_says_how_to_create_one(run: Run) -> None:
    done = run("snapshots", "--json")
    assert done.returncode == 10
    assert "safehold repo init" in done.stderr
    assert _summary(done)["exit_code"] == 10


def test_wrong_password_exits_12_without_showing_it(run: Run, src: Path) -> None:
    run("repo", "init")
    done = run("backup", str(src), SAFEHOLD_PASSWORD="guessing-wrong")
    assert done.returncode == 12
    assert "SAFEHOLD_PASSWORD" in done.stderr
    assert "guessing-wrong" not in done.stderr + done.stdout


def test_password_file_is_read(run: Run, tmp_path: Path) -> None:
    run("repo", "init")
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    assert run("snapshots", "--password-file", str(pw), SAFEHOLD_PASSWORD="").returncode == 0
    pw.write_text("nope\n")
    assert run("snapshots", "--password-file", str(pw)).returncode == 12


def test_unknown_repository_version_exits_13(run: Run, tmp_path: Path) -> None:
    run("repo", "init")
    config = tmp_path / "repo" / "config"
    doc = json.loads(config.read_text())
    doc["version"] = 99
    config.write_text(json.dumps(doc))
    done = run("snapshots")
    assert done.returncode == 13
    assert "version 99" in done.stderr
    assert "upgrade safehold" in done.stderr


def test_an_exclusive_lock_makes_backup_exit_11_and_unlock_clears_stale_ones(
    run: Run, src: Path, tmp_path: Path
) -> None:
    run("repo", "init")
    repo = Repository.open(open_storage((tmp_path / "repo").as_uri()), PASSWORD)
    lock = RepositoryLock(repo, exclusive=True, operation="prune").acquire()
    try:
        done = run("backup", str(src), "--json")
        assert done.returncode == 11
        assert "exclusive lock by prune" in done.stderr
        assert "safehold repo unlock" in done.stderr
    finally:
        lock.release()
    assert run("backup", str(src)).returncode == 0
    unlocked = run("repo", "unlock", "--json")
    summary = _summary(unlocked)
    assert summary.pop("cpu_seconds") > 0  # every summary says what the command cost
    assert summary.pop("peak_memory_bytes") > 0
    assert summary == {"ok": True, "removed": 0, "remaining": 0}


@pytest.mark.parametrize(
    ("args", "env_over", "message"),
    [
        (("snapshots",), {"SAFEHOLD_REPOSITORY": ""}, "--repo URL or set SAFEHOLD_REPOSITORY"),
        (("snapshots",), {"SAFEHOLD_PASSWORD": ""}, "set SAFEHOLD_PASSWORD"),
        (("backup",), {}, "give PATH"),
        (("backup", "/no/such/path"), {}, "/no/such/path: no such file"),
        (("verify", "--read-data=300"), {}, "at most 100"),
        (("snapshots", "--repo", "ftp://x/y"), {}, "unknown scheme"),
        (("backup", "--password", "x"), {}, "unrecognized arguments"),
    ],
)
def test_usage_errors_exit_2_and_say_what_is_missing(
    run: Run, args: tuple[str, ...], env_over: dict[str, str], message: str
) -> None:
    run("repo", "init")
    done = run(*args, **env_over)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


def test_unreadable_files_give_exit_3_and_name_them(run: Run, src: Path) -> None:
    run("repo", "init")
    # /proc/self/mem is a regular file that fails with EIO when read from offset 0
    done = run("backup", str(src), "/proc/self/mem", "--json")
    assert done.returncode == 3, done.stderr
    s = _summary(done)
    assert s["ok"] is False
    assert s["errors"] == 1
    assert s["error_list"][0]["path"] == "/proc/self/mem"
    assert s["files_new"] == 2  # the readable files are saved
    assert "/proc/self/mem" in done.stderr


def test_in_a_job_a_partial_backup_ends_its_pod_well_and_reports_exit_3(
    run: Run, src: Path, tmp_path: Path
) -> None:
    """With --termination-log (a Job) the snapshot is made, so the process exits 0 and the
    Job is not retried into a second snapshot; the message still says exit_code 3."""
    run("repo", "init")
    message = tmp_path / "termination-log"
    done = run("backup", str(src), "/proc/self/mem", "--termination-log", str(message))
    assert done.returncode == 0, done.stderr
    doc = json.loads(message.read_text())
    assert (doc["exit_code"], doc["errors"], doc["ok"]) == (3, 1, False)
    assert doc["error_list"][0]["path"] == "/proc/self/mem"
    assert "/proc/self/mem" in done.stderr
    # a failure that made no snapshot still fails the pod
    done = run("backup", str(tmp_path / "absent"), "--termination-log", str(message))
    assert done.returncode != 0
    assert json.loads(message.read_text())["exit_code"] == done.returncode


def test_verify_reports_damage_with_exit_4(run: Run, src: Path, tmp_path: Path) -> None:
    run("repo", "init")
    run("backup", str(src))
    pack = next((tmp_path / "repo" / "data").rglob("*"))
    while pack.is_dir():
        pack = next(pack.iterdir())
    data = bytearray(pack.read_bytes())
    data[60] ^= 0xFF
    pack.write_bytes(bytes(data))
    done = run("verify", "--read-data", "--json")
    assert done.returncode == 4
    s = _summary(done)
    assert s["ok"] is False
    assert s["damaged_snapshots"] == 1
    assert "damaged" in done.stderr
    restored = run("restore", "latest", str(tmp_path / "out"), "--json")
    assert restored.returncode == 3


def test_keys_add_list_remove(run: Run) -> None:
    run("repo", "init")
    added = run("repo", "key", "add", "--json", SAFEHOLD_NEW_PASSWORD="second password")
    assert added.returncode == 0, added.stderr
    new_id = _summary(added)["key"]
    keys = _summary(run("repo", "key", "list", "--json"))["keys"]
    assert len(keys) == 2
    old_id = next(k["id"] for k in keys if k["current"])
    assert run("snapshots", SAFEHOLD_PASSWORD="second password").returncode == 0
    own = run("repo", "key", "remove", old_id[:12])  # the key this password opens
    assert own.returncode == 1
    assert "is the one your password opened" in own.stderr
    nothing = run("repo", "key", "remove", "zzzz")
    assert nothing.returncode == 1
    assert "no key id begins with 'zzzz'" in nothing.stderr
    removed = run("repo", "key", "remove", old_id[:12], SAFEHOLD_PASSWORD="second password")
    assert removed.returncode == 0, removed.stderr
    assert run("snapshots").returncode == 12
    last = run("repo", "key", "remove", new_id, SAFEHOLD_PASSWORD="second password")
    assert last.returncode == 1
    assert "last key" in last.stderr


def test_a_snapshot_is_found_by_any_unique_id_prefix(run: Run, src: Path, tmp_path: Path) -> None:
    run("repo", "init")
    ids = [_summary(run("backup", str(src), "--json"))["snapshot"] for _ in range(2)]
    assert ids[0] != ids[1]
    short = ids[0][: next(n for n in range(1, 64) if ids[0][:n] != ids[1][:n])]
    restored = run("restore", short, str(tmp_path / "out"), "--json")
    assert restored.returncode == 0, restored.stderr
    assert _summary(restored)["snapshot"] == ids[0]
    missing = run("restore", "ffffzz", str(tmp_path / "never"))
    assert missing.returncode == 1
    assert "no snapshot id begins with 'ffffzz'" in missing.stderr
    assert "longer" not in missing.stderr


def test_latest_of_an_unknown_source_is_a_clear_error(run: Run) -> None:
    run("repo", "init")
    done = run("restore", "latest", "/tmp/never", "--source", "nothing")
    assert done.returncode == 1
    assert "no snapshot of source 'nothing'" in done.stderr


def test_the_json_summary_always_fits_a_termination_message() -> None:
    doc = {
        "ok": False,
        "error_list": [{"path": "/x" * 200, "error": "EIO"}] * 500,
        "damaged": {f"snap{i}": {"files": 1, "paths": ["/y" * 100]} for i in range(200)},
        "snapshot": "a" * 64,
        "time": datetime.now(UTC).isoformat(),
    }
    line = fit_summary(doc)
    assert len(line.encode()) < 4096
    parsed = json.loads(line)
    assert parsed["snapshot"] == "a" * 64
    assert parsed["ok"] is False


def test_help_and_version(run: Run) -> None:
    assert run("--help").returncode == 0
    version = run("--version")
    assert version.returncode == 0
    assert "safehold" in version.stdout
    assert run("backup", "--help").returncode == 0


def test_a_prune_that_keeps_young_packs_says_why_and_how(run: Run, src: Path) -> None:
    """The first prune after a forget usually frees nothing: its packs are younger than the
    grace period. It says so, and names --grace."""
    run("repo", "init")
    run("backup", str(src))
    (src / "b.bin").write_bytes(os.urandom(300_000))
    run("backup", str(src))
    assert run("forget", "--keep-last", "1").returncode == 0
    done = run("prune")
    assert done.returncode == 0, done.stderr
    assert "younger than the grace period" in done.stdout
    assert "--grace MINUTES" in done.stdout


def test_forget_reasons_name_snapshots_by_short_ids(run: Run, src: Path) -> None:
    run("repo", "init")
    ids = []
    for hour in (1, 2):
        done = run("backup", str(src), "--time", f"2026-03-01T0{hour}:00:00Z", "--json")
        ids.append(_summary(done)["snapshot"])
    listed = run("forget", "--keep-daily", "1", "--dry-run")
    assert listed.returncode == 0, listed.stderr
    assert f"the newer {ids[1][:8]} stands for it" in listed.stdout
    assert ids[1] not in listed.stdout  # never the whole 64 characters


def test_snapshot_times_are_shown_in_local_time_with_the_zone(run: Run, src: Path) -> None:
    run("repo", "init")
    run("backup", str(src), "--time", "2026-07-01T10:00:00Z")
    listed = run("snapshots", TZ="Europe/Berlin", COLUMNS="200")
    assert listed.returncode == 0, listed.stderr
    assert "2026-07-01 12:00:00 CEST" in listed.stdout
    as_json = _summary(run("snapshots", "--json", TZ="Europe/Berlin"))
    assert as_json["snapshots"][0]["time"].startswith("2026-07-01T10:00:00")  # UTC in JSON


def test_a_cut_summary_keeps_the_first_problems_of_a_nested_list() -> None:
    """restore --verify's ``verify.problems`` in a full termination message: the first
    problems stay (the operator names them), with the full count."""
    problems = [{"path": f"/volume/dir/file{i:04}.bin", "error": "missing"} for i in range(300)]
    doc = {
        "ok": False,
        "files": 300,
        "verify": {"files": 300, "bytes": 10, "problems_total": 300, "problems": problems},
    }
    parsed = json.loads(fit_summary(doc))
    verify = parsed["verify"]
    assert verify["problems_total"] == 300
    assert verify["problems_truncated"] == 300
    assert 5 <= len(verify["problems"]) < 300
    assert verify["problems"] == problems[: len(verify["problems"])]
    assert len(fit_summary(doc).encode()) <= 4096


def test_no_color_and_NO_COLOR_print_plain_text(run: Run, src: Path, env: dict[str, str]) -> None:
    """A styled terminal table (FORCE_COLOR stands in for a terminal) carries escape
    sequences; --no-color, or NO_COLOR set, prints the same table as plain text."""
    env.pop("NO_COLOR", None)
    run("repo", "init")
    run("backup", str(src))
    styled = run("snapshots", FORCE_COLOR="1")
    assert styled.returncode == 0, styled.stderr
    assert "\x1b[" in styled.stdout
    for plain in (
        run("snapshots", "--no-color", FORCE_COLOR="1"),
        run("snapshots", FORCE_COLOR="1", NO_COLOR="1"),
    ):
        assert plain.returncode == 0, plain.stderr
        assert "\x1b[" not in plain.stdout
        assert str(src) in plain.stdout


def test_the_operator_does_not_start_on_job_defaults_it_cannot_use(run: Run) -> None:
    """Dropping jobDefaults would drop the placement and limits every Job is meant to have:
    the operator stops at once, naming each field (a rolling update keeps the old pod)."""
    defaults = {
        "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}},
        "tolerations": [{"key": "backup", "tolerationSeconds": 60}],
    }
    done = run("operator", "--all-namespaces", SAFEHOLD_JOB_DEFAULTS=json.dumps(defaults))
    assert done.returncode == 2, done.stderr
    assert "SAFEHOLD_JOB_DEFAULTS (the chart's jobDefaults) is not valid" in done.stderr
    assert "jobDefaults.resources.requests.memory: 2Gi is more than the limit of 1Gi" in done.stderr
    assert "jobDefaults.tolerations[0].effect" in done.stderr
    done = run("operator", "--all-namespaces", SAFEHOLD_JOB_DEFAULTS="{not json")
    assert done.returncode == 2
    assert "is not JSON" in done.stderr


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("http://user:secret@proxy.corp:3128", "holds a user or password"),
        ("proxy.corp:3128", "is not a proxy URL"),
    ],
)
def test_the_operator_does_not_start_on_a_job_proxy_it_cannot_use(
    run: Run, value: str, why: str
) -> None:
    done = run("operator", "--all-namespaces", SAFEHOLD_JOB_HTTPS_PROXY=value)
    assert done.returncode == 2, done.stderr
    assert f"SAFEHOLD_JOB_HTTPS_PROXY (the chart's jobProxy) {why}" in done.stderr
    assert "secret" not in done.stderr


def test_a_storage_error_says_its_kind_which_exit_code_1_does_not(run: Run, s3_store: Any) -> None:
    """A denied credential and a missing bucket both exit 1; the summary's reason tells
    them apart (the operator makes it the status error's reason)."""
    url = s3_store.url("no-such-bucket", "repo")
    options = [f"-o{k}={v}" for k, v in s3_store.options.items()]
    missing = run("--repo", url, *options, "repo", "init", "--json")
    assert missing.returncode == 1
    assert (_summary(missing)["reason"], _summary(missing)["ok"]) == ("NotFound", False)
    s3_store.make_bucket("cli-reason")
    wrong = [o for o in options if not o.startswith("-osecret_access_key=")]
    denied = run(
        "--repo", s3_store.url("cli-reason", "repo"), *wrong, "-osecret_access_key=wrong",
        "snapshots", "--json",
    )  # fmt: skip
    assert denied.returncode == 1
    assert _summary(denied)["reason"] == "PermissionDenied"
    # what the operator reads of it (api.summaries), and makes the status error's reason
    from safehold.api.summaries import JobSummary

    assert JobSummary.model_validate(_summary(denied)).reason == "PermissionDenied"
    # not a storage error: no reason, the exit code says it
    assert "reason" not in _summary(run("snapshots", "--json"))
