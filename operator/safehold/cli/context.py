"""From command-line options and environment to an opened repository.

The password never comes from an argument (it would show in ``ps`` and in a
pod's spec): ``SAFEHOLD_PASSWORD``, ``--password-file`` / ``SAFEHOLD_PASSWORD_FILE``,
or a prompt on a terminal.
"""

from __future__ import annotations

import ctypes
import getpass
import os
import sys
from argparse import Namespace
from pathlib import Path

from safehold.repo import Repository
from safehold.storage import Storage, open_storage

__all__ = ["UsageError", "open_repo", "open_repo_storage", "read_password", "tune_malloc"]


class UsageError(Exception):
    """The command line or environment is incomplete; exit code 2."""


def tune_malloc() -> None:
    """Ask glibc to hand large buffers back to the system at once.

    Chunks and packs are megabytes each and short-lived; with glibc's defaults they
    land in per-thread arenas that keep the memory (fragmentation), which shows
    as peak RSS far above what is in use. A fixed 1 MiB mmap threshold and two
    arenas keep the RSS near the real working set. Harmless where unavailable.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1024 * 1024)  # M_MMAP_THRESHOLD (also disables the dynamic threshold)
        libc.mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        return


def _option_pairs(items: list[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"-o/--option takes key=value, got {item!r}")
        options[key.strip()] = value
    return options


def open_repo_storage(args: Namespace) -> Storage:
    url = getattr(args, "repo", None) or os.environ.get("SAFEHOLD_REPOSITORY")
    if not url:
        raise UsageError(
            "no repository given: pass --repo URL or set SAFEHOLD_REPOSITORY "
            "(file:///path, s3://bucket/prefix, gs://bucket/prefix, azure://container/prefix)"
        )
    return open_storage(url, _option_pairs(getattr(args, "option", None) or []))


def _read_file(path: str, what: str) -> str:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read the {what} file {path}: {exc.strerror}") from exc
    password = text.rstrip("\r\n")
    if not password:
        raise UsageError(f"the {what} file {path} is empty")
    return password


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


def open_repo(args: Namespace, *, load_index: bool = True) -> Repository:
    storage = open_repo_storage(args)
    # Read the config first: a missing or unsupported repository is reported before
    # anyone is asked for a password.
    Repository.read_config(storage)
    return Repository.open(storage, read_password(args), load_index=load_index)
