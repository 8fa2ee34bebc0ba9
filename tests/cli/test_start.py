"""The entry point starts deriving the key before the commands load (cli/start.py,
docs/performance.md "The key derived while the commands load").

Each test runs the real entry point in a new interpreter (this test process has long
loaded every module), against a real repository in a directory, with the key derivation
wrapped to record when and where it ran: the thread, whether the commands' modules were
loaded yet, and how many derivations the command made.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from safehold.cli import exitcodes

PASSWORD = "start test password"
OTHER_PASSWORD = "another start test password"

#: Runs ``safehold.cli.start.main`` on argv, recording every derivation; prints the exit
#: code and the records as the last line of stderr. With PROBE_HOLD set, the commands'
#: modules load only once a derivation has begun (for at most 10 s), so that whether it
#: began before them does not hang on how soon a loaded machine runs its thread.
PROBE = """
import json, os, sys, threading
from safehold.repo import keys
real = keys._kek
derived = []
begun = threading.Event()
class Hold:
    def find_spec(self, name, path=None, target=None):
        if name == "safehold.cli.main":
            begun.wait(10)
        return None
if os.environ.get("PROBE_HOLD"):
    sys.meta_path.insert(0, Hold())
def kek(password, kdf):
    derived.append({
        "thread": threading.current_thread().name,
        "commands_loaded": "safehold.cli.main" in sys.modules,
        "salt": kdf.salt.hex(),
    })
    begun.set()
    return real(password, kdf)
keys._kek = kek
from safehold.cli.start import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "derived": derived}), file=sys.stderr)
"""


#: Runs the entry point on argv, recording the cyclic collector's state while the command
#: body runs and after it; prints them as the last line of stderr.
GC_PROBE = """
import gc, json, sys
import safehold.cli.main as commands
real = commands._run
seen = {}
def run(func, args, out):
    seen.update(enabled=gc.isenabled(), frozen=gc.get_freeze_count())
    return real(func, args, out)
commands._run = run
from safehold.cli.start import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "after": gc.get_freeze_count(), **seen}), file=sys.stderr)
"""


def _env(repo: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")}
    return {**env, "SAFEHOLD_REPOSITORY": repo.as_uri(), **extra}


def _python(repo: Path, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python argv`` in a new interpreter, against ``repo``."""
    return subprocess.run(
        [sys.executable, *argv],
        env=_env(repo, **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _run(repo: Path, *args: str, **env: str) -> tuple[int, list[dict[str, Any]], str]:
    """(exit code, derivations, stderr) of ``safehold args`` through the entry point."""
    done = _python(repo, "-c", PROBE, *args, **env)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], report["derived"], done.stderr


def _safehold(repo: Path, *args: str, password: str = PASSWORD) -> None:
    done = _python(repo, "-m", "safehold", *args, SAFEHOLD_PASSWORD=password)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    _safehold(repo, "repo", "init", "-q")
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("early\n")
    _safehold(repo, "backup", "-q", str(data))
    return repo


def _salt(key_file: Path) -> str:
    return base64.b64decode(json.loads(key_file.read_bytes())["kdf"]["salt"]).hex()


def test_the_key_is_derived_while_the_commands_load_and_the_open_uses_it(repo: Path) -> None:
    code, derived, err = _run(
        repo, "snapshots", "--json", SAFEHOLD_PASSWORD=PASSWORD, PROBE_HOLD="1"
    )
    assert code == 0, err
    # One derivation, in the early thread, started before the commands' modules loaded;
    # the open took its result instead of deriving again.
    assert derived == [
        {"thread": "early-key", "commands_loaded": False, "salt": derived[0]["salt"]}
    ]


def test_a_password_file_after_the_command_name_starts_it_too(repo: Path, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    code, derived, err = _run(repo, "snapshots", "--password-file", str(secret), PROBE_HOLD="1")
    assert code == 0, err
    assert [(d["thread"], d["commands_loaded"]) for d in derived] == [("early-key", False)]


def test_a_wrong_password_is_derived_once_and_refused(repo: Path) -> None:
    code, derived, err = _run(repo, "snapshots", SAFEHOLD_PASSWORD="not the password at all")
    assert code == exitcodes.WRONG_PASSWORD, err
    assert "opens none of the repository's 1 key(s)" in err
    assert [d["thread"] for d in derived] == ["early-key"]  # the open did not try it again


def test_with_two_keys_the_open_derives_only_what_the_early_key_did_not(
    repo: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other-password"
    other.write_text(OTHER_PASSWORD)
    _safehold(repo, "repo", "key", "add", "-q", "--new-password-file", str(other))
    keys = sorted((repo / "keys").iterdir())
    assert len(keys) == 2
    first = _salt(keys[0])  # of one cost: the early key is the first by name
    for password in (PASSWORD, OTHER_PASSWORD):
        code, derived, err = _run(repo, "snapshots", SAFEHOLD_PASSWORD=password)
        assert code == 0, err
        assert derived[0]["thread"] == "early-key"
        assert derived[0]["salt"] == first
        opened_by_first = len(derived) == 1
        # The early key's result is used when it opens; else the open derives the other
        # key, never the early one again.
        assert len(derived) in (1, 2)
        assert len({d["salt"] for d in derived}) == len(derived)
        assert opened_by_first == (derived[-1]["salt"] == first)


def test_a_command_line_the_early_start_cannot_read_is_reported_by_the_command(
    repo: Path,
) -> None:
    code, derived, err = _run(
        repo, "snapshots", "--limit-upload", "abc", SAFEHOLD_PASSWORD=PASSWORD
    )
    assert code == exitcodes.USAGE
    assert "argument --limit-upload: 'abc' is not a whole number of KiB/s" in err
    assert derived == []


def test_a_command_that_opens_no_repository_still_ends_cleanly(repo: Path) -> None:
    """The derivation started for nothing is waited for before the process exits."""
    code, derived, err = _run(repo, "cache", "--json", SAFEHOLD_PASSWORD=PASSWORD)
    assert code == 0, err
    assert [d["thread"] for d in derived] == ["early-key"]


def test_without_a_password_nothing_is_derived_early(repo: Path) -> None:
    code, derived, err = _run(repo, "snapshots")
    assert code == exitcodes.USAGE, err
    assert "SAFEHOLD_PASSWORD" in err
    assert derived == []


def test_the_early_start_loads_no_command_and_no_storage_for_a_directory(repo: Path) -> None:
    probe = (
        "import json, sys\n"
        "from safehold.cli import context\n"
        "from safehold.cli.start import _start_deriving\n"
        "_start_deriving(['restore', 'latest', '/tmp/nowhere'])\n"
        "print(json.dumps([context._started is not None, sorted(sys.modules)]))\n"
    )
    done = _python(repo, "-c", probe, SAFEHOLD_PASSWORD=PASSWORD)
    assert done.returncode == 0, done.stderr
    started, loaded = json.loads(done.stdout.splitlines()[-1])
    assert started is True
    assert {"safehold.repo.kdf", "safehold.repo.early_key"} <= set(loaded)
    heavy = {"safehold.cli.main", "safehold.repo.repository", "safehold.storage", "zstandard"}
    assert sorted(heavy & set(loaded)) == []


def test_the_command_runs_with_the_collector_on_and_the_start_frozen(repo: Path) -> None:
    """The start's objects are frozen so that the collector never walks them again; the
    command itself runs with the collector on (a mount or the operator runs for days)."""
    done = _python(repo, "-c", GC_PROBE, "snapshots", "--json", SAFEHOLD_PASSWORD=PASSWORD)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["code"] == 0, done.stderr
    assert report["enabled"] is True
    assert report["frozen"] > 10_000  # the loaded modules' functions, classes, dicts
    assert report["after"] > report["frozen"]  # and what the command left, before exit
