"""``safehold repo``: its commands' options; ``repo init`` and ``repo info`` (create a
repository, or report one) here, ``unlock`` and ``key`` in :mod:`safehold.cli.commands`.

``repo info --allow-empty`` is the recovery-site check: a reachable location without a
repository yet is a success (``"empty": true``), while a missing bucket or refused
credentials still fail. ``repo init --if-absent`` reports an existing repository like
``repo info``, and refuses one whose object lock differs from the one asked for: the
lock is fixed when a repository is created (docs/immutability.md).
"""

from __future__ import annotations

import argparse
from argparse import Namespace
from datetime import UTC, datetime
from typing import Any

import safehold.repo
from safehold.cli import commands, exitcodes, maintenance
from safehold.cli.audit import audited
from safehold.cli.context import (
    UsageError,
    early_key,
    open_repo,
    open_repo_storage,
    read_password,
)
from safehold.cli.maintenance import init_lock_settings
from safehold.cli.output import Output, human_size
from safehold.cli.passwords import add_password_option, check_new_password
from safehold.repo.config import DEFAULT_COMPRESSION_LEVEL, ChunkerParams, Config
from safehold.repo.errors import RepositoryNotFound
from safehold.repo.layout import DATA, LOCKS
from safehold.repo.locks import LockInfo
from safehold.storage import Storage

__all__ = ["oldest_lock_age", "register", "repo_info", "repo_init", "sources_newest"]


def _lock_text(mode: str | None, days: int) -> str:
    return f"{mode} for {days} day(s)" if mode else "no object lock"


def _check_lock_matches(config: Config, asked: dict[str, Any], location: str) -> None:
    """``repo init --if-absent --object-lock-*`` on an existing repository: the same lock,
    or a usage error that says what the repository has and what to do."""
    if not asked:
        return
    mode, days = asked["object_lock_mode"], asked["object_lock_days"]
    if config.object_lock_mode == mode and config.object_lock_days == days:
        return
    has = _lock_text(config.object_lock_mode, config.object_lock_days)
    raise UsageError(
        f"{location}: the repository there has {has}, but {_lock_text(mode, days)} was asked "
        "(--object-lock-mode/--object-lock-days); the object lock is fixed when a repository "
        "is created: create a new repository in a lock-enabled bucket, or change the "
        "BackupLocation's immutabilityDays to match the repository"
    )


def _say_what_differs(out: Output, config: Config, pack_mib: int | None, level: int | None) -> None:
    """``repo init --if-absent`` found a repository: a --pack-size or --compression-level
    given that differs from its config is a warning (they are set when a repository is
    created), not silently dropped."""
    has_mib = config.pack_size / (1024 * 1024)
    if pack_mib is not None and pack_mib != has_mib:
        out.warn(
            f"the repository has a pack size of {has_mib:g} MiB; --pack-size {pack_mib} "
            "applies only when a repository is created"
        )
    if level is not None and level != config.compression_level:
        out.warn(
            f"the repository compresses at level {config.compression_level}; "
            f"--compression-level {level} applies only when a repository is created"
        )


def repo_init(args: Namespace, out: Output) -> int:
    pack_mib = 16 if args.pack_size is None else args.pack_size
    level = DEFAULT_COMPRESSION_LEVEL if args.compression_level is None else args.compression_level
    if not 1 <= pack_mib <= 512:
        raise UsageError("--pack-size is in MiB, between 1 and 512")
    if not 1 <= level <= 19:
        raise UsageError("--compression-level is a zstd level between 1 and 19")
    storage = open_repo_storage(args)
    lock = init_lock_settings(args)
    if getattr(args, "if_absent", False):
        try:
            config, _ = safehold.repo.Repository.read_config(storage)
        except RepositoryNotFound:
            pass
        else:
            _check_lock_matches(config, lock, storage.location)
            _say_what_differs(out, config, args.pack_size, args.compression_level)
            return repo_info(args, out, initialized=False)
    password = read_password(args, confirm=True)
    check_new_password(args, password)
    config = Config.new(
        chunker=ChunkerParams(),
        compression_level=level,
        pack_size=pack_mib * 1024 * 1024,
        **lock,
    )
    repo = safehold.repo.Repository.init(storage, password, config, early=early_key(args, None))
    out.print(f"created repository {repo.config.id[:16]} at {storage.location}")
    if config.object_lock_mode:
        locked = _lock_text(config.object_lock_mode, config.object_lock_days)
        out.print(f"every object it writes is locked: {locked}")
    out.print("keep the password safe: without it the data cannot be read by anyone")
    out.summary(
        {
            "ok": True,
            "repository": repo.config.id,
            "location": storage.location,
            "version": repo.config.version,
            "initialized": True,
            "snapshots": 0,
            "pack_bytes": 0,
            "object_lock": _object_lock(config),
            "sources_newest": [],
            "locks": 0,
            "oldest_lock_age_seconds": 0,
        }
    )
    return exitcodes.OK


def _object_lock(config: Config) -> dict[str, Any] | None:
    if not config.object_lock_mode:
        return None
    return {"mode": config.object_lock_mode, "days": config.object_lock_days}


def sources_newest(snaps: list[Any]) -> list[dict[str, Any]]:
    """Per source, by source name: how many snapshots, and the newest one's time and id."""
    from safehold.repo.snapshot import newest_per_source

    counts: dict[str, int] = {}
    for s in snaps:
        counts[s.source] = counts.get(s.source, 0) + 1
    return [
        {"source": source, "count": counts[source], "newest_time": s.time, "newest_id": s.id}
        for source, s in newest_per_source(snaps).items()
    ]


def oldest_lock_age(repo: safehold.repo.Repository, locks: list[LockInfo], now: datetime) -> int:
    """Seconds since the oldest lock was written or last refreshed (0: no lock). A live
    lock is refreshed every few minutes, so an age beyond the stale age is a lock that a
    killed process left behind (``safehold repo unlock`` removes it). A lock that cannot be
    read (another repository's key, damaged) counts as held and never goes stale: its age
    is its object's, from the listing."""
    if not locks:
        return 0
    written: dict[str, datetime | None] = {}
    if not all(lock.readable for lock in locks):
        written = {info.name: info.modified for info in repo.storage.list(LOCKS)}
    oldest = min((written.get(lock.name) if not lock.readable else None) or lock.time
                 for lock in locks)  # fmt: skip
    return max(0, int((now - oldest).total_seconds()))


def _empty(args: Namespace, out: Output, storage: Storage) -> int | None:
    """``repo info --allow-empty`` where there was no config: reachable and empty is fine.
    None: a repository was created between the config read and the listing (``repo init``
    or a replication running meanwhile), so the caller reports on it instead."""
    storage.check_reachable()  # a missing bucket or refused credentials fail here
    leftover = next(iter(storage.list("")), None)
    if leftover is not None:
        try:
            safehold.repo.Repository.read_config(storage)
        except RepositoryNotFound:
            pass
        else:
            return None
        raise RepositoryNotFound(
            f"{storage.location}: holds objects (such as {leftover.name}) but no repository "
            "config; it is not an empty location: check --repo, or use another prefix"
        )
    out.print(f"{storage.location}: reachable, no repository yet")
    out.summary(
        {
            "ok": True,
            "empty": True,
            "location": storage.location,
            "snapshots": 0,
            "pack_bytes": 0,
            "locks": 0,
            "oldest_lock_age_seconds": 0,
        }
    )
    return exitcodes.OK


def repo_info(args: Namespace, out: Output, *, initialized: bool | None = None) -> int:
    if getattr(args, "allow_empty", False):
        storage = open_repo_storage(args)
        try:
            safehold.repo.Repository.read_config(storage)
        except RepositoryNotFound:
            if (code := _empty(args, out, storage)) is not None:
                return code
    repo = open_repo(args)
    packs = 0
    pack_bytes = 0
    for info in repo.storage.list(DATA):
        packs += 1
        pack_bytes += info.size
    snaps = repo.snapshots()
    locks = safehold.repo.list_locks(repo)
    checked = datetime.now(UTC)
    c = repo.config
    doc: dict[str, Any] = {
        "ok": True,
        "empty": False,
        "repository": c.id,
        "location": repo.location,
        "version": c.version,
        "created": c.created,
        "chunker": {
            "min": c.chunker.min_size,
            "avg": c.chunker.avg_size,
            "max": c.chunker.max_size,
        },
        "compression_level": c.compression_level,
        # small files compressed with a dictionary (format sections 4 and 6)
        "dictionaries": c.dictionaries,
        "pack_size": c.pack_size,
        "object_lock": _object_lock(c),
        "snapshots": len(snaps),
        "sources": sorted({s.source for s in snaps}),
        "sources_newest": sources_newest(snaps),
        "packs": packs,
        "pack_bytes": pack_bytes,
        "blobs": len(repo.index),
        "keys": len(repo.list_keys()),
        # what new data is sealed with (format section 5b; always 1 in format version 1)
        "data_key_version": repo.aead.key_version,
        "locks": len(locks),
        # the alert on locks left behind (SafeholdRepositoryLockedLong) reads this
        "oldest_lock_age_seconds": oldest_lock_age(repo, locks, checked),
    }
    if initialized is not None:
        doc["initialized"] = initialized  # whether this run created it (repo init --if-absent)
    out.print(f"repository   {c.id}")
    out.print(f"location     {repo.location}")
    out.print(f"format       version {c.version}, created {c.created}")
    out.print(
        f"chunker      FastCDC min {human_size(c.chunker.min_size)}"
        f" avg {human_size(c.chunker.avg_size)} max {human_size(c.chunker.max_size)}"
    )
    dictionaries = " with dictionaries" if c.dictionaries else ""
    out.print(f"compression  zstd level {c.compression_level}{dictionaries}; AES-256-GCM; BLAKE3")
    out.print(f"object lock  {_lock_text(c.object_lock_mode, c.object_lock_days)}")
    out.print(f"snapshots    {len(snaps)} of {len(doc['sources'])} source(s)")
    for entry in doc["sources_newest"]:
        out.print(
            f"  {entry['source']}: {entry['count']}, newest {entry['newest_time'][:19]} "
            f"{entry['newest_id'][:12]}"
        )
    out.print(f"stored       {human_size(pack_bytes)} in {packs} packs, {len(repo.index)} blobs")
    out.print(
        f"keys         {doc['keys']}, data key version {doc['data_key_version']}, "
        f"locks {doc['locks']}"
    )
    for lock in sorted(locks, key=lambda lock: lock.time):
        out.print(f"  {lock.describe(checked)}")
    out.summary(doc)
    return exitcodes.OK


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """``safehold repo``: init, info, unlock, key add/list/remove/rotate."""
    repo = sub.add_parser("repo", help="create and manage repositories")
    repo_sub = repo.add_subparsers(dest="repo_command", metavar="SUBCOMMAND", required=True)
    init = repo_sub.add_parser("init", parents=[common], help="create a repository")
    init.add_argument(
        "--pack-size",
        type=int,
        default=None,  # 16; None: not given (--if-absent on a repository says it differs)
        metavar="MiB",
        help="target pack size in MiB (default 16)",
    )
    init.add_argument(
        "--compression-level",
        type=int,
        default=None,  # DEFAULT_COMPRESSION_LEVEL
        metavar="N",
        help=f"zstd level for new data (default {DEFAULT_COMPRESSION_LEVEL})",
    )
    init.add_argument(
        "--if-absent",
        action="store_true",
        help="when a repository exists there already, open it (checking the password) "
        "and report it like repo info instead of failing",
    )
    maintenance.add_init_options(init)
    add_password_option(init)
    init.set_defaults(func=repo_init)
    info = repo_sub.add_parser("info", parents=[common], help="show config and sizes")
    info.add_argument(
        "--allow-empty",
        action="store_true",
        help="a reachable location without a repository is a success ('empty': true), "
        "not exit code 10; a missing bucket or refused credentials still fail",
    )
    info.set_defaults(func=repo_info)
    unlock = repo_sub.add_parser("unlock", parents=[common], help="remove stale locks")
    unlock.add_argument(
        "--remove-all",
        action="store_true",
        help="remove every lock, also live ones (only when nothing runs)",
    )
    unlock.set_defaults(func=commands.repo_unlock)
    key = repo_sub.add_parser("key", help="add, list and remove passwords; rotate the data key")
    key_sub = key.add_subparsers(dest="key_command", metavar="ACTION", required=True)
    add = key_sub.add_parser("add", parents=[common], help="add a password")
    add.add_argument(
        "--new-password-file",
        metavar="PATH",
        help="the new password (default: $SAFEHOLD_NEW_PASSWORD)",
    )
    add_password_option(add)
    add.set_defaults(func=audited("key add", commands.key_add))
    lst = key_sub.add_parser("list", parents=[common], help="list keys")
    lst.set_defaults(func=commands.key_list)
    rm = key_sub.add_parser("remove", parents=[common], help="remove a key by id")
    rm.add_argument("key_id", metavar="ID")
    rm.set_defaults(func=audited("key remove", commands.key_remove))
    rotate = key_sub.add_parser(
        "rotate",
        parents=[common],
        help="new data key version for new writes (the repository's only key)",
    )
    rotate.set_defaults(func=audited("key rotate", commands.key_rotate))
