"""From command-line options and environment to an opened repository.

The password never comes from an argument (it would show in ``ps`` and in a
pod's spec): ``SAFEHOLD_PASSWORD``, ``--password-file`` / ``SAFEHOLD_PASSWORD_FILE``,
or a prompt on a terminal.
"""

from __future__ import annotations

import contextvars
import getpass
import os
import sys
from argparse import ArgumentTypeError, Namespace
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from safehold.repo import Repository
    from safehold.repo.early_key import EarlyKey
    from safehold.storage import Storage
    from safehold.storage.wrappers import Bandwidth

__all__ = [
    "OPTION_FILE_ALIASES",
    "UsageError",
    "bandwidth",
    "cache_dir",
    "cache_root",
    "close_started_key",
    "early_key",
    "given_password",
    "kib_per_second",
    "open_repo",
    "open_repo_storage",
    "parse_time_option",
    "read_options_dir",
    "read_password",
    "start_early_key",
]


#: Repositories this command opened (for its audit record: safehold.cli.audit).
OPENED: contextvars.ContextVar[list[Repository]] = contextvars.ContextVar("opened")


class UsageError(Exception):
    """The command line or environment is incomplete; exit code 2."""


#: The environment forms of ``--limit-upload`` and ``--limit-download`` (KiB/s).
_LIMIT_UPLOAD_ENV = "SAFEHOLD_LIMIT_UPLOAD"
_LIMIT_DOWNLOAD_ENV = "SAFEHOLD_LIMIT_DOWNLOAD"


def _option_pairs(items: list[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"-o/--option takes key=value, got {item!r}")
        options[key.strip()] = value
    return options


#: File names of a mounted credentials Secret that mean a storage option (the variable names
#: people already keep in their Secrets); any other file name is the option's own name.
OPTION_FILE_ALIASES = {
    "AWS_ACCESS_KEY_ID": "access_key_id",
    "AWS_SECRET_ACCESS_KEY": "secret_access_key",
    "AWS_SESSION_TOKEN": "session_token",
    "AWS_REGION": "region",
    "AZURE_STORAGE_CONNECTION_STRING": "connection_string",
    "AZURE_STORAGE_ACCOUNT": "account_name",
    "AZURE_STORAGE_KEY": "account_key",
    "AZURE_STORAGE_SAS_TOKEN": "sas_token",
    "GOOGLE_CLOUD_PROJECT": "project",
}
#: Files whose *path* (not content) is the option: a key file the provider reads itself.
OPTION_FILE_PATHS = {
    "service-account.json": "credentials_file",
    "GOOGLE_APPLICATION_CREDENTIALS": "credentials_file",
}


def read_options_dir(directory: str) -> dict[str, str]:
    """Storage options from a directory, one file per option (a mounted Secret).

    Hidden entries (a Secret volume's ``..data`` links) are skipped; values lose one
    trailing newline. Values are never echoed in errors, only file names.
    """
    root = Path(directory)
    if not root.is_dir():
        raise UsageError(f"--options-dir {directory}: not a directory")
    options: dict[str, str] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        if entry.name in OPTION_FILE_PATHS:
            options[OPTION_FILE_PATHS[entry.name]] = str(entry)
            continue
        try:
            value = entry.read_text().removesuffix("\n").removesuffix("\r")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read option file {entry}: {exc}") from exc
        options[OPTION_FILE_ALIASES.get(entry.name, entry.name)] = value
    return options


#: The options naming files whose contents are secrets (a hook's output is scrubbed of them).
_SECRET_FILE_OPTIONS = (
    ("password_file", "SAFEHOLD_PASSWORD_FILE"),
    ("to_password_file", "SAFEHOLD_TO_PASSWORD_FILE"),
    ("db_password_file", "SAFEHOLD_DB_PASSWORD_FILE"),
)
_SECRET_DIR_OPTIONS = (
    ("options_dir", "SAFEHOLD_OPTIONS_DIR"),
    ("to_options_dir", "SAFEHOLD_TO_OPTIONS_DIR"),
)


def secret_file_values(args: Namespace) -> list[str]:
    """The contents of every secret file this command was given (password files, each file
    of an options directory: a mounted Secret), whole and line by line, so that what a
    hook prints of them can be scrubbed. Unreadable files are skipped: the command itself
    reports them when it reads them."""
    paths: list[Path] = []
    for attr, env in _SECRET_FILE_OPTIONS:
        path = getattr(args, attr, None) or os.environ.get(env)
        if path:
            paths.append(Path(path))
    for attr, env in _SECRET_DIR_OPTIONS:
        directory = getattr(args, attr, None) or os.environ.get(env)
        if directory and Path(directory).is_dir():
            paths += [e for e in Path(directory).iterdir() if not e.name.startswith(".")]
    values: set[str] = set()
    for path in paths:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        values.add(text.strip())
        values.update(line.strip() for line in text.splitlines())
    return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)


def location_url(text: str) -> str:
    """A location as a person types it: a URL, or a local directory (``./repo``,
    ``/srv/repo``, ``~/backups``), made into the ``file://`` URL of its absolute path.
    Something that looks like a URL without ``//`` (restic's ``s3:host/bucket``) is refused
    rather than taken for a directory of that name."""
    if "://" in text:
        return text
    head = text.split("/", 1)[0]
    if ":" in head:
        scheme = head.split(":", 1)[0]
        raise UsageError(
            f"{text!r} is neither a URL nor a local path: write {scheme}://BUCKET/PREFIX "
            "(s3://, gs://, azure://, file:///path) or a directory path such as ./repo"
        )
    from urllib.parse import quote

    return "file://" + quote(str(Path(text).expanduser().absolute()), safe="/")


def _repo_location(args: Namespace) -> tuple[str, dict[str, str]]:
    """The repository's location URL and its storage options (``--options-dir``, ``-o``)."""
    url = getattr(args, "repo", None) or os.environ.get("SAFEHOLD_REPOSITORY")
    if not url:
        raise UsageError(
            "no repository given: pass --repo URL or set SAFEHOLD_REPOSITORY (a directory "
            "path, s3://bucket/prefix, gs://bucket/prefix, azure://container/prefix)"
        )
    options: dict[str, str] = {}
    directory = getattr(args, "options_dir", None) or os.environ.get("SAFEHOLD_OPTIONS_DIR")
    if directory:
        options.update(read_options_dir(directory))
    options.update(_option_pairs(getattr(args, "option", None) or []))
    return location_url(url), options


def open_repo_storage(args: Namespace) -> Storage:
    # A command that opens a repository streams megabyte buffers: keep them in the heap.
    # (Not process-wide in main: the long-running operator has no such buffers, and
    # would only keep freed memory it does not need.)
    from safehold.engine.tuning import tune_malloc  # (ctypes) not needed to parse arguments
    from safehold.storage import open_storage  # (the providers' registry) nor this

    tune_malloc()
    url, options = _repo_location(args)
    # The standard wrappers: transient failures (throttling, 5xx, resets) are retried with
    # backoff instead of failing a backup hours in; docs/storage.md describes the stack.
    return open_storage(url, options, wrap=True, bandwidth=bandwidth(args))


def kib_per_second(text: str) -> int:
    """A bandwidth limit as typed (``--limit-upload 512``): whole KiB/s, at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ArgumentTypeError(f"{text!r} is not a whole number of KiB/s of at least 1")
    return value


def bandwidth(args: Namespace) -> Bandwidth | None:
    """The bandwidth limits of this command (``--limit-upload``, ``--limit-download`` or
    their environment variables), as the process's shared buckets: every storage the
    command opens (replication's repository and site) draws from the same two. Lock
    objects are exempt: their refresh must never wait behind pack uploads."""
    from safehold.repo.layout import LOCKS
    from safehold.storage.wrappers import shared_bandwidth

    limits: list[int | None] = []
    for attr, env in (("limit_upload", _LIMIT_UPLOAD_ENV), ("limit_download", _LIMIT_DOWNLOAD_ENV)):
        value: int | None = getattr(args, attr, None)
        if value is None and os.environ.get(env):
            try:
                value = kib_per_second(os.environ[env])
            except ArgumentTypeError as exc:
                raise UsageError(f"{env}: {exc}") from exc
        limits.append(None if value is None else value * 1024)
    return shared_bandwidth(limits[0], limits[1], exempt=(LOCKS,))


def _read_file(path: str, what: str) -> str:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read the {what} file {path}: {exc.strerror}") from exc
    password = text.rstrip("\r\n")
    if not password:
        raise UsageError(f"the {what} file {path} is empty")
    return password


def given_password(args: Namespace) -> str | None:
    """The password when it is given without a prompt (``--password-file``,
    ``SAFEHOLD_PASSWORD_FILE``, ``SAFEHOLD_PASSWORD``), else None; a file that cannot be
    read is None too (:func:`read_password` reports it)."""
    path = getattr(args, "password_file", None) or os.environ.get("SAFEHOLD_PASSWORD_FILE")
    if path:
        try:
            return _read_file(path, "password")
        except UsageError:
            return None
    return os.environ.get("SAFEHOLD_PASSWORD") or None


def read_password(
    args: Namespace,
    *,
    env: str = "SAFEHOLD_PASSWORD",
    file_attr: str = "password_file",
    file_env: str = "SAFEHOLD_PASSWORD_FILE",
    confirm: bool = False,
    what: str = "password",
) -> str:
    path = getattr(args, file_attr, None) or os.environ.get(file_env)
    if path:
        return _read_file(path, what)
    value = os.environ.get(env)
    if value:
        return value
    if sys.stdin.isatty() and sys.stderr.isatty():
        first = getpass.getpass(f"repository {what}: ")
        if confirm and getpass.getpass(f"repeat the {what}: ") != first:
            raise UsageError(f"the two {what}s differ")
        if first:
            return first
    flag = "--" + file_attr.replace("_", "-")
    raise UsageError(f"no {what}: set {env}, or pass {flag} PATH (or set {file_env})")


def cache_dir(args: Namespace, storage: Storage) -> Path | None:
    """Where this command keeps its local cache of the repository's index, snapshots and
    packs of trees (repo/local_cache.py, docs/cli.md "Local cache"); None: no cache.

    ``--no-cache``, or a repository on a local file system (a copy would be as far away
    as the original), has none. Else ``--cache-dir``, ``$SAFEHOLD_CACHE_DIR``,
    ``$XDG_CACHE_HOME/safehold/repositories``, ``~/.cache/safehold/repositories``."""
    if getattr(args, "no_cache", False) or storage.location.startswith("file:"):
        return None
    return cache_root(args)


def cache_root(args: Namespace) -> Path:
    """The directory of the local caches (one per repository): ``--cache-dir``, else
    ``$SAFEHOLD_CACHE_DIR``, ``$XDG_CACHE_HOME/safehold/repositories``,
    ``~/.cache/safehold/repositories``."""
    chosen = getattr(args, "cache_dir", None) or os.environ.get("SAFEHOLD_CACHE_DIR")
    if chosen:
        return Path(chosen).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "safehold" / "repositories"


def open_repo(args: Namespace, *, load_index: bool = True, cache: bool = True) -> Repository:
    """The repository of ``--repo``, opened with the password; ``cache``: with the local
    cache (:func:`cache_dir`). The commands that check what storage holds (``verify``,
    ``repair``) open it without: they must read the objects themselves, never a copy."""
    from safehold.repo import Repository  # (the crypto) not needed to parse arguments

    if cache:
        early = early_key(args, given_password(args))
    else:  # checks what storage holds: reads its keys itself
        close_started_key()
        early = None
    try:
        storage = open_repo_storage(args)
        # Read the config first: a missing or unsupported repository is reported before
        # anyone is asked for a password.
        config = Repository.read_config(storage)
        repo = Repository.open(
            storage,
            read_password(args),
            load_index=load_index,
            cache_dir=cache_dir(args, storage) if cache else None,
            config=config,
            early=early,
        )
    finally:
        if early is not None:
            early.close()
    OPENED.get([]).append(repo)
    return repo


def early_key(args: Namespace, password: str | None) -> EarlyKey | None:
    """The derivation of the key this command will most likely open the repository with,
    started now with ``password`` (None: none is started) unless the entry point started
    it already (:func:`start_early_key`); None when there is nothing to derive early.

    * A repository in a directory: its cheapest key object, read from the directory.
    * On an object store, with a local cache: the key that opened it last at this
      location, which also remembers the key that opens it or that ``repo init`` makes.

    The open uses the result only when the repository holds that very key object
    (repo/early_key.py)."""
    from safehold.repo.early_key import EarlyKey

    global _started
    where = _early_location(args)
    started, _started = _started, None
    if started is not None:
        if (started.where, started.password) == (where, password):
            return started.early
        started.early.close()  # not this command's: never fork with its thread running
    if where is None:
        return None
    if where.startswith("file:"):
        return EarlyKey.local(Path(where.removeprefix("file:")), password)
    return EarlyKey.remembered(cache_root(args), where, password)


@dataclass(frozen=True)
class _Started:
    """A derivation the entry point started (cli/start.py): where its key came from and
    the password it derives with, which the command's open must share to take it."""

    where: str | None
    password: str
    early: EarlyKey


_started: _Started | None = None


def close_started_key() -> None:
    """Wait for the derivation the entry point started and let it go, if no command took
    it (a command that opens no repository, or checks its keys itself): a process must
    not fork with its thread running, nor exit in the middle of it."""
    global _started
    if _started is not None:
        _started.early.close()
        _started = None


def start_early_key(args: Namespace) -> None:
    """Start deriving the key early, from the options read before the command's modules
    load (``args``: the options every command takes), when the password comes without a
    prompt. A command line this cannot read starts nothing."""
    password = given_password(args)
    if password is None:
        return
    try:
        early = early_key(args, password)
    except UsageError:
        return
    global _started
    if early is not None:
        _started = _Started(_early_location(args), password, early)


def _early_location(args: Namespace) -> str | None:
    """Where :func:`early_key` finds the key: ``file:<keys directory>`` for a repository in
    a directory; else the location as the local cache names it, or None without one."""
    url, options = _repo_location(args)
    if url.startswith("file:"):
        parts = urlsplit(url)
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            return None  # opening it reports why
        return f"file:{Path(path) / 'keys'}"
    if getattr(args, "no_cache", False):
        return None
    # What tells two repositories at one URL apart: two servers (S3's endpoint, also from
    # the environment) or two Azure accounts can each have a bucket of that name. Told
    # apart wrongly, a command would only derive a key it then does not use.
    env = os.environ
    server = (
        options.get("endpoint") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    )
    account = options.get("account_name") or env.get("AZURE_STORAGE_ACCOUNT")
    return f"{url} {server or ''} {account or ''}"


def parse_time_option(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 time given to ``option`` (``--time``, ``--before``); no zone means UTC."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(f"{option} {value!r} is not ISO 8601 (e.g. 2026-11-26T06:00:00Z)") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)
