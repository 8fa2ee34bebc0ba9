"""The database client tools (pg_dump, pg_restore, psql, mysqldump, mysql) as subprocesses.

Each PostgreSQL tool but ``psql`` runs at the server's own major version when the image has
it (``/usr/lib/postgresql/<major>/bin``, Debian's and the PostgreSQL project's layout), else at
the oldest newer one: a client must be at least as new as the server, and a newer ``pg_restore``
writes settings an older server refuses (PostgreSQL 18's ``SET transaction_timeout``). ``psql``
runs at the newest, as Debian's ``pg_wrapper`` runs it. Without such a directory, the tools
come from ``PATH``.

The password reaches the tools only through a file in a private temporary directory
(mode 0700, the file 0600): ``PGPASSFILE`` for PostgreSQL, ``--defaults-extra-file`` for
MySQL/MariaDB. It is never an argument (``ps`` shows arguments to every user), never an
environment variable (``/proc/PID/environ`` of a child outlives a careless ``ps e``), and
it is cut out of every message taken from a tool's stderr. The directory is removed when
the :class:`DatabaseClient` context ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Literal

__all__ = [
    "DEFAULT_PORTS",
    "Connection",
    "DatabaseClient",
    "DumpError",
    "Engine",
    "StderrTail",
    "pick_postgres_tools",
    "postgres_program",
    "postgres_tool_dirs",
    "tool_missing",
]

Engine = Literal["postgresql", "mysql"]
DEFAULT_PORTS: dict[str, int] = {"postgresql": 5432, "mysql": 3306}
#: Databases that are the server's own, never dumped when "all databases" are asked for.
_MYSQL_SYSTEM = frozenset({"information_schema", "performance_schema", "sys", "mysql"})
#: Between psql's columns: a character no name or value here holds (ASCII unit separator).
_FIELD_SEPARATOR = "\x1f"
#: Where each PostgreSQL major version's tools are, one ``<major>/bin`` each; the environment
#: variable ``SAFEHOLD_POSTGRES_TOOLS`` names another such directory.
POSTGRES_TOOLS = "/usr/lib/postgresql"
_PACKAGES = {
    "postgresql": "the PostgreSQL client tools (Debian: postgresql-client)",
    "mysql": "the MySQL/MariaDB client tools (Debian: mariadb-client)",
}


class DumpError(Exception):
    """A dump or restore failed; the message says which tool, why, and what to fix."""


def tool_missing(tool: str, engine: Engine) -> DumpError:
    """The error of a client tool that is not installed: names the package to install."""
    where = "not on PATH"
    if engine == "postgresql":
        where = f"not in {_tools_root()}/<version>/bin nor on PATH"
    return DumpError(
        f"{tool} is not installed ({where}): install {_PACKAGES[engine]} "
        "in the image that runs safehold"
    )


def _tools_root() -> str:
    return os.environ.get("SAFEHOLD_POSTGRES_TOOLS") or POSTGRES_TOOLS


def postgres_tool_dirs(root: str) -> dict[int, str]:
    """The PostgreSQL major versions installed under ``root``: ``{18: "ROOT/18/bin"}``."""
    try:
        names = os.listdir(root)
    except OSError:
        return {}
    found = {int(n): os.path.join(root, n, "bin") for n in names if n.isdigit()}
    return {major: path for major, path in found.items() if os.path.isdir(path)}


def pick_postgres_tools(server: int | None, installed: Mapping[int, str]) -> int | None:
    """Which installed major version's tools serve a server of major version ``server``: its
    own, else the oldest newer one, else the newest (which refuses a newer server in its own
    words, naming both versions); with ``server`` unknown, the newest. None: nothing
    installed (the tools come from PATH)."""
    if not installed:
        return None
    if server is not None:
        newer = [v for v in installed if v >= server]
        if newer:
            return min(newer)
    return max(installed)


def postgres_program(tool: str, server: int | None) -> tuple[str, int | None]:
    """The path of ``tool`` for a server of major version ``server``, and that version."""
    installed = postgres_tool_dirs(_tools_root())
    major = pick_postgres_tools(server, installed)
    if major is None:
        return tool, None
    return os.path.join(installed[major], tool), major


@dataclass(frozen=True)
class Connection:
    """Where a database server is and who connects to it."""

    engine: Engine
    host: str
    user: str
    password: str = field(repr=False)
    port: int | None = None

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.engine]

    @property
    def where(self) -> str:
        return f"{self.engine} server {self.host}:{self.effective_port} as user {self.user!r}"


def _pgpass_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _mysql_option(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class StderrTail:
    """Collects the last lines of a tool's stderr in a thread, with the password cut out."""

    def __init__(self, stream: IO[bytes], secret: str, lines: int = 20) -> None:
        self._stream = stream
        self._secret = secret
        self._lines: deque[str] = deque(maxlen=lines)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in self._stream:
            line = raw.decode(errors="replace").rstrip()
            if self._secret:
                line = line.replace(self._secret, "***")
            if line:
                self._lines.append(line)

    def text(self) -> str:
        self._thread.join(timeout=10)
        return "; ".join(self._lines)

    def lines(self) -> list[str]:
        self._thread.join(timeout=10)
        return list(self._lines)


class DatabaseClient:
    """Runs the client tools against one server with the credentials in private files."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._dir: str | None = None
        self._env: dict[str, str] = {}
        self._defaults: str | None = None
        self._server: int | None = None
        self._server_asked = False

    def __enter__(self) -> DatabaseClient:
        base = os.environ.get("SAFEHOLD_TMPDIR") or None
        self._dir = tempfile.mkdtemp(prefix="safehold-db-", dir=base)  # mode 0700
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MYSQL"))}
        c = self.conn
        if c.engine == "postgresql":
            path = os.path.join(self._dir, "pgpass")
            line = f"*:*:*:{_pgpass_field(c.user)}:{_pgpass_field(c.password)}\n"
            self._write_private(path, line)
            env.update(
                PGPASSFILE=path,
                PGHOST=c.host,
                PGPORT=str(c.effective_port),
                PGUSER=c.user,
                PGCONNECT_TIMEOUT="10",
            )
        else:
            path = os.path.join(self._dir, "client.cnf")
            text = (
                "[client]\n"
                f"user={_mysql_option(c.user)}\n"
                f"password={_mysql_option(c.password)}\n"
                f"host={_mysql_option(c.host)}\n"
                f"port={c.effective_port}\n"
                "protocol=TCP\n"
                "default-character-set=utf8mb4\n"
            )
            self._write_private(path, text)
            self._defaults = path
        self._env = env
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    @staticmethod
    def _write_private(path: str, text: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)

    def argv(self, tool: str, *args: str) -> list[str]:
        """``tool`` with the connection options (never the password) and ``args``."""
        if self.conn.engine == "mysql":
            assert self._defaults is not None, "use DatabaseClient as a context manager"
            # --defaults-extra-file must be the first option, or the tools ignore it
            return [tool, f"--defaults-extra-file={self._defaults}", *args]
        return [tool, "--no-password", *args]

    def server_major(self) -> int | None:
        """The PostgreSQL server's major version, asked once; None when it cannot be asked
        (then the tool run next says why it cannot connect)."""
        if not self._server_asked:
            self._server_asked = True
            try:
                self._server = int(self.query("SHOW server_version_num")[0]) // 10000
            except (DumpError, ValueError, IndexError):
                self._server = None
        return self._server

    def program(self, tool: str) -> tuple[str, int | None]:
        """What runs for ``tool``: its path, and for PostgreSQL the major version of the tools
        (None when they come from PATH)."""
        if self.conn.engine != "postgresql":
            return tool, None
        return postgres_program(tool, None if tool == "psql" else self.server_major())

    def popen(
        self, tool: str, args: Sequence[str], *, stdin: int | None = None, stdout: int | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``tool``; a missing tool is a :class:`DumpError` naming the package."""
        try:
            return subprocess.Popen(
                self.argv(self.program(tool)[0], *args),
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=stdout if stdout is not None else subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=self._env,
            )
        except FileNotFoundError as exc:
            raise tool_missing(tool, self.conn.engine) from exc

    def query(self, sql: str, database: str | None = None) -> list[str]:
        """Run one SQL statement through psql or mysql; the first column of each row."""
        return [row[0] for row in self.rows(sql, database)]

    def rows(self, sql: str, database: str | None = None) -> list[list[str]]:
        """Run one SQL statement through psql or mysql; every row's columns. For psql,
        ``database`` may be a connection string (``dbname=postgres replication=true``)."""
        if self.conn.engine == "postgresql":
            tool = "psql"
            args = ["-X", "-q", "-At", "-F", _FIELD_SEPARATOR, "-v", "ON_ERROR_STOP=1"]
            args += ["-d", database or "postgres"]
        else:
            tool = "mysql"
            args = ["-N", "-B", *([database] if database else [])]
        proc = self.popen(tool, args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        tail = StderrTail(proc.stderr, self.conn.password)
        try:
            proc.stdin.write(sql.encode())  # one short statement: fits the pipe
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the tool exited (cannot connect): its stderr says why
        out = proc.stdout.read()
        code = proc.wait()
        if code != 0:
            raise DumpError(
                f"cannot query the {self.conn.where}: {tool} exited with {code}"
                f" ({tail.text() or 'no message'})"
            )
        sep = _FIELD_SEPARATOR if self.conn.engine == "postgresql" else "\t"
        return [line.split(sep) for line in out.decode().splitlines() if line]

    def list_databases(self) -> list[str]:
        """The server's user databases (no templates, no MySQL system schemas)."""
        if self.conn.engine == "postgresql":
            return self.query(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate "
                "ORDER BY datname"
            )
        return [d for d in self.query("SHOW DATABASES") if d not in _MYSQL_SYSTEM]

    def quote_ident(self, name: str) -> str:
        if self.conn.engine == "postgresql":
            return '"' + name.replace('"', '""') + '"'
        return "`" + name.replace("`", "``") + "`"
