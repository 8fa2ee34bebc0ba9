"""Check a database dump end to end without a database server: is every byte there?

The dump is streamed out of the repository (each chunk authenticated and checked against
its id, as for a restore) into a reader that fails unless the dump is complete:

- a ``pg_dump -Fc`` archive goes into ``pg_restore --list`` (the header and table of
  contents: the entries are counted) and, at the same time, into ``pg_restore --file
  /dev/null``, which reads every data block of every entry in order. Safehold's dumps are
  written to a pipe, so the archive has no end marker and no data offsets: a dump cut
  anywhere fails there, with "could not read from input file: end of file" inside a
  block, or "could not find block ID" when whole blocks are missing;
- a mysqldump/mariadb-dump file is parsed to its end: quotes, comments, ``DELIMITER``
  and statements must all be closed, and the last thing in it must be the tool's
  ``-- Dump completed`` line;
- PostgreSQL's roles (``pg_dumpall --globals-only``) must end with its ``-- PostgreSQL
  database cluster dump complete`` line.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from safehold.engine.databases.client import (
    DumpError,
    Engine,
    StderrTail,
    postgres_program,
    tool_missing,
)
from safehold.engine.databases.restore import DatabaseSnapshot, dump_file, read_chunks
from safehold.repo import Repository
from safehold.repo.errors import CorruptObject

__all__ = ["DumpCheck", "DumpKind", "check_dumps", "checks_summary", "dump_kind"]

#: What a dump's file holds, which tells the reader that checks it.
DumpKind = Literal["pg_dump", "pg_globals", "mysqldump"]
_ENGINE: dict[DumpKind, Engine] = {
    "pg_dump": "postgresql",
    "pg_globals": "postgresql",
    "mysqldump": "mysql",
}
_PG_TABLE = re.compile(rb"^\d+; \d+ \d+ TABLE (?!DATA )")


@dataclass
class DumpCheck:
    """What the check of one database's dump found."""

    database: str
    snapshot: str
    kind: DumpKind
    bytes: int = 0
    objects: int = 0  # pg: table-of-contents entries; mysql: statements; roles: CREATE ROLE
    tables: int = 0
    error: str | None = None

    @property
    def engine(self) -> Engine:
        return _ENGINE[self.kind]

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "snapshot": self.snapshot,
            "engine": self.engine,
            "bytes": self.bytes,
            "objects": self.objects,
            "tables": self.tables,
            "ok": self.ok,
            "error": self.error,
        }


def dump_kind(file_name: str, database: str) -> DumpKind:
    """The kind of dump a snapshot's file holds (the names :func:`dump_file_name` gives)."""
    if file_name.endswith(".pgdump"):
        return "pg_dump"
    return "pg_globals" if database == "globals" else "mysqldump"


def checks_summary(checks: list[DumpCheck]) -> dict[str, Any]:
    """The JSON ``check`` key: the totals, the first error, and each database's check."""
    engines = sorted({c.engine for c in checks})
    failed = [c for c in checks if not c.ok]
    return {
        "engine": engines[0] if len(engines) == 1 else ",".join(engines),
        "bytes": sum(c.bytes for c in checks),
        "objects": sum(c.objects for c in checks),
        "tables": sum(c.tables for c in checks),
        "ok": not failed,
        "error": f"{failed[0].database}: {failed[0].error}" if failed else None,
        "databases": [c.summary() for c in checks],
    }


def check_dumps(repo: Repository, items: list[DatabaseSnapshot]) -> list[DumpCheck]:
    """Check each dump; damage is in its result, a missing or too old tool a DumpError."""
    checks = []
    for item in items:
        name, ids = dump_file(repo, item.snapshot)
        check = DumpCheck(item.database, item.snapshot.id, dump_kind(name, item.database))
        chunks = _counted(read_chunks(repo, ids), check)
        try:
            if check.kind == "pg_dump":
                _check_pg_archive(chunks, check)
            elif check.kind == "pg_globals":
                _check_pg_globals(chunks, check)
            else:
                _check_mysqldump(chunks, check)
        except CorruptObject as exc:
            check.error = f"the repository's copy is damaged: {exc}"
        checks.append(check)
    return checks


def _counted(chunks: Iterator[bytes], check: DumpCheck) -> Iterator[bytes]:
    for chunk in chunks:
        check.bytes += len(chunk)
        yield chunk


def _pg_restore(args: list[str], stdout: int) -> subprocess.Popen[bytes]:
    # No server is involved: no connection settings are passed on, and the newest pg_restore
    # reads every archive format.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    try:
        return subprocess.Popen(
            [postgres_program("pg_restore", None)[0], *args],
            stdin=subprocess.PIPE, stdout=stdout, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
    except FileNotFoundError as exc:
        raise tool_missing("pg_restore", "postgresql") from exc


def _check_pg_archive(chunks: Iterable[bytes], check: DumpCheck) -> None:
    """``pg_restore --list`` and ``pg_restore --file /dev/null`` both fed the whole dump."""
    lister = _pg_restore(["--list"], subprocess.PIPE)
    reader = _pg_restore(["--file", os.devnull], subprocess.DEVNULL)
    procs = {"pg_restore --list": lister, "pg_restore": reader}
    tails = {what: StderrTail(p.stderr, "") for what, p in procs.items()}  # type: ignore[arg-type]
    listing: list[bytes] = []
    collect = threading.Thread(target=lambda: listing.extend(lister.stdout or []), daemon=True)
    collect.start()
    open_ = dict(procs)
    try:
        for chunk in chunks:
            for what, proc in list(open_.items()):
                try:
                    proc.stdin.write(chunk)  # type: ignore[union-attr]
                except BrokenPipeError:
                    del open_[what]  # it has read all it wanted (--list: the contents)
        for proc in open_.values():
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()  # type: ignore[union-attr]
        codes = {what: proc.wait() for what, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    collect.join(timeout=10)
    check.objects = sum(1 for ln in listing if ln.strip() and not ln.startswith(b";"))
    check.tables = sum(1 for ln in listing if _PG_TABLE.match(ln))
    for what, code in codes.items():
        if code != 0:
            message = tails[what].text() or "no message"
            if "unsupported version" in message:  # an old client, not a damaged dump
                raise DumpError(
                    f"{what} cannot read this dump: {message}; install a PostgreSQL client "
                    "at least as new as the pg_dump that wrote it"
                )
            check.error = (
                f"the dump is incomplete or damaged after {check.bytes} bytes: {what} failed "
                f"(exit code {code}): {message}"
            )
            return
    if "pg_restore" not in open_:
        check.error = (
            f"the dump is damaged: pg_restore stopped reading before its end ({check.bytes} bytes)"
        )


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a stream without their newline; the last one may be unterminated."""
    rest = b""
    for chunk in chunks:
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest


def _check_pg_globals(chunks: Iterable[bytes], check: DumpCheck) -> None:
    last = b""
    for line in _lines(chunks):
        if line.startswith(b"CREATE ROLE "):
            check.objects += 1
        if line.strip() not in (b"", b"--"):
            last = line.strip()
    if last != b"-- PostgreSQL database cluster dump complete":
        check.error = (
            f"the roles' dump ends without pg_dumpall's last line after {check.bytes} bytes "
            "(truncated)"
        )


class _SqlScanner:
    """The statements of a mysqldump file, line by line, as the mysql client splits them.

    Tracks quotes (with backslash escapes), ``/* */`` comments (``/*!NNNNN ... */`` is
    SQL the server runs), ``--`` and ``#`` comments and ``DELIMITER`` lines.
    """

    _QUOTE_END: ClassVar[dict[bytes, re.Pattern[bytes]]] = {
        q: re.compile(rb"[\\" + q + rb"]") for q in (b"'", b'"', b"`")
    }

    def __init__(self) -> None:
        self.quote: bytes | None = None
        self.comment = False  # inside a /* */ comment that is not SQL
        self.versioned = 0  # inside /*! ... */ SQL
        self.pending = False  # a statement has begun and not yet ended
        self.statements = 0
        self.tables = 0
        self.completed = False  # the last thing seen is the "-- Dump completed" line
        self.header = b""
        self._count = 0
        self._delimiter = b";"
        self._default = self._pattern()

    def _pattern(self) -> re.Pattern[bytes]:
        delimiter = re.escape(self._delimiter)
        return re.compile(rb"['\"`#]|/\*|\*/|--(?=[ \t\r]|$)|" + delimiter)

    def line(self, line: bytes) -> None:
        self._count += 1
        if self._count <= 3 and line.startswith((b"-- MySQL dump", b"-- MariaDB dump")):
            self.header = line.strip()  # after MariaDB's sandbox-mode comment, if any
        if self.quote is None and not self.comment and not self.pending and not self.versioned:
            stripped = line.strip()
            if not stripped:
                return
            if stripped.startswith(b"--"):
                self.completed = stripped.startswith(b"-- Dump completed")
                return
            if stripped.upper().startswith(b"DELIMITER "):
                self._delimiter = stripped[10:].strip()
                self._default = self._pattern()
                return
            if stripped.startswith(b"CREATE TABLE "):
                self.tables += 1
        self.completed = False
        self._scan(line)

    def _scan(self, line: bytes) -> None:
        pos, end = 0, len(line)
        while pos < end:
            if self.quote is not None:
                m = self._QUOTE_END[self.quote].search(line, pos)
                if m is None:
                    return  # the string goes on in the next line
                if line[m.start()] == 0x5C:  # backslash: the next byte is escaped
                    pos = m.start() + 2
                    continue
                self.quote = None
                pos = m.end()
                continue
            if self.comment:
                close = line.find(b"*/", pos)
                if close < 0:
                    return
                self.comment = False
                pos = close + 2
                continue
            m = self._default.search(line, pos)
            if m is None:
                if not self.pending and line[pos:].strip():
                    self.pending = True
                return
            if not self.pending and line[pos : m.start()].strip():
                self.pending = True
            token = m.group()
            pos = m.end()
            if token in (b"'", b'"', b"`"):
                self.quote = token
                self.pending = True
            elif token == b"/*":
                if line.startswith((b"!", b"M!"), pos):
                    self.versioned += 1
                    self.pending = True
                else:
                    self.comment = True
            elif token == b"*/":
                self.versioned = max(0, self.versioned - 1)
            elif token in (b"--", b"#"):
                return
            else:  # the delimiter
                if self.pending:
                    self.statements += 1
                self.pending = False

    def problem(self) -> str | None:
        """What is wrong with the file as seen so far, taken as the whole dump."""
        if not self.header:
            return "it does not begin with mysqldump's or mariadb-dump's header line"
        if self.quote is not None:
            return f"it ends inside a {self.quote.decode()}-quoted string"
        if self.comment or self.versioned:
            return "it ends inside a /* */ comment"
        if self.pending:
            return "it ends inside a statement that has no delimiter"
        if not self.completed:
            return "its last line is not the dump tool's '-- Dump completed'"
        return None


def _check_mysqldump(chunks: Iterable[bytes], check: DumpCheck) -> None:
    scanner = _SqlScanner()
    for line in _lines(chunks):
        scanner.line(line)
    check.objects = scanner.statements
    check.tables = scanner.tables
    problem = scanner.problem()
    if problem is not None:
        check.error = (
            f"the dump is incomplete or damaged after {check.bytes} bytes "
            f"({scanner.statements} statements): {problem}"
        )
