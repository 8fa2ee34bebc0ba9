"""Which ServiceAccount a Job runs as for its locations' workload identity, and why not.

A BackupLocation may name a ServiceAccount (``spec.serviceAccountName``) so that the
cloud's workload identity (IRSA or EKS Pod Identity, GKE Workload Identity, Azure Workload
Identity) gives its Jobs the bucket without keys in a Secret. A pod runs as one
ServiceAccount, so a Job that reaches two locations (a replication to a recovery site)
or runs under an account of its own (a resource export or apply Job) needs them to name
the same one; and the chart's ``policyLimits.serviceAccounts`` applies to it as to every
ServiceAccount a tenant names, because a Job's hooks share the pod's identity.

:func:`account_problem` says what is wrong before any Job exists; the controllers turn it
into a condition or a failed run, with the fields to fix.
"""

from __future__ import annotations

from collections.abc import Sequence

from safehold.api import BackupLocation
from safehold.api.backuppolicy import BackupPolicy
from safehold.controller.limits import Limits

__all__ = ["CONFLICT", "NOT_ALLOWED", "account_problem", "resources_account"]

#: The reasons of :func:`account_problem`.
NOT_ALLOWED = "ServiceAccountNotAllowed"
CONFLICT = "ServiceAccountConflict"

#: The field of a BackupLocation that names its Jobs' ServiceAccount.
FIELD = "spec.serviceAccountName"


def account_problem(
    limits: Limits,
    namespace: str,
    locations: Sequence[BackupLocation],
    own: tuple[str, str] | None = None,
) -> tuple[str, str] | None:
    """Why (a reason and a message) Jobs in ``namespace`` that reach ``locations`` (and
    run as ``own``: a field path and the ServiceAccount it names, for resource Jobs)
    cannot run, or None."""
    named = [(loc, loc.spec.service_account_name) for loc in locations]
    for loc, account in named:
        if account:
            why = limits.service_account(namespace, account)
            if why:
                return NOT_ALLOWED, f"BackupLocation {loc.metadata.name} {FIELD}: {why}"
    accounts = [(loc, a) for loc, a in named if a]
    for loc, account in accounts[1:]:
        first, theirs = accounts[0]
        if account != theirs:
            return CONFLICT, (
                f"BackupLocation {first.metadata.name} {FIELD} is {theirs} but BackupLocation "
                f"{loc.metadata.name} names {account}: a Job that reaches both runs as one "
                "ServiceAccount; name the same one on both and give it both identities"
            )
    if own is not None and accounts and accounts[0][1] != own[1]:
        loc, account = accounts[0]
        return CONFLICT, (
            f"{own[0]} is {own[1]} but BackupLocation {loc.metadata.name} {FIELD} is "
            f"{account}: the Job runs as one ServiceAccount; name the same one in both, or "
            "give the location credentials in a Secret instead"
        )
    return None


def resources_account(policy: BackupPolicy) -> tuple[str, str] | None:
    """The field and ServiceAccount a policy's resource export Job runs as, if any."""
    resources = policy.spec.sources.cluster_resources
    if resources is None or not resources.service_account_name:
        return None
    field = f"BackupPolicy {policy.metadata.name} spec.sources.clusterResources.serviceAccountName"
    return field, resources.service_account_name
