"""``safehold dump`` and ``safehold restore-db`` against real PostgreSQL 15 and 18 and MariaDB.

Each round trip loads generated data (a large table, unicode, binary columns, a view, a
function; triggers for MariaDB), dumps it through the CLI as a Job would run it, drops
the database, restores it, and compares every table row for row. The failure cases
(wrong password, server down, tool missing) must name the cause, leave no snapshot, and
never show the password. Each PostgreSQL server gets its own version's tools, as in the image.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testground.databases import (
    DatabaseServer,
    drop_database,
    load_sample_data,
    table_contents,
)

REPO_PASSWORD = "repo password for database tests"

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
    def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "safehold", *args],
            env={**env, **extra_env},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    run("repo", "init")
    return run


def _summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


def _password_file(tmp_path: Path, password: str) -> Path:
    path = tmp_path / "db-password"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return path


def _conn_args(server: DatabaseServer, password_file: Path) -> list[str]:
    return [
        "--db-host",
        server.host,
        "--db-port",
        str(server.port),
        "--db-user",
        server.user,
        "--db-password-file",
        str(password_file),
    ]


def _snapshots(run: Run) -> list[dict[str, Any]]:
    done = run("snapshots", "--json")
    assert done.returncode == 0, done.stderr
    snaps: list[dict[str, Any]] = _summary(done)["snapshots"]
    return snaps


@pytest.mark.parametrize(
    ("engine", "fixture"),
    [
        ("postgresql", "postgres_server"),
        ("postgresql", "postgres18_server"),
        ("mysql", "mariadb_server"),
    ],
)
def test_dump_drop_restore_round_trip(
    engine: str,
    fixture: str,
    request: pytest.FixtureRequest,
    run: Run,
    tmp_path: Path,
) -> None:
    server: DatabaseServer = request.getfixturevalue(fixture)
    db = f"shop_{tmp_path.name[-8:].replace('-', '_')}"
    load_sample_data(server, db, rows=60_000)
    before = table_contents(server, db)
    assert len(before["events"].splitlines()) == 60_000
    pw = _password_file(tmp_path, server.password)
    conn = _conn_args(server, pw)

    done = run(
        "dump", engine, *conn, "--database", db, "--source", "ns/p/db", "--tag", "t=1", "--json"
    )
    assert done.returncode == 0, done.stderr
    doc = _summary(done)
    assert doc["ok"] is True
    assert [s["database"] for s in doc["snapshots"]] == [db]
    assert doc["snapshots"][0]["source"] == f"ns/p/db/db/{db}"
    if engine == "postgresql":  # dumped by the server's own version's pg_dump
        (snap,) = _snapshots(run)
        assert snap["meta"]["database.tools"] == f"postgresql {server.version}"
    assert doc["bytes_read"] > 5_000_000  # the large table went through the pipe
    assert server.password not in done.stdout + done.stderr

    # a restore into the existing database is refused by default, before writing anything
    refused = run("restore-db", engine, *conn, "--source", "ns/p/db", "--json")
    assert refused.returncode == 1
    assert f"database(s) {db} already exist" in _summary(refused)["error"]

    drop_database(server, db)
    done = run("restore-db", engine, *conn, "--source", "ns/p/db", "--tag", "t=1", "--json")
    assert done.returncode == 0, done.stderr
    restored = _summary(done)
    assert [r["database"] for r in restored["restored"]] == [db]
    assert table_contents(server, db) == before

    # overwrite: changes made after the backup are gone again, even with a session still
    # connected to the database (the application did not stop)
    server.sql("DELETE FROM events WHERE id <= 100", db)
    with server.session(db):
        done = run("restore-db", engine, *conn, "--source", "ns/p/db", "--existing", "overwrite")
    assert done.returncode == 0, done.stderr
    assert table_contents(server, db) == before

    # into another database on the same server, the original left alone
    copy = db + "_copy"
    done = run("restore-db", engine, *conn, "--source", "ns/p/db", "--rename-to", copy)
    assert done.returncode == 0, done.stderr
    assert table_contents(server, copy) == before
    drop_database(server, copy)
    drop_database(server, db)


@pytest.mark.parametrize("fixture", ["postgres_server", "postgres18_server"])
def test_postgres_all_databases_with_roles(
    fixture: str, request: pytest.FixtureRequest, run: Run, tmp_path: Path
) -> None:
    """No --database: every database plus the roles (pg_dumpall --globals-only)."""
    server: DatabaseServer = request.getfixturevalue(fixture)
    server.sql("CREATE ROLE app_reader LOGIN PASSWORD 'reader-pw'")
    load_sample_data(server, "alldb_one", rows=1000)
    load_sample_data(server, "alldb_two", rows=1000)
    before = {d: table_contents(server, d) for d in ("alldb_one", "alldb_two")}
    pw = _password_file(tmp_path, server.password)
    conn = _conn_args(server, pw)
    done = run("dump", "postgresql", *conn, "--source", "all", "--json")
    assert done.returncode == 0, done.stderr
    names = [s["database"] for s in _summary(done)["snapshots"]]
    assert names[0] == "globals"
    assert {"alldb_one", "alldb_two", "postgres"} <= set(names)

    drop_database(server, "alldb_one")
    drop_database(server, "alldb_two")
    server.sql("DROP ROLE app_reader")
    done = run(
        "restore-db",
        "postgresql",
        *conn,
        "--source",
        "all",
        "--database",
        "globals",
        "--database",
        "alldb_one",
        "--database",
        "alldb_two",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert server.sql("SELECT rolname FROM pg_roles WHERE rolname = 'app_reader'").strip() == (
        "app_reader"
    )
    for d, contents in before.items():
        assert table_contents(server, d) == contents
        drop_database(server, d)
    server.sql("DROP ROLE app_reader")


@pytest.mark.parametrize("engine", ["postgresql", "mysql"])
def test_wrong_password_fails_without_snapshot(
    engine: str, request: pytest.FixtureRequest, run: Run, tmp_path: Path
) -> None:
    server: DatabaseServer = request.getfixturevalue(
        "postgres_server" if engine == "postgresql" else "mariadb_server"
    )
    wrong = "not-the-password-XYZ"
    conn = _conn_args(server, _password_file(tmp_path, wrong))
    done = run("dump", engine, *conn, "--database", "anything", "--source", "x", "--json")
    assert done.returncode == 1
    error = _summary(done)["error"]
    expected = "password authentication failed" if engine == "postgresql" else "Access denied"
    assert expected in error
    assert "no snapshot was written" in error or "cannot query" in error
    assert wrong not in done.stdout + done.stderr
    assert _snapshots(run) == []
    # the same with all databases (the listing query fails first)
    done = run("dump", engine, *conn, "--source", "x", "--json")
    assert done.returncode == 1
    assert expected in _summary(done)["error"]
    assert wrong not in done.stdout + done.stderr


@pytest.mark.parametrize("engine", ["postgresql", "mysql"])
def test_server_down_fails_without_snapshot(
    engine: str,
    database_server_factory: Callable[[str], DatabaseServer],
    run: Run,
    tmp_path: Path,
) -> None:
    server = database_server_factory(engine)
    conn = _conn_args(server, _password_file(tmp_path, server.password))
    server.stop()
    done = run("dump", engine, *conn, "--database", "gone", "--source", "x", "--json")
    assert done.returncode == 1
    error = _summary(done)["error"]
    assert f"{server.host}:{server.port}" in error or "Connection refused" in error
    expected = "Connection refused" if engine == "postgresql" else "Can't connect"
    assert expected in error
    assert server.password not in done.stdout + done.stderr
    assert _snapshots(run) == []


@pytest.mark.parametrize("engine", ["postgresql", "mysql"])
def test_tool_missing_fails_without_snapshot(
    engine: str, request: pytest.FixtureRequest, run: Run, tmp_path: Path
) -> None:
    server: DatabaseServer = request.getfixturevalue(
        "postgres_server" if engine == "postgresql" else "mariadb_server"
    )
    conn = _conn_args(server, _password_file(tmp_path, server.password))
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    done = run("dump", engine, *conn, "--database", "x", "--source", "x", "--json",
               PATH=str(empty), SAFEHOLD_POSTGRES_TOOLS=str(empty))  # fmt: skip
    assert done.returncode == 1
    tool = "pg_dump" if engine == "postgresql" else "mysqldump"
    error = _summary(done)["error"]
    assert f"{tool} is not installed" in error
    assert "client" in error  # names the package to install
    assert _snapshots(run) == []


def test_a_dump_of_a_15_server_restores_into_an_18_server(
    postgres_server: DatabaseServer, postgres18_server: DatabaseServer, run: Run, tmp_path: Path
) -> None:
    """A major upgrade through a dump: 15's pg_dump made it, 18's pg_restore (the target
    server's own) reads it into the new server, every row equal."""
    db = f"upgrade_{tmp_path.name[-8:].replace('-', '_')}"
    load_sample_data(postgres_server, db, rows=5_000)
    before = table_contents(postgres_server, db)
    old = _conn_args(postgres_server, _password_file(tmp_path, postgres_server.password))
    done = run("dump", "postgresql", *old, "--database", db, "--source", "upgrade/db")
    assert done.returncode == 0, done.stderr
    (snap,) = _snapshots(run)
    assert snap["meta"]["database.tools"] == "postgresql 15"
    new = _conn_args(postgres18_server, _password_file(tmp_path, postgres18_server.password))
    done = run("restore-db", "postgresql", *new, "--source", "upgrade/db")
    assert done.returncode == 0, done.stderr
    assert table_contents(postgres18_server, db) == before
    drop_database(postgres18_server, db)
    drop_database(postgres_server, db)


def test_a_client_older_than_the_server_is_named_in_the_error(
    postgres18_server: DatabaseServer, run: Run, tmp_path: Path
) -> None:
    """An image whose pg_dump is older than the server (PostgreSQL 15's tools, an 18 server):
    the error gives both versions, and nothing is stored."""
    server = postgres18_server
    load_sample_data(server, "newer", rows=10)
    conn = _conn_args(server, _password_file(tmp_path, server.password))
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "15").symlink_to("/usr/lib/postgresql/15")  # an image with 15's tools alone
    done = run("dump", "postgresql", *conn, "--database", "newer", "--source", "old/client",
               "--json", SAFEHOLD_POSTGRES_TOOLS=str(tools))  # fmt: skip
    assert done.returncode == 1
    error = _summary(done)["error"]
    assert "pg_dump of database 'newer'" in error
    assert "server version mismatch" in error
    assert "server version: 18." in error
    assert "pg_dump version: 15." in error
    assert server.password not in done.stdout + done.stderr
    assert _snapshots(run) == []
    drop_database(server, "newer")


def test_dump_failing_after_output_leaves_no_snapshot(
    postgres_server: DatabaseServer, run: Run, tmp_path: Path
) -> None:
    """A tool that streamed data and then exited non-zero: the data is not a snapshot."""
    fake = tmp_path / "bin"
    fake.mkdir()
    script = fake / "pg_dump"
    script.write_text(
        "#!/bin/sh\nhead -c 3000000 /dev/urandom\necho 'lost connection' >&2\nexit 1\n"
    )
    script.chmod(0o755)
    conn = _conn_args(postgres_server, _password_file(tmp_path, postgres_server.password))
    done = run(
        "dump",
        "postgresql",
        *conn,
        "--database",
        "x",
        "--source",
        "x",
        "--json",
        PATH=f"{fake}:{os.environ['PATH']}",
        SAFEHOLD_POSTGRES_TOOLS="/nonexistent",  # the tools from PATH
    )
    assert done.returncode == 1
    error = _summary(done)["error"]
    assert "pg_dump of database 'x'" in error
    assert "exit code 1" in error
    assert "after 3000000 bytes" in error
    assert "lost connection" in error
    assert _snapshots(run) == []


def test_password_is_not_an_argument(postgres_server: DatabaseServer, run: Run) -> None:
    """There is no option that takes a database password."""
    done = run("dump", "postgresql", "--db-host", "h", "--db-user", "u", "--source", "s")
    assert done.returncode == 2
    assert "--db-password-file" in done.stderr
    done = run("dump", "postgresql", "--db-host", "h", "--db-password", "x", "--source", "s")
    assert done.returncode == 2


@pytest.mark.parametrize("engine", ["postgresql", "mysql"])
def test_restore_failures_say_why(
    engine: str,
    database_server_factory: Callable[[str], DatabaseServer],
    run: Run,
    tmp_path: Path,
) -> None:
    """Skip leaves an existing database alone; a server that is down fails with its reason;
    a missing restore tool names the package."""
    server = database_server_factory(engine)
    load_sample_data(server, "keep", rows=100)
    before = table_contents(server, "keep")
    conn = _conn_args(server, _password_file(tmp_path, server.password))
    done = run("dump", engine, *conn, "--database", "keep", "--source", "s")
    assert done.returncode == 0, done.stderr
    server.sql("DELETE FROM customers", "keep")
    changed = table_contents(server, "keep")

    done = run("restore-db", engine, *conn, "--source", "s", "--existing", "skip", "--json")
    assert done.returncode == 0, done.stderr
    doc = _summary(done)
    assert doc["skipped"] == ["keep"]
    assert "keep exists and was left untouched" in doc["warnings"][0]
    assert table_contents(server, "keep") == changed

    empty = tmp_path / "empty-bin"
    empty.mkdir()
    done = run(
        "restore-db", engine, *conn, "--source", "s", "--existing", "overwrite", "--json",
        PATH=str(empty), SAFEHOLD_POSTGRES_TOOLS=str(empty),
    )  # fmt: skip
    assert done.returncode == 1
    tool = "psql" if engine == "postgresql" else "mysql"
    assert f"{tool} is not installed" in _summary(done)["error"]
    assert table_contents(server, "keep") == changed

    done = run("restore-db", engine, *conn, "--source", "nothing-here", "--json")
    assert done.returncode == 1
    assert "no database snapshot under source 'nothing-here'" in _summary(done)["error"]

    server.stop()
    done = run("restore-db", engine, *conn, "--source", "s", "--existing", "overwrite", "--json")
    assert done.returncode == 1
    error = _summary(done)["error"]
    assert f"{server.host}:{server.port}" in error
    assert server.password not in done.stdout + done.stderr
    assert before != changed


def test_mysql_all_databases_leaves_out_system_schemas(
    mariadb_server: DatabaseServer, run: Run, tmp_path: Path
) -> None:
    load_sample_data(mariadb_server, "every_one", rows=100)
    conn = _conn_args(mariadb_server, _password_file(tmp_path, mariadb_server.password))
    done = run("dump", "mysql", *conn, "--source", "all", "--json")
    assert done.returncode == 0, done.stderr
    names = {s["database"] for s in _summary(done)["snapshots"]}
    assert "every_one" in names
    assert not names & {"mysql", "sys", "information_schema", "performance_schema"}
    drop_database(mariadb_server, "every_one")
