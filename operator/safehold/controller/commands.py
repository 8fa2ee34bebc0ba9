"""The ``safehold`` command lines of every Job the operator creates: one builder each.

A Job's command is the CLI's contract with the operator, so it is written in one place,
with typed parameters, and ``tests/controller/test_commands.py`` parses every line these
functions can produce with the real ``safehold.cli.main.build_parser()``. What every Job
adds after the command (``--repo``, ``--options-dir``, ``--password-file``, ``--json``,
``--termination-log``, a recovery site's ``--to ...``, a location's bandwidth limits
from :func:`limit_options`) is added by
safehold.controller.jobs and safehold.controller.repository, not here.

Options that take a pattern are written ``--option=VALUE``, so a value starting with ``-``
stays a value. A new command is one more function here and one more case in the test.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

__all__ = [
    "DatabaseConnection",
    "Existing",
    "HookOptions",
    "KeepRules",
    "ResourceSelection",
    "apply_resources",
    "backup",
    "dump",
    "export_resources",
    "forget",
    "hook_options",
    "limit_options",
    "meta_options",
    "prune_options",
    "replicate",
    "replicate_source",
    "repo_check",
    "restore",
    "restore_db",
    "restore_db_check",
    "run_hooks",
    "snapshots",
    "tag_options",
    "verify",
]

BackupType = Literal["full", "incremental", "differential"]
DatabaseEngine = Literal["postgresql", "mysql"]
#: ``restore-db --existing``: what happens to a database that exists.
Existing = Literal["skip", "overwrite", "fail"]


def _repeat(option: str, values: Iterable[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        out += [option, value]
    return out


def tag_options(run: str | None, tags: Sequence[str] = ()) -> list[str]:
    """``--tag run=RUN`` (the BackupRun a snapshot belongs to, how a restore finds a run's
    dumps) and the run's own tags."""
    return _repeat("--tag", ([f"run={run}"] if run else []) + list(tags))


def meta_options(meta: Mapping[str, str]) -> list[str]:
    """``--meta KEY=VALUE`` for every non-empty value, in key order (stable Job specs)."""
    return _repeat("--meta", (f"{k}={v}" for k, v in sorted(meta.items()) if v))


@dataclass(frozen=True)
class HookOptions:
    """Job-side hooks of a volume source (run in the backup Job's hooks container)."""

    pre: Sequence[str] = ()
    post: Sequence[str] = ()
    timeout_seconds: float = 60
    on_error: Literal["fail", "continue"] = "fail"


def hook_options(hooks: HookOptions | None) -> list[str]:
    """The hook options ``backup`` and ``run-hooks`` share; empty without hooks."""
    if hooks is None or not (hooks.pre or hooks.post):
        return []
    return [
        *_repeat("--pre-hook", hooks.pre),
        *_repeat("--post-hook", hooks.post),
        "--hook-timeout",
        f"{hooks.timeout_seconds:g}",
        "--hook-on-error",
        hooks.on_error,
    ]


def run_hooks(handover: str, hooks: Sequence[str]) -> list[str]:
    """The hooks container's command: ``hooks`` are :func:`hook_options`' output."""
    return ["run-hooks", "--handover", handover, *hooks]


def limit_options(upload: int | None, download: int | None) -> list[str]:
    """A location's bandwidth limits in KiB/s (``--limit-upload``, ``--limit-download``;
    None: unlimited), which every Job that reaches the location passes."""
    args = ["--limit-upload", str(upload)] if upload is not None else []
    return args + (["--limit-download", str(download)] if download is not None else [])


def backup(
    path: str,
    *,
    source: str,
    host: str,
    type: BackupType,
    run: str,
    tags: Sequence[str] = (),
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    verify: bool = False,
    hooks: Sequence[str] = (),
    meta: Mapping[str, str] | None = None,
) -> list[str]:
    """``safehold backup`` of a mounted volume; ``hooks`` are :func:`hook_options`' output.
    ``host``: the snapshot's host (every Job's pod has a new host name: the default would
    split the source into one series per run), see ``RunContext.snapshot_host``."""
    args = ["backup", path, "--source", source, "--host", host, "--type", type]
    args += tag_options(run, tags)
    args += [f"--include={p}" for p in include] + [f"--exclude={p}" for p in exclude]
    if verify:
        args.append("--verify")  # the new snapshot's structure, in the Job (docs/verify.md)
    return args + list(hooks) + meta_options(meta or {})


@dataclass(frozen=True)
class DatabaseConnection:
    """Where a database Job connects; the credentials are files, never arguments."""

    engine: DatabaseEngine
    host: str
    port: int | None
    user_file: str
    password_file: str

    def options(self) -> list[str]:
        """The ENGINE argument and :meth:`server_options` (``dump``, ``restore-db``)."""
        return [self.engine, *self.server_options()]

    def server_options(self) -> list[str]:
        """Where and as whom to connect (the PostgreSQL-only ``pg-*`` commands)."""
        args: list[str] = ["--db-host", self.host]
        if self.port:
            args += ["--db-port", str(self.port)]
        return [*args, "--db-user-file", self.user_file, "--db-password-file", self.password_file]


def dump(
    connection: DatabaseConnection,
    *,
    source: str,
    host: str,
    databases: Sequence[str],
    run: str,
    tags: Sequence[str] = (),
    meta: Mapping[str, str] | None = None,
) -> list[str]:
    """``safehold dump``: one snapshot per database (and PostgreSQL's globals), of ``host``
    (as for :func:`backup`)."""
    args = ["dump", *connection.options(), "--source", source, "--host", host]
    args += _repeat("--database", databases)
    return args + tag_options(run, tags) + meta_options(meta or {})


def pg_basebackup(
    connection: DatabaseConnection,
    *,
    source: str,
    host: str,
    run: str,
    tags: Sequence[str] = (),
    meta: Mapping[str, str] | None = None,
) -> list[str]:
    """``safehold pg-basebackup``: a PostgreSQL base backup into ``SOURCE/pg/base``."""
    args = ["pg-basebackup", *connection.server_options(), "--source", source, "--host", host]
    return args + tag_options(run, tags) + meta_options(meta or {})


def pg_archive_wal(
    connection: DatabaseConnection,
    *,
    source: str,
    host: str,
    slot: str,
    meta: Mapping[str, str] | None = None,
) -> list[str]:
    """``safehold pg-archive-wal``: the server's WAL up to now into ``SOURCE/pg/wal``."""
    args = ["pg-archive-wal", *connection.server_options(), "--source", source, "--host", host]
    return [*args, "--slot", slot, *meta_options(meta or {})]


def restore_db(
    connection: DatabaseConnection,
    *,
    source: str,
    run: str | None,
    existing: Existing,
) -> list[str]:
    """``safehold restore-db``: the dumps tagged ``run=RUN``, else the newest."""
    args = ["restore-db", *connection.options(), "--source", source, *tag_options(run)]
    return [*args, "--existing", existing]


def pg_restore_pitr(
    source: str, directory: str, *, to: datetime | None = None, snapshot: str | None = None
) -> list[str]:
    """``safehold pg-restore-pitr``: a data directory that recovers to ``to``, or to the end
    of base backup ``snapshot``, or (neither) as far as the WAL archive goes."""
    where = ["--snapshot", snapshot] if snapshot else []
    if to is not None:
        where = ["--to", to.astimezone(UTC).isoformat().replace("+00:00", "Z")]
    return ["pg-restore-pitr", "--source", source, *where, directory]


def pg_restore_pitr_check(source: str) -> list[str]:
    """``safehold pg-restore-pitr --check``: the newest base backup and all its WAL read."""
    return ["pg-restore-pitr", "--check", "--source", source]


def restore_db_check(
    engine: DatabaseEngine,
    *,
    source: str,
    run: str,
    scratch: DatabaseConnection | None = None,
) -> list[str]:
    """``safehold restore-db --check``: the run's dumps read to their end; with ``scratch``
    also ``--scratch``, each restored into a scratch database there and dropped."""
    if scratch is None:
        return ["restore-db", engine, "--check", "--source", source, *tag_options(run)]
    args = ["restore-db", *scratch.options(), "--scratch", "--check", "--source", source]
    return args + tag_options(run)


@dataclass(frozen=True)
class ResourceSelection:
    """Which cluster objects an export or apply takes (``selector``: a label query)."""

    namespaces: Sequence[str] = ()
    exclude_namespaces: Sequence[str] = ()
    include_resources: Sequence[str] = ()
    exclude_resources: Sequence[str] = ()
    selector: str | None = None

    def options(self) -> list[str]:
        args = _repeat("--namespace", self.namespaces)
        args += _repeat("--exclude-namespace", self.exclude_namespaces)
        args += _repeat("--include-resources", self.include_resources)
        args += _repeat("--exclude-resources", self.exclude_resources)
        return args + (["--selector", self.selector] if self.selector is not None else [])


def export_resources(
    selection: ResourceSelection,
    *,
    source: str,
    host: str,
    cluster_scoped: bool,
    include_secrets: bool,
    type: BackupType,
    run: str,
    tags: Sequence[str] = (),
    meta: Mapping[str, str] | None = None,
) -> list[str]:
    """``safehold export-resources``: the selected objects as one snapshot, of ``host``
    (as for :func:`backup`)."""
    args = ["export-resources", "--source", source, "--host", host, *selection.options()]
    if cluster_scoped:
        args.append("--cluster-scoped")
    if include_secrets:
        args.append("--include-secrets")
    return [*args, "--type", type, *tag_options(run, tags), *meta_options(meta or {})]


def apply_resources(
    snapshot: str,
    selection: ResourceSelection,
    *,
    only_namespaces: Sequence[str],
    names: Sequence[str] = (),
    namespace_mapping: Mapping[str, str] | None = None,
    existing: Literal["skip", "update", "fail"],
    dry_run: bool = False,
) -> list[str]:
    """``safehold apply-resources``: writes into ``only_namespaces`` and nowhere else."""
    args = ["apply-resources", snapshot, *_repeat("--only-namespace", only_namespaces)]
    args += selection.options() + _repeat("--name", names)
    mapping = sorted((namespace_mapping or {}).items())
    args += _repeat("--map-namespace", (f"{old}={new}" for old, new in mapping))
    args += ["--existing", existing]
    return args + (["--dry-run"] if dry_run else [])


def restore(
    snapshot: str, target: str, *, include: Sequence[str] = (), verify: bool = False
) -> list[str]:
    """``safehold restore`` of one snapshot into ``target``; ``verify``: then read every
    restored file back against the snapshot (a test restore)."""
    args = ["restore", snapshot, target, *_repeat("--include", include)]
    return args + (["--verify"] if verify else [])


def snapshots(prefix: str, *, before: str | None = None) -> list[str]:
    """``safehold snapshots --latest``: the newest snapshot of every source under ``prefix``."""
    args = ["snapshots", "--source-prefix", prefix]
    return args + (["--before", before] if before else []) + ["--latest"]


@dataclass(frozen=True)
class KeepRules:
    """``safehold forget``'s keep options (0 or empty: not given)."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: str | None = None
    tags: Sequence[str] = ()


def forget(prefix: str, keep: KeepRules, *, time_zone: str) -> list[str]:
    """``safehold forget`` of the sources under ``prefix`` (:func:`prune_options` after it
    also prunes)."""
    args = ["forget", "--source-prefix", prefix]
    counts = (
        ("--keep-last", keep.last),
        ("--keep-hourly", keep.hourly),
        ("--keep-daily", keep.daily),
        ("--keep-weekly", keep.weekly),
        ("--keep-monthly", keep.monthly),
        ("--keep-yearly", keep.yearly),
    )
    for flag, count in counts:
        if count:
            args += [flag, str(count)]
    if keep.within:
        args += ["--keep-within", keep.within]  # one grammar: api.types.RetentionSpan
    return [*args, *_repeat("--keep-tag", keep.tags), "--time-zone", time_zone]


def prune_options(lock_wait: float) -> list[str]:
    """``forget``'s ``--prune``, waiting up to ``lock_wait`` seconds for the exclusive lock."""
    return ["--prune", "--lock-wait", f"{lock_wait:g}"]


def replicate(prefix: str) -> list[str]:
    """``safehold replicate`` of the sources under ``prefix`` (before ``--to``);
    ``--only-newer`` keeps what the site's own retention forgot from coming back."""
    return ["replicate", "--source-prefix", prefix, "--only-newer"]


def replicate_source(source: str) -> list[str]:
    """``safehold replicate`` of the one source ``source`` (a WAL archive's, after each
    archive), with ``--only-newer`` as :func:`replicate`."""
    return ["replicate", "--source", source, "--only-newer"]


def verify(subset: tuple[int, int] | None = None) -> list[str]:
    """``safehold verify``; ``subset`` (K, N) also reads part K of N of the packs."""
    if subset is None:
        return ["verify"]
    return ["verify", "--read-data-subset", f"{subset[0]}/{subset[1]}"]


def repo_check(
    *, create: bool, allow_empty: bool = False, lock: tuple[str, int] | None = None
) -> list[str]:
    """The check of a BackupLocation: ``repo init --if-absent`` (``create``, with the
    object lock (mode, days) it must have) or ``repo info`` (``--allow-empty``)."""
    if not create:
        return ["repo", "info", *(["--allow-empty"] if allow_empty else [])]
    args = ["repo", "init", "--if-absent"]
    if lock is not None:
        args += ["--object-lock-mode", lock[0], "--object-lock-days", str(lock[1])]
    return args
