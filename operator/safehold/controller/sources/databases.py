"""Database sources: BackupRun and RestoreRequest Jobs that run ``safehold dump`` /
``safehold restore-db`` against the server a BackupPolicy names.

One Job per database source. It connects with the policy's host and port; the user
name and password come from the policy's credentials Secret, mounted read-only as two
files (``username``, ``password``) under :data:`CREDENTIALS_DIR`: the operator never
reads that Secret, and the password is in no argument, environment variable, status or
log. Snapshots are named ``NAMESPACE/POLICY/SOURCE/db/DATABASE`` (and ``.../globals``
for PostgreSQL roles) and tagged ``run=RUN``, so a restore finds a run's dumps by its
name without listing snapshot ids in the run's status (a restore resolved from the
repository uses the run tag of the newest dump). A restore needs the BackupPolicy for the
server and the credentials; without it (or its source) the item fails saying which.
"""

from __future__ import annotations

from typing import Any, Final

from safehold.api import (
    BackupLocation,
    BackupPolicy,
    ErrorDetail,
    RestoredItem,
    RestoreRequest,
    SourceResult,
)
from safehold.api.backuppolicy import DatabaseSource
from safehold.api.checks import ScratchDatabaseServer
from safehold.controller import commands
from safehold.controller.jobs import (
    JobRequest,
    Mount,
    job_name,
)
from safehold.controller.runtime import Runtime
from safehold.controller.snapshotmeta import source_meta
from safehold.controller.sources import BackupJob, RunContext, restore_job, source_name

__all__ = [
    "CREDENTIALS_DIR",
    "EXISTING",
    "DatabaseSources",
    "MissingSource",
    "database_restore_host",
    "database_restore_item",
    "database_restore_job",
    "server_connection",
    "service_namespace",
]

#: Where the database credentials Secret's two keys appear as files in the Job.
CREDENTIALS_DIR = "/etc/safehold/database"
#: RestoreRequest.spec.existingResourcePolicy as ``safehold restore-db --existing``.
EXISTING: dict[str, commands.Existing] = {"Skip": "skip", "Overwrite": "overwrite", "Fail": "fail"}
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}


def server_connection(
    d: DatabaseSource | ScratchDatabaseServer,
) -> tuple[commands.DatabaseConnection, Mount]:
    """Where a Job connects to ``d`` (a source's server or a test restore's scratch
    server), and its credentials Secret as a mount (two files)."""
    creds = d.credentials_secret_ref
    connection = commands.DatabaseConnection(
        engine=d.engine,
        host=d.host,
        port=d.port,
        user_file=f"{CREDENTIALS_DIR}/username",
        password_file=f"{CREDENTIALS_DIR}/password",
    )
    mount = Mount(
        name="database-credentials",
        path=CREDENTIALS_DIR,
        volume={
            "secret": {
                "secretName": creds.name,
                "items": [
                    {"key": creds.username_key, "path": "username"},
                    {"key": creds.password_key, "path": "password"},
                ],
            }
        },
        read_only=True,
    )
    return connection, mount


def _target(d: DatabaseSource) -> str:
    return f"{d.engine}://{d.host}:{d.port or _DEFAULT_PORTS[d.engine]}"


def _database(policy: BackupPolicy, name: str) -> DatabaseSource | None:
    return next((d for d in policy.spec.sources.databases if d.name == name), None)


class DatabaseSources:
    """The policy's database sources: one ``safehold dump`` Job each."""

    kind: Final = "database"

    def names(self, ctx: RunContext) -> set[str]:
        return {d.name for d in ctx.policy.spec.sources.databases}

    def plan(self, ctx: RunContext, wanted: set[str]) -> list[SourceResult]:
        return [
            SourceResult(name=d.name, kind="database", job=job_name(ctx.run_name, d.name))
            for d in ctx.policy.spec.sources.databases
            if not wanted or d.name in wanted
        ]

    def backup_job(self, ctx: RunContext, source: SourceResult) -> BackupJob:
        d = _database(ctx.policy, source.name)
        if d is None:
            raise ctx.gone(source.name)
        conn, mount = server_connection(d)
        if d.point_in_time is not None:
            # the whole server, for point-in-time restores with the WAL archive
            # (safehold.controller.walarchive) that runs between the runs
            args = commands.pg_basebackup(
                conn,
                source=ctx.source_name(d.name),
                host=ctx.snapshot_host,
                run=ctx.run_name,
                tags=ctx.run.spec.tags,
                meta=source_meta(ctx.policy_name, d.name),
            )
            return BackupJob(args=args, mounts=[mount])
        args = commands.dump(
            conn,
            source=ctx.source_name(d.name),
            host=ctx.snapshot_host,
            databases=d.databases,
            run=ctx.run_name,
            tags=ctx.run.spec.tags,
            meta=source_meta(ctx.policy_name, d.name),
        )
        return BackupJob(args=args, mounts=[mount])

    def finished(self, ctx: RunContext, source: SourceResult) -> None:
        return None


class MissingSource(Exception):
    """A database restore cannot be built: the item fails with ``detail``."""

    def __init__(self, detail: ErrorDetail) -> None:
        super().__init__(detail.message)
        self.detail = detail


def _restorable(
    policy: BackupPolicy | None, policy_name: str, ns: str, name: str
) -> DatabaseSource:
    """The policy's database source ``name``, which gives the server and the credentials a
    restore connects with; :class:`MissingSource` says what is missing."""
    if policy is None:
        raise MissingSource(
            ErrorDetail(
                reason="PolicyNotFound",
                message=f"BackupPolicy {policy_name!r} does not exist in namespace {ns}: apply "
                f"it (its spec.sources.databases entry {name!r} names the server and the "
                "credentials Secret the restore connects with)",
            )
        )
    d = _database(policy, name)
    if d is None:
        raise MissingSource(
            ErrorDetail(
                reason="SourceNotFound",
                message=f"database source {name!r} is not in BackupPolicy {policy_name}: its "
                "server and credentials are unknown; add it to spec.sources.databases",
            )
        )
    return d


def database_restore_host(policy: BackupPolicy | None, name: str) -> str | None:
    """The host a restore of database source ``name`` connects to (None: unknown)."""
    d = _database(policy, name) if policy is not None else None
    return d.host if d is not None else None


def service_namespace(host: str) -> tuple[str, bool] | None:
    """The namespace a cluster-internal Service host name points into: ``(NS, True)``
    for ``NAME.NS.svc`` and ``NAME.NS.svc.DOMAIN``; ``(NS, False)`` for ``NAME.NS``
    (which may also be an outside name: it counts only if namespace NS exists); None
    for anything else (a bare name stays in the Job's own namespace)."""
    parts = host.lower().rstrip(".").split(".")
    if len(parts) >= 3 and parts[2] == "svc":
        return parts[1], True
    if len(parts) == 2 and all(parts):
        return parts[1], False
    return None


def database_restore_item(
    req: RestoreRequest,
    policy: BackupPolicy | None,
    policy_name: str,
    source: str,
    snapshot_id: str,
) -> RestoredItem:
    """The plan for one database source: back into the server the policy names."""
    ns = req.metadata.namespace or ""
    item = RestoredItem(source=source, kind="database", snapshot_id=snapshot_id)
    try:
        d = _restorable(policy, policy_name, ns, source)
    except MissingSource as missing:
        item.phase = "Failed"
        item.error = missing.detail
        # never empty: the API client sends an empty string as null, which the schema refuses
        item.target = "unknown server"
        return item
    item.target = _target(d)
    if req.spec.dry_run:
        item.phase = "Skipped"
    return item


def database_restore_job(
    rt: Runtime,
    body: dict[str, Any],
    req: RestoreRequest,
    location: BackupLocation,
    item: RestoredItem,
    policy: BackupPolicy | None,
    run_tag: str | None,
) -> JobRequest:
    """The Job that streams the dumps of ``item`` back into its server: those tagged
    ``run=RUN_TAG`` (one BackupRun's), else the newest under the source's prefix.

    Raises :class:`MissingSource` when the policy or its source is gone.
    """
    ns = req.metadata.namespace or ""
    pname = (policy.metadata.name if policy else None) or (
        req.spec.policy_ref.name if req.spec.policy_ref else ""
    )
    d = _restorable(policy, pname, ns, item.source)
    conn, mount = server_connection(d)
    args = commands.restore_db(
        conn,
        source=source_name(ns, pname, d.name),
        run=run_tag,
        existing=EXISTING[req.spec.existing_resource_policy],
    )
    return restore_job(rt.image, body, req, location, item.source, args, mounts=[mount])
