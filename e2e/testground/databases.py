"""Real PostgreSQL (15 and 18) and MariaDB servers on loopback, for the database-source tests.

Each server runs from Debian's packages (``e2e/install-deps``; PostgreSQL 18 built from
Debian's source, ``testground.pgbuild``) in a private temporary data directory on a free port,
bound to 127.0.0.1 only, with password authentication over TCP (so a wrong password really
fails). PostgreSQL refuses to run as root: when the tests run as root, the server runs as the
``postgres`` user through ``runuser`` and its directory is given to that user. Fixtures:
``postgres_server`` (bookworm's 15), ``postgres18_server`` and ``mariadb_server`` (one per
session), and ``database_server_factory`` for a test that stops its own server.

Both versions' client tools are installed under ``/usr/lib/postgresql``, as in Safehold's image,
which runs each server's own (``safehold.engine.databases.client``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from testground import pgbuild
from testground.processes import free_ports, log_tail

__all__ = [
    "DatabaseServer",
    "database_server_factory",
    "drop_database",
    "load_sample_data",
    "mariadb_server",
    "postgres18_server",
    "postgres_server",
    "start_mariadb",
    "start_postgres",
    "start_standby",
    "table_contents",
]

ADMIN_USER = "safehold"
ADMIN_PASSWORD = "s3cret-Passw0rd:with\\odd'chars"  # exercises the password files' quoting


# Debian bookworm's server (package postgresql); the newer one is pgbuild.MAJOR
POSTGRES_DEFAULT = "15"


def _pg_bin(tool: str, version: str = POSTGRES_DEFAULT) -> str:
    path = pgbuild.server_bin(version) / tool
    if not path.exists():
        raise RuntimeError(f"{path} not found: run e2e/install-deps (PostgreSQL {version})")
    return str(path)


@dataclass
class DatabaseServer:
    """A running server: where it listens, its admin credentials, and how to stop it."""

    engine: str  # "postgresql" or "mysql"
    host: str
    port: int
    user: str
    password: str
    directory: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    version: str = ""  # PostgreSQL's major version ("15", "18"); "" for MariaDB

    def sql(self, statement: str, database: str | None = None) -> str:
        """Run SQL as the admin user through the command-line client; its stdout."""
        if self.engine == "postgresql":
            argv = ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", self.host]
            argv += ["-p", str(self.port), "-U", self.user, "-d", database or "postgres"]
            env = {**os.environ, "PGPASSWORD": self.password}
        else:
            argv = ["mysql", "--protocol=TCP", "-h", self.host, "-P", str(self.port)]
            argv += ["-u", self.user, "-N", "-B", "--default-character-set=utf8mb4"]
            argv += [database] if database else []
            env = {**os.environ, "MYSQL_PWD": self.password}
        done = subprocess.run(argv, input=statement.encode(), capture_output=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"{self.engine} SQL failed: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode()

    @contextlib.contextmanager
    def session(self, database: str) -> Iterator[None]:
        """An idle client session connected to ``database`` while the block runs."""
        if self.engine == "postgresql":
            argv = ["psql", "-X", "-q", "-h", self.host, "-p", str(self.port), "-U", self.user]
            argv += ["-d", database]
            env = {**os.environ, "PGPASSWORD": self.password}
        else:
            argv = ["mysql", "--protocol=TCP", "-h", self.host, "-P", str(self.port)]
            argv += ["-u", self.user, database]
            env = {**os.environ, "MYSQL_PWD": self.password}
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        assert proc.stderr is not None
        # the client's output is buffered in a pipe: ask the server whether it is connected
        if self.engine == "postgresql":
            probe = "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}'"
        else:
            probe = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = '{}'"
        probe = probe.format(database)
        deadline = time.monotonic() + 30
        while self.sql(probe).strip() in ("", "0"):
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"no session to {database} opened: {proc.stderr.read()!r}")
            time.sleep(0.1)
        try:
            yield
        finally:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)


def _run_as(user: str | None, argv: list[str]) -> list[str]:
    return ["runuser", "-u", user, "--", *argv] if user else argv


def _wait_ready(server: DatabaseServer, probe: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            raise RuntimeError(f"{server.engine} exited at start:\n{log_tail(server.log, 30)}")
        if probe():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{server.engine} did not start in {timeout} s:\n{log_tail(server.log, 30)}")


def private_dir(prefix: str, owner: str | None) -> Path:
    # pytest's tmp_path lives under a root-only directory the postgres user cannot enter.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if owner:
        pw = pwd.getpwnam(owner)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return path


def start_postgres(version: str = POSTGRES_DEFAULT) -> DatabaseServer:
    """initdb + postgres ``version`` on a free port, with a password-authenticated admin."""
    owner = "postgres" if os.geteuid() == 0 else None
    root = private_dir("safehold-pg-", owner)
    data = root / "data"
    pwfile = root / "pwfile"
    pwfile.write_text(ADMIN_PASSWORD + "\n")
    if owner:
        pw = pwd.getpwnam(owner)
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
    init = _run_as(
        owner,
        [
            _pg_bin("initdb", version),
            "-D",
            str(data),
            "-U",
            ADMIN_USER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ],
    )
    done = subprocess.run(init, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed: {done.stderr.decode(errors='replace')}")
    pwfile.unlink()
    return run_postgres(root, data)


def run_postgres(root: Path, data: Path) -> DatabaseServer:
    """postgres on a free port, on the data directory ``data`` (inside ``root``, where its
    log and socket go; owned by the ``postgres`` user when the tests run as root), run by the
    version that wrote it."""
    owner = "postgres" if os.geteuid() == 0 else None
    version = (data / "PG_VERSION").read_text().strip()
    (port,) = free_ports(1)
    log = root / "postgres.log"
    argv = _run_as(
        owner,
        [
            _pg_bin("postgres", version),
            "-D",
            str(data),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-k",
            str(root),
            "-c",
            "fsync=off",
            "-c",
            "shared_buffers=32MB",
        ],
    )
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    server = DatabaseServer(
        "postgresql",
        "127.0.0.1",
        port,
        ADMIN_USER,
        ADMIN_PASSWORD,
        root,
        log,
        proc,
        version=version,
    )

    def ready() -> bool:
        return (
            subprocess.run(
                ["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)], capture_output=True
            ).returncode
            == 0
        )

    try:
        _wait_ready(server, ready)
    except BaseException:
        server.stop()
        raise
    return server


def start_standby(primary: DatabaseServer) -> DatabaseServer:
    """A streaming standby of PostgreSQL ``primary`` (pg_basebackup -R as its admin), started
    and replaying: what a failover promotes (``SELECT pg_promote()``)."""
    owner = "postgres" if os.geteuid() == 0 else None
    root = private_dir("safehold-standby-", owner)
    argv = [_pg_bin("pg_basebackup", primary.version), "-D", str(root / "data"), "-R",
            "-X", "stream", "-h", primary.host, "-p", str(primary.port),
            "-U", primary.user]  # fmt: skip
    env = {**os.environ, "PGPASSWORD": primary.password}
    done = subprocess.run(_run_as(owner, argv), env=env, capture_output=True, check=False)
    if done.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"pg_basebackup failed: {done.stderr.decode(errors='replace')}")
    try:
        return run_postgres(root, root / "data")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def start_mariadb() -> DatabaseServer:
    """mariadb-install-db + mariadbd on a free port, with a password-authenticated admin."""
    owner = "mysql" if os.geteuid() == 0 else None
    root = private_dir("safehold-maria-", owner)
    data = root / "data"
    (port,) = free_ports(1)
    user_args = [f"--user={owner}"] if owner else []
    init = [
        "mariadb-install-db",
        "--no-defaults",
        f"--datadir={data}",
        *user_args,
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
    ]
    done = subprocess.run(init, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"mariadb-install-db failed: {done.stderr.decode(errors='replace')}")
    log = root / "mariadb.log"
    socket = root / "mysqld.sock"
    argv = [
        "mariadbd",
        "--no-defaults",
        f"--datadir={data}",
        *user_args,
        "--bind-address=127.0.0.1",
        f"--port={port}",
        f"--socket={socket}",
        f"--pid-file={root / 'mysqld.pid'}",
        "--skip-name-resolve",
        "--innodb-buffer-pool-size=32M",
        "--innodb-log-file-size=16M",
        "--max-allowed-packet=64M",
        "--character-set-server=utf8mb4",
        "--collation-server=utf8mb4_unicode_ci",
    ]
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    server = DatabaseServer("mysql", "127.0.0.1", port, ADMIN_USER, ADMIN_PASSWORD, root, log, proc)

    def ready() -> bool:
        return socket.exists()

    try:
        _wait_ready(server, ready)
        # root may log in through the socket without a password right after install-db:
        # create the password-authenticated admin the tests (and dumps) use over TCP.
        quoted = ADMIN_PASSWORD.replace("\\", "\\\\").replace("'", "\\'")
        setup = (
            f"CREATE USER '{ADMIN_USER}'@'127.0.0.1' IDENTIFIED BY '{quoted}';\n"
            f"GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@'127.0.0.1' WITH GRANT OPTION;\n"
        )
        done = subprocess.run(
            ["mysql", "--no-defaults", f"--socket={socket}", "-u", "root"],
            input=setup.encode(),
            capture_output=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"MariaDB setup failed: {done.stderr.decode(errors='replace')}")
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[DatabaseServer]:
    """PostgreSQL (Debian's, 15 on bookworm) on 127.0.0.1, admin ``safehold``."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres18_server() -> Iterator[DatabaseServer]:
    """PostgreSQL 18 (the image's client version) on 127.0.0.1, admin ``safehold``."""
    server = start_postgres(pgbuild.MAJOR)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[DatabaseServer]:
    """MariaDB on 127.0.0.1, admin ``safehold`` (password over TCP)."""
    server = start_mariadb()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def database_server_factory() -> Iterator[Callable[..., DatabaseServer]]:
    """Private servers (``factory("postgresql")``, ``factory("postgresql", "18")``) this test
    may stop; stopped at its end."""
    started: list[DatabaseServer] = []

    def start(engine: str, version: str = POSTGRES_DEFAULT) -> DatabaseServer:
        server = start_postgres(version) if engine == "postgresql" else start_mariadb()
        started.append(server)
        return server

    yield start
    for server in started:
        with contextlib.suppress(OSError):
            server.stop()


# ------------------------------------------------------------------ test data
def load_sample_data(server: DatabaseServer, database: str, rows: int = 50_000) -> None:
    """Create ``database`` with several tables: a large one, unicode text, binary columns."""
    if server.engine == "postgresql":
        server.sql(f'CREATE DATABASE "{database}"')
        server.sql(
            f"""
            CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, city text);
            INSERT INTO customers (name, city) VALUES
              ('Zoë Ångström', 'Malmö'), ('李小龍', '香港'), ('Олег', 'Москва'),
              ('emoji 🎉🐘', NULL), ('quote '' and \\ backslash', 'tab	inside');
            CREATE TABLE blobs (id int PRIMARY KEY, data bytea NOT NULL);
            INSERT INTO blobs SELECT i, decode(md5(i::text) || md5((i*7)::text), 'hex')
              || '\\x00ff00'::bytea FROM generate_series(1, 500) AS i;
            CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz NOT NULL,
              kind text NOT NULL, payload text NOT NULL);
            INSERT INTO events SELECT i, timestamptz '2026-01-01' + i * interval '1 second',
              (ARRAY['create','update','delete'])[1 + i % 3],
              repeat(md5(i::text), 3) FROM generate_series(1, {rows}) AS i;
            CREATE VIEW recent AS SELECT * FROM events WHERE id > {rows} - 10;
            CREATE FUNCTION add_one(x int) RETURNS int LANGUAGE sql AS 'SELECT x + 1';
            """,  # noqa: S608 - fixed test data, names chosen by the tests
            database,
        )
    else:
        server.sql(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4")
        server.sql(
            f"""
            CREATE TABLE customers (id int AUTO_INCREMENT PRIMARY KEY,
              name varchar(200) NOT NULL, city varchar(200));
            INSERT INTO customers (name, city) VALUES
              ('Zoë Ångström', 'Malmö'), ('李小龍', '香港'), ('Олег', 'Москва'),
              ('emoji 🎉🐘', NULL), ('quote '' and \\\\ backslash', 'tab\tinside');
            CREATE TABLE blobs (id int PRIMARY KEY, data longblob NOT NULL);
            INSERT INTO blobs SELECT seq, CONCAT(UNHEX(MD5(seq)), UNHEX(MD5(seq * 7)),
              UNHEX('00FF00')) FROM seq_1_to_500;
            CREATE TABLE events (id bigint PRIMARY KEY, at datetime NOT NULL,
              kind varchar(10) NOT NULL, payload text NOT NULL);
            INSERT INTO events SELECT seq, '2026-01-01' + INTERVAL seq SECOND,
              ELT(1 + seq % 3, 'create', 'update', 'delete'), REPEAT(MD5(seq), 3)
              FROM seq_1_to_{rows};
            CREATE VIEW recent AS SELECT * FROM events WHERE id > {rows} - 10;
            CREATE FUNCTION add_one(x int) RETURNS int DETERMINISTIC RETURN x + 1;
            CREATE TRIGGER name_trim BEFORE INSERT ON customers FOR EACH ROW
              SET NEW.name = TRIM(NEW.name);
            """,  # noqa: S608 - fixed test data, names chosen by the tests
            database,
        )


def table_contents(server: DatabaseServer, database: str) -> dict[str, str]:
    """Every table's rows in primary-key order (binary as hex), plus routine names."""
    out: dict[str, str] = {}
    if server.engine == "postgresql":
        tables = server.sql(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", database
        ).split()
        for t in tables:
            out[t] = server.sql(f'COPY (SELECT * FROM "{t}" ORDER BY 1) TO STDOUT', database)  # noqa: S608
        out["(functions)"] = server.sql(
            "SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace ORDER BY 1",
            database,
        )
        out["(views)"] = server.sql("SELECT * FROM recent ORDER BY 1", database)
    else:
        tables = server.sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() "
            "AND table_type = 'BASE TABLE' ORDER BY 1",
            database,
        ).split()
        for t in tables:
            columns = (
                "SELECT IF(data_type LIKE '%blob', CONCAT('HEX(`', column_name, '`)'), "
                "CONCAT('`', column_name, '`')) FROM information_schema.columns WHERE "
                "table_schema = DATABASE() AND table_name = '{}' ORDER BY ordinal_position"
            )
            cols = server.sql(columns.format(t), database).split()
            query = f"SELECT {', '.join(cols)} FROM `{t}` ORDER BY 1"  # noqa: S608
            out[t] = server.sql(query, database)
        out["(routines)"] = server.sql(
            "SELECT routine_name FROM information_schema.routines "
            "WHERE routine_schema = DATABASE() ORDER BY 1",
            database,
        )
        out["(triggers)"] = server.sql(
            "SELECT trigger_name FROM information_schema.triggers "
            "WHERE trigger_schema = DATABASE() ORDER BY 1",
            database,
        )
        out["(views)"] = server.sql("SELECT * FROM recent ORDER BY 1", database)
    return out


def drop_database(server: DatabaseServer, database: str) -> None:
    if server.engine == "postgresql":
        server.sql(f'DROP DATABASE "{database}" WITH (FORCE)')
    else:
        server.sql(f"DROP DATABASE `{database}`")
