"""The Jobs a BackupPolicy runs on its own schedule, between its runs: the verification
(verification.py), the test restores (testrestore_jobs.py) and the WAL archive
(walarchive.py). One shape for all: owned by the policy (deleting it deletes them), on its
location's repository (the Secrets by reference), with the policy's ``spec.job`` over the
chart's ``jobDefaults``, and never retried by the Job itself: a failure is reported and
the next slot or interval tries again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from safehold.api import BackupLocation, BackupPolicy
from safehold.controller.jobs import CheckContainer, JobRequest, Mount, with_settings
from safehold.controller.repository import with_repository
from safehold.controller.runtime import Runtime

__all__ = ["policy_job"]


def policy_job(
    rt: Runtime,
    body: Mapping[str, Any],
    policy: BackupPolicy,
    location: BackupLocation,
    *,
    name: str,
    component: str,
    args: list[str],
    labels: Mapping[str, str],
    mounts: Sequence[Mount] = (),
    check: CheckContainer | None = None,
) -> JobRequest:
    """The Job ``name`` of ``policy`` running ``safehold ARGS`` on ``location``."""
    request = JobRequest(
        name=name,
        namespace=policy.metadata.namespace or "",
        component=component,
        args=args,
        labels=labels,
        owner=body,
        mounts=mounts,
        image=rt.image,
        check=check,
    )
    request = with_repository(request, location)
    request = with_settings(request, rt.job_settings(policy.spec.job))
    return replace(request, backoff_limit=0)
