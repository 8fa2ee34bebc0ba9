"""The two sides of a backup Job with hooks, as real processes: ``safehold run-hooks`` (the
hooks container: no password, no credentials) and ``safehold backup --hooks-handover`` (the
backup container), handing over through a shared directory; and what each side does when
the other one crashed or tampers with the handover."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from safehold.cli import backup_hooks, hook_container, hooks
from safehold.cli.main import build_parser
from safehold.cli.output import Output

PASSWORD = "hook container password"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")},
        **extra,
    }


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "safehold", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _last_json(text: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
    return doc


@pytest.fixture
def pod(tmp_path: Path) -> dict[str, Any]:
    """A repository, a password file only the backup side is given, a source and a
    handover directory."""
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    password_file = secret_dir / "password"
    password_file.write_text(PASSWORD + "\n")
    repo = (tmp_path / "repo").as_uri()
    env = _env(tmp_path)
    init = subprocess.run(
        [sys.executable, "-m", "safehold", "repo", "init", "--repo", repo,
         "--password-file", str(password_file), "--json"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    src = tmp_path / "data"
    src.mkdir()
    (src / "table.dat").write_text("rows\n" * 100)
    handover = tmp_path / "handover"
    handover.mkdir()
    return {"repo": repo, "password_file": password_file, "src": src, "handover": handover,
            "env": env}  # fmt: skip


def _run_pod(pod: dict[str, Any], hook_args: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both containers side by side; their JSON summaries (backup, hooks)."""
    hooks_proc = _start(
        ["run-hooks", "--handover", str(pod["handover"]), "--json", *hook_args], pod["env"]
    )
    backup = _start(
        ["backup", str(pod["src"]), "--source", "db", "--repo", pod["repo"],
         "--password-file", str(pod["password_file"]), "--json",
         "--hooks-handover", str(pod["handover"]), *hook_args],
        pod["env"],
    )  # fmt: skip
    b_out, _ = backup.communicate(timeout=120)
    h_out, h_err = hooks_proc.communicate(timeout=120)
    assert hooks_proc.returncode == 0, h_err
    return _last_json(b_out), _last_json(h_out)


def test_hooks_run_in_the_other_process_and_their_results_reach_the_summary(
    pod: dict[str, Any],
) -> None:
    marker = pod["handover"].parent / "order.log"
    summary, side = _run_pod(
        pod,
        [
            "--pre-hook", f"echo pre >> {marker}; echo checkpoint written",
            "--pre-hook", f"cat {pod['password_file']} || echo no password here; exit 0",
            "--post-hook", f"echo post >> {marker}",
        ],
    )  # fmt: skip
    assert summary["ok"] is True, summary
    assert len(summary["snapshot"]) == 64
    assert [(h["name"], h["phase"], h["exit_code"], h["ok"]) for h in summary["hooks"]] == [
        ("pre-0", "pre", 0, True),
        ("pre-1", "pre", 0, True),
        ("post-0", "post", 0, True),
    ]
    assert summary["hooks"][0]["output"] == "checkpoint written\n"
    # (here the file is readable: a process is no container; the backup side still scrubs
    # whatever the hooks side reports of the secrets it holds)
    assert PASSWORD not in json.dumps(summary)
    assert marker.read_text() == "pre\npost\n"
    assert [h["name"] for h in side["hooks"]] == ["pre-0", "pre-1", "post-0"]


def test_a_failed_fail_pre_hook_prevents_the_snapshot_and_post_hooks_still_run(
    pod: dict[str, Any],
) -> None:
    summary, _ = _run_pod(
        pod, ["--pre-hook", "echo down >&2; exit 7", "--post-hook", "echo undone"]
    )
    assert summary["ok"] is False
    assert "snapshot" not in summary
    assert summary["error"] == "pre hook pre-0 failed: exit code 7"
    assert [(h["name"], h["ok"], h["output"]) for h in summary["hooks"]] == [
        ("pre-0", False, "down\n"),
        ("post-0", True, "undone\n"),
    ]


def _args(argv: list[str]) -> Any:
    return build_parser().parse_args(argv)


def test_the_backup_side_does_not_wait_forever_for_a_hooks_container_that_never_came(
    pod: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(hooks, "START_GRACE_SECONDS", 0.5)
    args = _args(
        ["backup", str(pod["src"]), "--source", "db", "--repo", pod["repo"],
         "--password-file", str(pod["password_file"]), "--json",
         "--hooks-handover", str(pod["handover"]),
         "--pre-hook", "true", "--post-hook", "true", "--hook-timeout", "0.1"]
    )  # fmt: skip
    started = time.monotonic()
    code = backup_hooks.backup_with_hooks(args, Output(json_mode=True))
    assert time.monotonic() - started < 30
    summary = _last_json(capsys.readouterr().out)
    assert code == 1
    assert "snapshot" not in summary
    pre, post = summary["hooks"]
    assert (pre["name"], pre["timed_out"], pre["ok"]) == ("pre-0", True, False)
    assert "reported no pre hook results" in pre["output"]
    assert (post["name"], post["timed_out"]) == ("post-0", True)
    assert (pod["handover"] / "backup-done.json").is_file()  # told the hooks side anyway


def test_the_hooks_side_runs_the_post_hooks_when_the_backup_container_is_gone(
    pod: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(hooks, "START_GRACE_SECONDS", 0.5)
    monkeypatch.setattr(hooks, "STALE_SECONDS", 0.5)
    handover: Path = pod["handover"]
    # a backup container that beat once, then died (killed, out of memory)
    (handover / "backup-alive.json").write_text(json.dumps({"at": time.time()}))
    args = _args(
        ["run-hooks", "--handover", str(handover), "--json",
         "--pre-hook", "echo pre", "--post-hook", "echo post"]
    )  # fmt: skip
    started = time.monotonic()
    assert hook_container.run_hooks_command(args, Output(json_mode=True)) == 0
    assert time.monotonic() - started < 30
    post = json.loads((handover / "post.json").read_text())
    assert [(h["name"], h["output"]) for h in post["hooks"]] == [("post-0", "post\n")]
    assert "stopped" in capsys.readouterr().err


def test_a_backup_container_that_starts_after_the_post_hooks_ran_makes_no_snapshot(
    pod: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    handover: Path = pod["handover"]
    done = {"hooks": [{"name": "pre-0", "exit_code": 0, "duration_seconds": 0.1,
                       "timed_out": False, "output": ""}]}  # fmt: skip
    (handover / "pre.json").write_text(json.dumps(done))
    (handover / "post.json").write_text(json.dumps({"hooks": []}))
    args = _args(
        ["backup", str(pod["src"]), "--source", "db", "--repo", pod["repo"],
         "--password-file", str(pod["password_file"]), "--json",
         "--hooks-handover", str(handover), "--pre-hook", "true", "--post-hook", "true"]
    )  # fmt: skip
    assert backup_hooks.backup_with_hooks(args, Output(json_mode=True)) == 1
    summary = _last_json(capsys.readouterr().out)
    assert "snapshot" not in summary
    assert summary["hooks"][1]["name"] == "pre-1"
    assert "before the backup started" in summary["hooks"][1]["output"]


def test_a_tampered_handover_is_read_without_following_links_or_echoing_files(
    pod: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hook may write to the handover directory: a link to the password file where the
    backup side reads the pre hook results is no result (and its content goes nowhere)."""
    monkeypatch.setattr(hooks, "START_GRACE_SECONDS", 0.5)
    handover: Path = pod["handover"]
    (handover / "pre.json").symlink_to(pod["password_file"])
    (handover / "post.json").write_text(
        json.dumps({"hooks": [{"exit_code": "0", "output": f"leak {PASSWORD}",
                               "duration_seconds": True, "timed_out": "yes"}]})
    )  # fmt: skip
    args = _args(
        ["backup", str(pod["src"]), "--source", "db", "--repo", pod["repo"],
         "--password-file", str(pod["password_file"]), "--json",
         "--hooks-handover", str(handover), "--pre-hook", "true", "--post-hook", "true",
         "--hook-timeout", "0.1"]
    )  # fmt: skip
    assert backup_hooks.backup_with_hooks(args, Output(json_mode=True)) == 1
    captured = capsys.readouterr()
    assert PASSWORD not in captured.out + captured.err
    summary = _last_json(captured.out)
    pre, post = summary["hooks"][0], summary["hooks"][-1]
    assert (pre["name"], pre["timed_out"]) == ("pre-0", True)
    assert "snapshot" not in summary
    # fields of the wrong type are not taken: no exit code, no time-out, scrubbed output
    assert (post["exit_code"], post["timed_out"], post["duration_seconds"]) == (None, False, 0.0)
    assert post["output"] == "leak ***"


def test_the_heartbeat_stops_with_the_backup(tmp_path: Path) -> None:
    args = _args(["backup", str(tmp_path), "--hooks-handover", str(tmp_path)])
    handover = backup_hooks._Handover(tmp_path, args)
    with handover.heartbeat():
        deadline = time.monotonic() + 5
        while not (tmp_path / "backup-alive.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert json.loads((tmp_path / "backup-alive.json").read_text())["at"] <= time.time()
    assert not [t for t in threading.enumerate() if t.name == "hooks-heartbeat"]


def test_the_hooks_side_still_runs_the_post_hooks_when_the_pod_is_stopped(
    pod: dict[str, Any],
) -> None:
    """SIGTERM (the Job's deadline, the Job deleted) while the backup runs: the post hooks
    still undo what the pre hooks did before the container leaves."""
    handover: Path = pod["handover"]
    (handover / "backup-alive.json").write_text(json.dumps({"at": time.time() + 3600}))
    proc = _start(
        ["run-hooks", "--handover", str(handover), "--json",
         "--pre-hook", "echo frozen", "--post-hook", "echo thawed"],
        pod["env"],
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (handover / "pre.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    post = json.loads((handover / "post.json").read_text())
    assert [(h["name"], h["output"]) for h in post["hooks"]] == [("post-0", "thawed\n")]
    assert "stopped" in err
