"""``safehold restore-db --check`` and ``--scratch`` against real PostgreSQL 15 and MariaDB.

The dumps are made by ``safehold dump`` from generated data. A damaged dump is made the way
it would really be stored: a real dump taken out of the repository (``safehold cat``), cut
short, and backed up again as a database snapshot. A scratch restore must leave no scratch
database behind, whether it succeeds, fails, or is stopped by SIGTERM, and must clean up an
hour-old leftover of a killed run while leaving every other database alone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from safehold.api.summaries import DatabaseTestSummary, DumpCheckSummary, ScratchRestoreSummary
from testground.databases import DatabaseServer, drop_database, load_sample_data, table_contents

REPO_PASSWORD = "repo password for test-restore tests"
ENGINES = ["postgresql", "mysql"]

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SAFEHOLD_", "PG", "MYSQL"))},
        "SAFEHOLD_REPOSITORY": (tmp_path / "repo").as_uri(),
        "SAFEHOLD_PASSWORD": REPO_PASSWORD,
    }


@pytest.fixture
def run(env: dict[str, str]) -> Run:
    def run(
        *args: str, stdin: bytes | None = None, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "safehold", *args],
            env={**env, **extra},
            input=stdin.decode("latin-1") if stdin is not None else None,
            capture_output=True,
            text=True,
            encoding="latin-1",
            timeout=300,
            check=False,
        )
        return done

    assert run("repo", "init").returncode == 0
    return run


def _server(request: pytest.FixtureRequest, engine: str) -> DatabaseServer:
    fixture = "postgres_server" if engine == "postgresql" else "mariadb_server"
    server: DatabaseServer = request.getfixturevalue(fixture)
    return server


def _summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


def _emits_every_field(model: type[BaseModel], doc: dict[str, Any]) -> None:
    """The Job contract: every field of the model the lead's controller reads is reported."""
    assert set(model.model_fields) <= set(doc), sorted(set(model.model_fields) - set(doc))
    for name in ("databases",):
        sub = model.model_fields[name].annotation.__args__[0]  # type: ignore[union-attr]
        for item in doc[name]:
            assert set(sub.model_fields) <= set(item), sorted(set(sub.model_fields) - set(item))


def _conn(server: DatabaseServer, tmp_path: Path) -> list[str]:
    pw = tmp_path / "db-password"
    pw.write_text(server.password + "\n")
    pw.chmod(0o600)
    return ["--db-host", server.host, "--db-port", str(server.port), "--db-user", server.user,
            "--db-password-file", str(pw)]  # fmt: skip


def _scratch_databases(server: DatabaseServer) -> list[str]:
    if server.engine == "postgresql":
        names = server.sql("SELECT datname FROM pg_database")
    else:
        names = server.sql("SHOW DATABASES")
    return sorted(n for n in names.split() if n.startswith("safehold_test_"))


def _dumped(run: Run, server: DatabaseServer, tmp_path: Path, db: str, rows: int = 2000) -> str:
    """``db`` loaded with the sample data and dumped to source ``t``; its snapshot id."""
    load_sample_data(server, db, rows=rows)
    done = run("dump", server.engine, *_conn(server, tmp_path), "--database", db,
               "--source", "t", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    snapshot: str = _summary(done)["snapshots"][0]["snapshot"]
    return snapshot


def _dump_bytes(run: Run, snapshot: str, name: str) -> bytes:
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"safehold-test-dump-{snapshot[:12]}"
    done = run("cat", snapshot, name, "--output", str(out), "--force")
    assert done.returncode == 0, done.stderr
    data = out.read_bytes()
    out.unlink()
    return data


def _store_damaged(run: Run, snapshot: str, db: str, engine: str, keep: int) -> None:
    """The dump of ``snapshot`` cut to ``keep`` bytes, stored as ``db``'s newest dump."""
    name = f"{db}.pgdump" if engine == "postgresql" else f"{db}.sql"
    data = _dump_bytes(run, snapshot, name)
    assert len(data) > keep
    done = run("backup", "--stdin-name", name, "--source", f"t/db/{db}", "--tag",
               f"database={db}", stdin=data[:keep])  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_usage_errors_name_what_is_missing(run: Run) -> None:
    for args, message in [
        (["--check"], "needs --source PREFIX or --snapshot ID"),
        (["--scratch", "--source", "t"], "needs ENGINE (postgresql or mysql) and --db-host"),
        (["mysql", "--scratch", "--source", "t"], "needs --db-host"),
        (["mysql", "--source", "t"], "needs --db-host"),
        (["--snapshot", "abc", "--source", "t"], "--snapshot goes with --check or --scratch"),
        (["--check", "--snapshot", "abc", "--source", "t"], "leave out --source"),
        (["--check", "--source", "t", "--rename-to", "x"], "go with a restore, not a test"),
        (["--check", "--snapshot", "abc", "--host", "h"], "leave out --source, --database"),
        # a server named for --check alone would be ignored: it connects to none
        (["--check", "--source", "t", "--db-host", "db"], "--db-host: --check reads the dumps"),
    ]:
        done = run("restore-db", *args, "--json")
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert message in _summary(done)["error"], args


@pytest.mark.parametrize("engine", ENGINES)
def test_check_passes_on_real_dump_and_fails_on_truncated(
    engine: str, request: pytest.FixtureRequest, run: Run, tmp_path: Path
) -> None:
    server = _server(request, engine)
    db = f"chk_{engine[:2]}_{tmp_path.name[-6:].replace('-', '_')}"
    snapshot = _dumped(run, server, tmp_path, db)

    # no server options at all: the check needs none
    done = run("restore-db", "--check", "--source", "t", "--json")
    assert done.returncode == 0, done.stderr
    check = _summary(done)["check"]
    assert check["ok"] is True
    assert check["error"] is None
    assert check["engine"] == engine
    assert check["tables"] == 3  # customers, blobs, events
    assert check["objects"] >= 10
    assert check["bytes"] > 100_000
    # the dumps' own engine, or none: another is refused, not ignored
    assert run("restore-db", engine, "--check", "--source", "t").returncode == 0
    other = "mysql" if engine == "postgresql" else "postgresql"
    wrong = run("restore-db", other, "--check", "--source", "t", "--json")
    assert wrong.returncode == 2, wrong.stderr
    assert f"the dumps chosen are {engine}, not {other}" in _summary(wrong)["error"]
    human = run("restore-db", "--check", "--snapshot", snapshot[:12])
    assert human.returncode == 0, human.stderr
    assert f"checked {db} (snapshot {snapshot[:12]}, {engine}): {check['bytes']} bytes" in (
        human.stdout
    )
    assert human.stdout.rstrip().endswith("tables: sound")

    # cut inside the data, then (for MySQL) cleanly after the last statement but before the
    # tool's last line: each is the newest dump of the database in turn
    cuts = [check["bytes"] // 2]
    if engine == "mysql":
        whole = _dump_bytes(run, snapshot, f"{db}.sql")
        cuts.append(whole.rindex(b"\n-- Dump completed") + 1)
    else:
        cuts.append(check["bytes"] - 1)
    for keep in cuts:
        _store_damaged(run, snapshot, db, engine, keep)
        done = run("restore-db", "--check", "--source", "t", "--json")
        assert done.returncode == 4, (keep, done.stdout, done.stderr)
        doc = _summary(done)
        assert doc["ok"] is False
        assert doc["exit_code"] == 4
        assert doc["check"]["ok"] is False
        assert doc["check"]["bytes"] == keep
        error = doc["check"]["error"]
        assert error.startswith(f"{db}: ")
        assert error == doc["error"]
        if engine == "postgresql":
            assert "pg_restore" in error
            assert "end of file" in error
        elif keep == cuts[-1]:
            assert "'-- Dump completed'" in error
        assert "incomplete or damaged" in error
    human = run("restore-db", "--check", "--source", "t")
    assert human.returncode == 4
    assert f"tables: DAMAGED: the dump is incomplete or damaged after {cuts[-1]} bytes" in (
        human.stdout
    )
    # the good dump is still checked sound when picked by its id
    done = run("restore-db", "--check", "--snapshot", snapshot, "--json")
    assert done.returncode == 0
    assert _summary(done)["check"]["ok"] is True

    # the repository's copy damaged (a byte flipped in every pack): exit 4, the object named
    for pack in (tmp_path / "repo" / "data").rglob("*"):
        if pack.is_file() and pack.stat().st_size > 4096:
            with pack.open("r+b") as f:
                f.seek(pack.stat().st_size // 2)
                byte = f.read(1)
                f.seek(-1, os.SEEK_CUR)
                f.write(bytes([byte[0] ^ 0xFF]))
    done = run("restore-db", "--check", "--snapshot", snapshot, "--json")
    assert done.returncode == 4, done.stdout + done.stderr
    assert "the repository's copy is damaged: data/" in _summary(done)["check"]["error"]
    drop_database(server, db)


@pytest.mark.parametrize("engine", ENGINES)
def test_scratch_restore_counts_tables_and_drops(
    engine: str, request: pytest.FixtureRequest, run: Run, tmp_path: Path
) -> None:
    server = _server(request, engine)
    db = f"scr_{engine[:2]}_{tmp_path.name[-6:].replace('-', '_')}"
    snapshot = _dumped(run, server, tmp_path, db)
    before = table_contents(server, db)
    conn = _conn(server, tmp_path)

    done = run("restore-db", engine, *conn, "--scratch", "--check", "--source", "t", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = _summary(done)
    assert doc["ok"] is True
    assert doc["check"]["ok"] is True
    scratch = doc["scratch"]
    assert scratch["ok"] is True
    assert scratch["error"] is None
    assert scratch["tables"] == 3
    assert scratch["dropped"] is True
    assert scratch["database"].startswith(f"safehold_test_{snapshot[:8]}_")
    assert scratch["seconds"] > 0
    _emits_every_field(DumpCheckSummary, doc["check"])
    _emits_every_field(ScratchRestoreSummary, scratch)
    parsed = DatabaseTestSummary.model_validate(doc)
    assert parsed.scratch is not None
    assert parsed.scratch.databases[0].tables == 3
    (entry,) = scratch["databases"]
    assert entry["database"] == db
    assert entry["scratch_database"] == scratch["database"]
    assert _scratch_databases(server) == []
    assert table_contents(server, db) == before  # the dumped database is left alone
    assert server.password not in done.stdout + done.stderr
    human = run("restore-db", engine, *conn, "--scratch", "--source", "t")
    assert human.returncode == 0, human.stderr
    assert f"restored {db} (snapshot {snapshot[:12]}) into the scratch database " in human.stdout
    assert ": 3 tables in " in human.stdout
    assert human.stdout.rstrip().endswith("s, dropped")

    # a dump that fails to apply (cut short): the failure is reported, nothing is left
    _store_damaged(run, snapshot, db, engine, keep=(doc["check"]["bytes"] * 2) // 3)
    done = run("restore-db", engine, *conn, "--scratch", "--source", "t", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    doc = _summary(done)
    assert doc["ok"] is False
    assert doc["exit_code"] == 1
    assert doc["scratch"]["ok"] is False
    assert doc["scratch"]["dropped"] is True
    tool = "pg_restore" if engine == "postgresql" else "mysql"
    assert f"{tool} of database '{db}' into 'safehold_test_" in doc["error"]
    assert _scratch_databases(server) == []
    drop_database(server, db)


@pytest.mark.parametrize("engine", ENGINES)
def test_scratch_database_dropped_after_sigterm(
    engine: str, request: pytest.FixtureRequest, env: dict[str, str], run: Run, tmp_path: Path
) -> None:
    """SIGTERM while the restore tool is busy: the scratch database is dropped on the way out.

    The restore tool is held up (a wrapper that never reads its input) so that the signal
    surely arrives mid-restore, with the scratch database created."""
    server = _server(request, engine)
    db = f"sig_{engine[:2]}_{tmp_path.name[-6:].replace('-', '_')}"
    _dumped(run, server, tmp_path, db)
    tool = "pg_restore" if engine == "postgresql" else "mysql"
    real = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / tool).write_text(
        f'#!/bin/sh\ncase "$*" in *safehold_test_*) exec sleep 120;; esac\nexec {real} "$@"\n'
    )
    (fake / tool).chmod(0o755)
    proc = subprocess.Popen(
        [sys.executable, "-m", "safehold", "restore-db", engine, *_conn(server, tmp_path),
         "--scratch", "--source", "t", "--json"],
        env={**env, "PATH": f"{fake}:{os.environ['PATH']}", "SAFEHOLD_POSTGRES_TOOLS": "/none"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _scratch_databases(server):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no scratch database was created"
            time.sleep(0.1)
        time.sleep(0.5)  # the wrapper is running: the restore has begun
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out + err
    assert _summary(subprocess.CompletedProcess([], 130, out, err))["error"] == "interrupted"
    assert _scratch_databases(server) == []
    drop_database(server, db)


@pytest.mark.parametrize("engine", ENGINES)
def test_old_leftover_is_dropped_and_nothing_else(
    engine: str, request: pytest.FixtureRequest, run: Run, tmp_path: Path
) -> None:
    server = _server(request, engine)
    db = f"old_{engine[:2]}_{tmp_path.name[-6:].replace('-', '_')}"
    _dumped(run, server, tmp_path, db, rows=100)
    now = int(time.time())
    old = f"safehold_test_deadbeef_{now - 7200:010d}_a1b2c3"
    busy = f"safehold_test_deadbeef_{now - 7300:010d}_d4e5f6"  # old, but a session is on it
    recent = f"safehold_test_deadbeef_{now - 60:010d}_a1b2c3"  # another run's, still young
    lookalike = "safehold_test_keep_me"  # not a name Safehold makes
    for name in (old, busy, recent, lookalike):
        quoted = f'"{name}"' if engine == "postgresql" else f"`{name}`"
        server.sql(f"CREATE DATABASE {quoted}")
    try:
        with server.session(busy):
            done = run("restore-db", engine, *_conn(server, tmp_path), "--scratch",
                       "--source", "t", "--json")  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        scratch = _summary(done)["scratch"]
        assert scratch["leftovers_dropped"] == [old]
        assert f"dropped the scratch database {old}" in done.stderr
        assert _scratch_databases(server) == sorted([busy, recent, lookalike])
    finally:
        for name in (busy, recent, lookalike):
            drop_database(server, name)
        drop_database(server, db)


def test_scratch_sigterm_mid_statement_on_mariadb(
    mariadb_server: DatabaseServer, env: dict[str, str], run: Run, tmp_path: Path
) -> None:
    """The real mysql client stopped while the server runs the dump's large INSERTs: the
    server's session is ended (KILL) so that the scratch database can be dropped."""
    server = mariadb_server
    db = f"mid_{tmp_path.name[-6:].replace('-', '_')}"
    _dumped(run, server, tmp_path, db, rows=300_000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "safehold", "restore-db", "mysql", *_conn(server, tmp_path),
         "--scratch", "--source", "t", "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        probe = (
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA LIKE "
            "'safehold\\_test\\_%' AND TABLE_NAME = 'events'"
        )
        while server.sql(probe).strip() in ("", "0"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the restore did not reach the large table"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out + err
    assert _scratch_databases(server) == []
    drop_database(server, db)
