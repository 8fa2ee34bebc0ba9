"""What the installation's administrator lets policies and restores name: the
ServiceAccounts their resource Jobs run as, the database servers they dump, and whether
their volume Jobs may run as root.

A namespace is a tenant, but a tenant who may create a BackupPolicy and not pods could
otherwise run a Job as any ServiceAccount of the namespace (some hold more rights than
the tenant: an admin's deploy account), or make a dump Job connect to any host the
cluster reaches. The chart's ``policyLimits`` (``$SAFEHOLD_ALLOWED_SERVICE_ACCOUNTS`` and
``$SAFEHOLD_ALLOWED_DATABASE_HOSTS``, comma-separated shell patterns) close both: a
ServiceAccount pattern matches ``<namespace>/<name>``, a host pattern the host name. An
unset variable allows everything, as before; a set one allows only what matches.

Running as root (``spec.job.runAsRoot``) is the other way round: off unless
``$SAFEHOLD_ALLOW_RUN_AS_ROOT`` is ``true`` (the chart's ``policyLimits.runAsRoot``). A
root Job reads every file of the tenant's volumes and writes files as any owner, which the
tenant may not be able to do with pods of its own.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from dataclasses import dataclass

from safehold.api import ErrorDetail, SourceResult
from safehold.api.backuppolicy import BackupPolicy
from safehold.api.jobs import JobSettings

__all__ = ["Limits", "apply_limits", "limits_from_env", "root_field"]


@dataclass(frozen=True)
class Limits:
    """Allowed ServiceAccounts (``namespace/name`` patterns) and database hosts (None: no
    limit), and whether volume Jobs may run as root."""

    service_accounts: tuple[str, ...] | None = None
    database_hosts: tuple[str, ...] | None = None
    run_as_root: bool = False

    def service_account(self, namespace: str, name: str) -> str | None:
        """Why ServiceAccount ``name`` of ``namespace`` may not be used, or None."""
        if self.service_accounts is None:
            return None
        who = f"{namespace}/{name}"
        if any(fnmatch.fnmatchcase(who, p) for p in self.service_accounts):
            return None
        return (
            f"ServiceAccount {who} is not among those this installation allows Safehold's "
            "Jobs to run as (the chart value policyLimits.serviceAccounts): ask the cluster "
            "administrator to allow it, or name an allowed one"
        )

    def database_host(self, host: str) -> str | None:
        """Why database server ``host`` may not be dumped, or None."""
        if self.database_hosts is None:
            return None
        if any(fnmatch.fnmatchcase(host.lower(), p.lower()) for p in self.database_hosts):
            return None
        return (
            f"database host {host} is not among those this installation allows backups "
            "from (the chart value policyLimits.databaseHosts): ask the cluster "
            "administrator to allow it"
        )

    def root(self, settings: JobSettings | None) -> str | None:
        """Why Jobs with ``settings`` may not run as root, or None (also when they do not
        ask to)."""
        if self.run_as_root or settings is None or not settings.run_as_root:
            return None
        return (
            "this installation does not let Safehold's Jobs run as root (the chart value "
            "policyLimits.runAsRoot): ask the cluster administrator to allow it, or set "
            "runAsRoot to false to run as the image's non-root user"
        )


def root_field(policy: BackupPolicy | None) -> str:
    """Where the ``runAsRoot`` a policy's Jobs follow was set: the policy's own
    ``spec.job``, else the chart's ``jobDefaults``."""
    own = policy.spec.job if policy is not None else None
    if own is not None and own.run_as_root is not None:
        return "spec.job.runAsRoot"
    return "jobDefaults.runAsRoot (the chart's)"


def _patterns(variable: str) -> tuple[str, ...] | None:
    raw = os.environ.get(variable)
    if raw is None or not raw.strip():
        return None
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def limits_from_env() -> Limits:
    return Limits(
        service_accounts=_patterns("SAFEHOLD_ALLOWED_SERVICE_ACCOUNTS"),
        database_hosts=_patterns("SAFEHOLD_ALLOWED_DATABASE_HOSTS"),
        run_as_root=os.environ.get("SAFEHOLD_ALLOW_RUN_AS_ROOT", "").strip().lower() == "true",
    )


def _refuse(result: SourceResult, reason: str, message: str) -> None:
    result.phase = "Failed"
    result.job = None
    result.error = ErrorDetail(reason=reason, message=message)


def apply_limits(
    limits: Limits,
    policy: BackupPolicy,
    planned: Sequence[SourceResult],
    settings: JobSettings | None,
) -> None:
    """Fail, before any Job exists, each planned source that names what ``limits`` do not
    allow (its message names the source's field); ``settings``: the Jobs' settings (the
    policy's ``spec.job`` over the chart's ``jobDefaults``)."""
    ns = policy.metadata.namespace or ""
    pname = policy.metadata.name
    by_name = {r.name: r for r in planned if r.phase == "Pending"}
    why_root = limits.root(settings)
    for r in by_name.values():
        if why_root and r.kind == "volume":
            message = f"BackupPolicy {pname} {root_field(policy)}: {why_root}"
            _refuse(r, "RunAsRootNotAllowed", message)
    for i, d in enumerate(policy.spec.sources.databases):
        why = limits.database_host(d.host)
        if why and d.name in by_name:
            field = f"spec.sources.databases[{i}].host"
            _refuse(
                by_name[d.name], "DatabaseHostNotAllowed", f"BackupPolicy {pname} {field}: {why}"
            )
    resources = policy.spec.sources.cluster_resources
    result = next(
        (r for r in planned if r.kind == "clusterResources" and r.phase == "Pending"), None
    )
    if resources is not None and resources.service_account_name and result is not None:
        why = limits.service_account(ns, resources.service_account_name)
        if why:
            field = "spec.sources.clusterResources.serviceAccountName"
            _refuse(result, "ServiceAccountNotAllowed", f"BackupPolicy {pname} {field}: {why}")
