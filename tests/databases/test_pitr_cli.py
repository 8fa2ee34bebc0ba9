"""PostgreSQL point-in-time recovery through the CLI, against real PostgreSQL 15 servers
(the restore to a moment and the new timeline also against PostgreSQL 18), with PostgreSQL
18's client tools as in the image.

The archive and the base backup run as a user with only ``LOGIN REPLICATION`` (what the
docs ask for). A restore writes a data directory; the test starts a real server on it,
waits until it has recovered and promoted itself, and compares the rows with what the
source held at the time restored to: rows committed after it must be absent, rows
before it present. The failure cases (a time the archive does not reach, a storage
failure in the middle of a drain, WAL lost on the server) must say so and lose nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testground.console_docs import run_session, session_env, sessions
from testground.databases import DatabaseServer, private_dir, run_postgres, start_standby

REPO_PASSWORD = "repo password for pitr tests"
ARCHIVER = "archiver"
ARCHIVER_PASSWORD = "arch:ive\\r's pass"

Run = Callable[..., subprocess.CompletedProcess[str]]
SESSIONS = sessions("databases.md", "## Point-in-time recovery (PostgreSQL)")


@pytest.fixture
def source(
    request: pytest.FixtureRequest, database_server_factory: Callable[..., DatabaseServer]
) -> DatabaseServer:
    """The server archived: PostgreSQL 15, or the version a test parametrizes it with."""
    server = database_server_factory("postgresql", getattr(request, "param", "15"))
    quoted = ARCHIVER_PASSWORD.replace("'", "''")
    server.sql(f"CREATE ROLE {ARCHIVER} LOGIN REPLICATION PASSWORD '{quoted}'")
    server.sql("CREATE DATABASE shop")
    server.sql("CREATE TABLE orders (id int PRIMARY KEY, note text)", "shop")
    server.sql(
        "INSERT INTO orders SELECT g, 'before the base backup' FROM generate_series(1, 1000) g",
        "shop",
    )
    return server


@pytest.fixture
def run(tmp_path: Path, source: DatabaseServer) -> Run:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SAFEHOLD_", "PG"))},
        "SAFEHOLD_REPOSITORY": (tmp_path / "repo").as_uri(),
        "SAFEHOLD_PASSWORD": REPO_PASSWORD,
    }
    password = tmp_path / "db-password"
    password.write_text(ARCHIVER_PASSWORD + "\n")
    server = ["--db-host", source.host, "--db-port", str(source.port), "--db-user", ARCHIVER,
              "--db-password-file", str(password), "--source", "prod/shop-db"]  # fmt: skip

    def run(*args: str, at: DatabaseServer | None = None) -> subprocess.CompletedProcess[str]:
        """``safehold ARGS``; the server commands against ``at`` (default: ``source``)."""
        extra = server if args[0] in ("pg-archive-wal", "pg-basebackup") else []
        if at is not None:
            extra = [*extra, "--db-host", at.host, "--db-port", str(at.port)]
        done = subprocess.run(
            [sys.executable, "-m", "safehold", *args, *extra, "--json"],
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert ARCHIVER_PASSWORD not in done.stdout + done.stderr
        return done

    assert run("repo", "init").returncode == 0
    return run


def _summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.stdout, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


def _ok(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stdout + done.stderr
    return _summary(done)


def _value(server: DatabaseServer, statement: str) -> str:
    return server.sql(statement).strip()


def _now(server: DatabaseServer) -> str:
    return _value(
        server,
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )


def _orders(server: DatabaseServer) -> list[str]:
    return server.sql("SELECT id || ':' || note FROM orders ORDER BY id", "shop").splitlines()


def _started(data: Path) -> DatabaseServer:
    """A server on the restored ``data``, once it has recovered and promoted itself."""
    root = private_dir("safehold-pitr-", "postgres" if os.geteuid() == 0 else None)
    os.rename(data, root / "data")  # under a directory the postgres user may enter
    try:
        server = run_postgres(root, root / "data")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    deadline = time.monotonic() + 60
    while _value(server, "SELECT pg_is_in_recovery()") != "f":
        if time.monotonic() > deadline:
            log = server.log.read_text()[-3000:]
            server.stop()
            pytest.fail(f"the restored server did not finish its recovery:\n{log}")
        time.sleep(0.2)
    return server


@pytest.fixture
def restored(run: Run, tmp_path: Path) -> Iterator[Callable[..., DatabaseServer]]:
    """Restore with ``pg-restore-pitr`` into a new directory and start a server on it,
    once it has recovered; the directory of ``safehold-wal/`` and ``recovery.signal``
    must be gone then (PostgreSQL's ``recovery_end_command`` and promotion)."""
    servers: list[DatabaseServer] = []

    def restore(*args: str) -> DatabaseServer:
        data = tmp_path / f"restored-{len(servers)}"
        _ok(run("pg-restore-pitr", "--source", "prod/shop-db", *args, str(data)))
        server = _started(data)
        servers.append(server)
        assert not (server.directory / "data" / "safehold-wal").exists()
        assert not (server.directory / "data" / "recovery.signal").exists()
        return server

    yield restore
    for server in servers:
        server.stop()


@pytest.mark.parametrize("source", ["15", "18"], indirect=True)
def test_restore_to_a_second_and_to_the_end_of_the_archive(
    source: DatabaseServer, run: Run, restored: Callable[..., DatabaseServer]
) -> None:
    first = _ok(run("pg-archive-wal"))
    assert first["slot_created"] is True
    base = _ok(run("pg-basebackup"))
    assert base["start_lsn"]
    assert base["end_lsn"]
    assert base["timeline"] == 1

    source.sql("INSERT INTO orders VALUES (1001, 'after the base backup')", "shop")
    time.sleep(0.3)
    moment = _now(source)
    time.sleep(0.3)
    source.sql("UPDATE orders SET note = 'changed after the moment' WHERE id = 1", "shop")
    source.sql("DELETE FROM orders WHERE id = 2", "shop")
    second = _ok(run("pg-archive-wal"))
    assert second["slot_created"] is False
    source.sql("SELECT pg_switch_wal()")  # a complete segment, then a partial one
    source.sql("INSERT INTO orders VALUES (1002, 'archived last')", "shop")
    expected_end = _orders(source)
    last = _ok(run("pg-archive-wal"))
    assert any(not name.endswith(".partial") for name in last["segments"])
    source.sql("INSERT INTO orders VALUES (1003, 'never archived')", "shop")

    # the slot keeps the server's WAL from the end of the last stored drain on
    slot = _value(
        source, "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'safehold'"
    )
    assert slot == last["end_lsn"]

    at_moment = _orders(restored("--to", moment))
    assert at_moment[0] == "1:before the base backup"  # the update came after the moment
    assert "2:before the base backup" in at_moment  # so did the delete
    assert at_moment[-1] == "1001:after the base backup"
    assert len(at_moment) == 1001

    at_end = _orders(restored())
    assert at_end == expected_end
    assert at_end[-1] == "1002:archived last"

    # one base backup to its own end: what it held, nothing of the archive after it
    at_base = _orders(restored("--snapshot", base["snapshot"][:12]))
    assert at_base == [f"{n}:before the base backup" for n in range(1, 1001)]


def test_a_restore_to_a_drains_own_time_while_the_wal_writer_is_late(
    source: DatabaseServer, run: Run, restored: Callable[..., DatabaseServer]
) -> None:
    """A drain's ``archived_until`` is reachable even when the server flushes its WAL late.
    The drain's own marker commit is asynchronous; with the WAL writer waking every 2 s,
    a drain that ended at the flush position read at once left the marker out, and the
    restore to its time failed ("recovery ended before configured recovery target was
    reached")."""
    source.sql("ALTER SYSTEM SET wal_writer_delay = '2s'")
    source.sql("SELECT pg_reload_conf()")
    _ok(run("pg-archive-wal"))
    _ok(run("pg-basebackup"))
    source.sql("INSERT INTO orders VALUES (1001, 'in the last drain')", "shop")
    drained = _ok(run("pg-archive-wal"))
    at_until = _orders(restored("--to", drained["archived_until"]))
    assert at_until[-1] == "1001:in the last drain"
    assert len(at_until) == 1001


def test_times_outside_the_archive_are_refused_with_the_times_it_reaches(
    source: DatabaseServer, run: Run, tmp_path: Path
) -> None:
    assert (
        "no PostgreSQL base backup"
        in _summary(run("pg-restore-pitr", "--source", "prod/shop-db", str(tmp_path / "none")))[
            "error"
        ]
    )
    _ok(run("pg-archive-wal"))
    base = _ok(run("pg-basebackup"))
    last = _ok(run("pg-archive-wal"))

    late = run("pg-restore-pitr", "--source", "prod/shop-db", "--to", "2999-01-01T00:00:00Z",
               str(tmp_path / "late"))  # fmt: skip
    assert late.returncode == 1
    assert f"reaches up to {last['archived_until']}" in _summary(late)["error"]
    early = run("pg-restore-pitr", "--source", "prod/shop-db", "--to", "2000-01-01T00:00:00Z",
                str(tmp_path / "early"))  # fmt: skip
    assert early.returncode == 1
    assert f"the oldest ended at {base['end_time']}" in _summary(early)["error"]
    assert not (tmp_path / "late").exists()
    assert not (tmp_path / "early").exists()

    full = tmp_path / "full"
    full.mkdir()
    (full / "keep").write_text("mine")
    busy = run("pg-restore-pitr", "--source", "prod/shop-db", str(full))
    assert busy.returncode == 1
    assert "not an empty directory" in _summary(busy)["error"]
    assert (full / "keep").read_text() == "mine"


def test_a_drain_that_fails_to_store_keeps_the_wal_on_the_server(
    source: DatabaseServer,
    run: Run,
    tmp_path: Path,
    restored: Callable[..., DatabaseServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The slot moves only after the snapshot is written: a drain that dies before loses
    nothing, and the next one stores what it had streamed."""
    from safehold.engine import backup
    from safehold.engine.databases import wal
    from safehold.engine.databases.client import Connection
    from safehold.repo import Repository
    from safehold.storage import open_storage

    _ok(run("pg-archive-wal"))
    _ok(run("pg-basebackup"))
    source.sql("INSERT INTO orders VALUES (1001, 'streamed by the failed drain')", "shop")
    slot_before = _value(source, "SELECT restart_lsn FROM pg_replication_slots")

    def broken(*args: object, **kwargs: object) -> object:
        raise OSError("injected: the repository's storage went away")

    monkeypatch.setattr(backup, "backup_paths", broken)  # the drain's store of the WAL
    repo = Repository.open(open_storage((tmp_path / "repo").as_uri()), REPO_PASSWORD)
    conn = Connection("postgresql", source.host, ARCHIVER, ARCHIVER_PASSWORD, source.port)
    with pytest.raises(OSError, match="injected"):
        wal.archive_wal(repo, conn, wal.ArchiveOptions(prefix="prod/shop-db"))
    assert _value(source, "SELECT restart_lsn FROM pg_replication_slots") == slot_before
    source.sql("CHECKPOINT")  # would recycle the segment if the slot had moved
    monkeypatch.undo()

    _ok(run("pg-archive-wal"))
    assert _orders(restored())[-1] == "1001:streamed by the failed drain"


def test_wal_lost_on_the_server_is_reported_and_a_new_base_backup_restores(
    source: DatabaseServer, run: Run, restored: Callable[..., DatabaseServer]
) -> None:
    _ok(run("pg-archive-wal"))
    _ok(run("pg-basebackup"))
    source.sql("INSERT INTO orders VALUES (1001, 'before the slot was dropped')", "shop")
    _ok(run("pg-archive-wal"))
    source.sql("SELECT pg_drop_replication_slot('safehold')")
    for _ in range(4):  # the server recycles the segments nobody holds any more
        source.sql("INSERT INTO orders VALUES ((SELECT max(id) + 1 FROM orders), 'lost')", "shop")
        source.sql("SELECT pg_switch_wal()")
        source.sql("CHECKPOINT")

    gap = run("pg-archive-wal")
    assert gap.returncode == 3, gap.stdout + gap.stderr
    assert "no longer has the WAL after segment" in _summary(gap)["gap"]
    assert "take a base backup now" in gap.stderr

    # the chain from the first base backup stops at the gap
    assert _orders(restored())[-1] == "1001:before the slot was dropped"
    _ok(run("pg-basebackup"))
    source.sql("INSERT INTO orders VALUES (2000, 'after the new base backup')", "shop")
    _ok(run("pg-archive-wal"))
    assert _orders(restored())[-1] == "2000:after the new base backup"


def _a_mistake_after_a_base_backup(source: DatabaseServer, run: Run) -> str:
    """An archive and a base backup, then row 1001 'kept', the moment a restore would go
    back to, and row 1002 'the mistake' after it; the moment."""
    _ok(run("pg-archive-wal"))
    _ok(run("pg-basebackup"))
    source.sql("INSERT INTO orders VALUES (1001, 'kept')", "shop")
    time.sleep(0.3)
    moment = _now(source)
    time.sleep(0.3)
    source.sql("INSERT INTO orders VALUES (1002, 'the mistake')", "shop")
    return moment


@pytest.mark.parametrize("source", ["15", "18"], indirect=True)
def test_a_restored_server_is_archived_on_its_new_timeline_into_the_same_source(
    source: DatabaseServer, run: Run, restored: Callable[..., DatabaseServer]
) -> None:
    """After a restore to a point in time, the server starts timeline 2 where the old
    history had gone on (the rows committed after that point). Archived into the same
    source, its WAL must be stored on its own timeline, and restores must reach both
    histories: the old one from the old base backup, the new one from the new server's."""
    moment = _a_mistake_after_a_base_backup(source, run)
    source.sql("SELECT pg_switch_wal()")  # the old history goes on past the moment
    source.sql("INSERT INTO orders VALUES (1003, 'after the mistake')", "shop")
    _ok(run("pg-archive-wal"))

    new = restored("--to", moment)
    assert _value(new, "SELECT timeline_id FROM pg_control_checkpoint()") == "2"
    assert _orders(new)[-1] == "1001:kept"
    first = _ok(run("pg-archive-wal", at=new))
    assert first["slot_created"] is True
    assert "00000002.history" in first["segments"]
    base = _ok(run("pg-basebackup", at=new))
    assert base["timeline"] == 2
    new.sql("INSERT INTO orders VALUES (3000, 'on the new timeline')", "shop")
    _ok(run("pg-archive-wal", at=new))

    latest = _orders(restored())  # not stopped by the settings of the restore of ``new``
    assert latest[-2:] == ["1001:kept", "3000:on the new timeline"]
    assert "1002:the mistake" not in latest
    old = _orders(restored("--to", moment))  # the old history, from the old base backup
    assert old[-1] == "1001:kept"


def test_before_the_restored_servers_first_base_backup_restores_cross_to_its_timeline(
    source: DatabaseServer, run: Run, restored: Callable[..., DatabaseServer]
) -> None:
    """Between a restore and the restored server's first base backup, the only base backups
    are the old server's. A restore to the end must still bring back the *new* history
    (replaying the old timeline up to the fork, then the new one), not the old history with
    the mistake the first restore undid; a time before the old server's last drain still
    names the old history. The new server writes past its first segment before its first
    drain, so the archive must store the new timeline from the fork's segment on."""
    moment = _a_mistake_after_a_base_backup(source, run)
    source.sql("SELECT pg_switch_wal()")
    source.sql("INSERT INTO orders VALUES (1003, 'after the mistake')", "shop")
    old_end = _ok(run("pg-archive-wal"))

    new = restored("--to", moment)
    new.sql("INSERT INTO orders VALUES (2000, 'before the first drain')", "shop")
    new.sql("SELECT pg_switch_wal()")  # the fork's segment is no longer the current one
    first = _ok(run("pg-archive-wal", at=new))
    assert "00000002.history" in first["segments"]
    mixed = run("pg-archive-wal")  # the original, still running: one server per source
    assert mixed.returncode == 1
    assert "holds timeline 2" in _summary(mixed)["error"]
    assert "a source of its own" in _summary(mixed)["error"]
    stale = run("pg-basebackup")  # nor its base backups
    assert stale.returncode == 1
    assert "holds timeline 2" in _summary(stale)["error"]
    new.sql("INSERT INTO orders VALUES (3000, 'on the new timeline')", "shop")
    _ok(run("pg-archive-wal", at=new))

    newest = restored()
    settings = (newest.directory / "data" / "postgresql.auto.conf").read_text()
    assert "recovery_target_timeline = '2'" in settings  # from timeline 1's base backup
    at_end = _orders(newest)
    assert at_end[-3:] == ["1001:kept", "2000:before the first drain", "3000:on the new timeline"]
    assert "1002:the mistake" not in at_end
    after_old = _orders(restored("--to", first["archived_until"]))
    assert after_old[-2:] == ["1001:kept", "2000:before the first drain"]
    old = _orders(restored("--to", old_end["archived_until"]))  # the old history's own time
    assert old[-2:] == ["1002:the mistake", "1003:after the mistake"]

    # a restore of the restored server, archived too: timeline 3, two forks from the base
    assert _value(newest, "SELECT timeline_id FROM pg_control_checkpoint()") == "3"
    newest.sql("INSERT INTO orders VALUES (4000, 'on the third timeline')", "shop")
    newest.sql("SELECT pg_switch_wal()")
    assert "00000003.history" in _ok(run("pg-archive-wal", at=newest))["segments"]
    third = _orders(restored())
    assert third[-4:] == [
        "1001:kept", "2000:before the first drain", "3000:on the new timeline",
        "4000:on the third timeline",
    ]  # fmt: skip


def test_a_failover_to_a_promoted_standby_keeps_the_archive_whole(
    source: DatabaseServer, run: Run, restored: Callable[..., DatabaseServer]
) -> None:
    """The primary fails and its streaming standby is promoted (timeline 2, the same
    system identifier), and the archive follows the new primary: its first drain stores
    the new timeline from the fork on, and a restore to the end, from the old primary's
    base backup, brings back what both servers committed."""
    _ok(run("pg-archive-wal"))
    _ok(run("pg-basebackup"))
    standby = start_standby(source)
    try:
        source.sql("INSERT INTO orders VALUES (1001, 'before the failover')", "shop")
        deadline = time.monotonic() + 30
        while standby.sql("SELECT count(*) FROM orders WHERE id = 1001", "shop").strip() != "1":
            assert time.monotonic() < deadline, "the standby did not replay the row"
            time.sleep(0.2)
        _ok(run("pg-archive-wal"))
        source.stop()  # the primary is lost
        assert _value(standby, "SELECT pg_promote()") == "t"
        standby.sql("CHECKPOINT")  # the control file's timeline moves at a checkpoint
        assert _value(standby, "SELECT timeline_id FROM pg_control_checkpoint()") == "2"
        standby.sql("INSERT INTO orders VALUES (2000, 'after the failover')", "shop")
        standby.sql("SELECT pg_switch_wal()")
        first = _ok(run("pg-archive-wal", at=standby))
        assert first["slot_created"] is True  # slots stay on the primary they were made on
        assert first["timeline"] == 2
        assert "00000002.history" in first["segments"]
        assert _orders(restored())[-2:] == ["1001:before the failover", "2000:after the failover"]
    finally:
        standby.stop()


def test_a_restored_server_that_recycled_its_fork_before_its_first_drain_reports_the_gap(
    source: DatabaseServer, run: Run, restored: Callable[..., DatabaseServer], tmp_path: Path
) -> None:
    """The restored server had no slot until its first drain: if it recycled the segment
    it forked in before then, the archive cannot hold its history from the fork. The drain
    says so (exit code 3); a restore to the end stops before the fork, never going on along
    the old history, and warns; the restored server's own base backup restores its new
    rows."""
    moment = _a_mistake_after_a_base_backup(source, run)
    _ok(run("pg-archive-wal"))

    new = restored("--to", moment)
    for _ in range(4):  # no slot holds the fork's segment yet: the server recycles it
        new.sql("INSERT INTO orders VALUES ((SELECT max(id) + 1 FROM orders), 'new')", "shop")
        new.sql("SELECT pg_switch_wal()")
        new.sql("CHECKPOINT")
    gap = run("pg-archive-wal", at=new)
    assert gap.returncode == 3, gap.stdout + gap.stderr
    assert "take a base backup now" in _summary(gap)["gap"]

    short = run("pg-restore-pitr", "--source", "prod/shop-db", str(tmp_path / "short"))
    assert "a hole stops a restore" in _ok(short)["warnings"][0]
    assert "take a base backup of that server" in short.stderr
    checked = _ok(run("pg-restore-pitr", "--source", "prod/shop-db", "--check"))
    assert "a hole stops a restore" in checked["warnings"][0]  # a test restore says so too
    server = _started(tmp_path / "short")
    try:  # no further than the old base backup: the fork's segment is what is missing
        assert _orders(server)[-1] == "1000:before the base backup"
    finally:
        server.stop()
    _ok(run("pg-basebackup", at=new))
    new.sql("INSERT INTO orders VALUES (3000, 'after its base backup')", "shop")
    _ok(run("pg-archive-wal", at=new))
    assert _orders(restored())[-2:] == ["1005:new", "3000:after its base backup"]


def test_retention_keeps_the_wal_the_kept_base_backups_need(
    source: DatabaseServer, run: Run, restored: Callable[..., DatabaseServer]
) -> None:
    """``forget --keep-last 1`` keeps one base backup, and of the drains exactly those
    from its start on: not one drain (the rule's count), and not the older ones."""
    _ok(run("pg-archive-wal"))
    old_base = _ok(run("pg-basebackup"))
    early = _ok(run("pg-archive-wal"))
    source.sql("SELECT pg_switch_wal()")
    source.sql("INSERT INTO orders VALUES (1001, 'before the second base backup')", "shop")
    _ok(run("pg-archive-wal"))
    new_base = _ok(run("pg-basebackup"))
    source.sql("INSERT INTO orders VALUES (1002, 'after the second base backup')", "shop")
    late = [_ok(run("pg-archive-wal")) for _ in range(2)]

    report = _ok(run("forget", "--keep-last", "1", "--prune"))
    gone = {i["id"] for i in report["items"] if not i["keep"]}
    assert old_base["snapshot"] in gone
    assert early["snapshot"] in gone
    assert new_base["snapshot"] not in gone
    assert {d["snapshot"] for d in late}.isdisjoint(gone)
    reasons = {i["id"]: i["reasons"] for i in report["items"]}
    assert any("oldest kept base backup" in r for r in reasons[early["snapshot"]])

    _ok(run("verify", "--read-data"))
    assert _orders(restored())[-1] == "1002:after the second base backup"


def test_the_docs_session_runs_as_written(source: DatabaseServer, tmp_path: Path) -> None:
    assert len(SESSIONS) == 1
    password = tmp_path / "db-password"
    password.write_text(ARCHIVER_PASSWORD + "\n")
    env = {
        **session_env(tmp_path),
        "DB_HOST": source.host,
        "DB_PORT": str(source.port),
        "DB_PASSWORD_FILE": str(password),
    }
    run_session(SESSIONS[0].values[0], tmp_path, env)
    assert not (tmp_path / "elsewhere").exists()
    server = _started(tmp_path / "data")
    try:
        assert _orders(server) == _orders(source)
    finally:
        server.stop()
