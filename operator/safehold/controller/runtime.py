"""What every handler shares in one operator process: the API door (and its watch
cache), the work queue, the Job image and the installation's settings.

Nothing here is state that must survive a restart: that lives in the cluster (Jobs
found by name and labels, and the status of each resource).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from safehold.api import Progress
from safehold.api.jobs import JobSettings
from safehold.api.validation import validate_model
from safehold.controller.jobs import DEFAULT_IMAGE, IMAGE_USER, JobImage, PullPolicy
from safehold.controller.kube import Kube
from safehold.controller.limits import Limits, limits_from_env
from safehold.controller.progress import PROGRESS_INTERVAL
from safehold.controller.queue import WorkQueue

__all__ = [
    "InvalidSetting",
    "Runtime",
    "exec_hooks_from_env",
    "job_defaults_from_env",
    "job_image_from_env",
    "job_proxy_from_env",
    "max_concurrent_runs_from_env",
    "retention_lock_wait_from_env",
    "runtime",
    "set_runtime",
]

log = logging.getLogger(__name__)
#: The fields that say whom the volume Jobs run as: a layer of settings names them together.
_RUN_AS = ("runAsRoot", "runAsUser", "runAsGroup")
Key = tuple[str, str, str]  # (plural, namespace, name)


class InvalidSetting(ValueError):
    """The operator's environment holds a setting it cannot use: it does not start."""


def job_defaults_from_env() -> JobSettings | None:
    """``$SAFEHOLD_JOB_DEFAULTS``: JSON in the shape of a BackupPolicy's ``spec.job`` (the
    Helm chart's ``jobDefaults``), used for every field a policy leaves unset. Not valid:
    :class:`InvalidSetting`, naming each field (`safehold operator` stops on it: defaults
    dropped would drop the placement and limits every Job is meant to have)."""
    raw = os.environ.get("SAFEHOLD_JOB_DEFAULTS", "").strip()
    if not raw:
        return None
    what = "SAFEHOLD_JOB_DEFAULTS (the chart's jobDefaults)"
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidSetting(f"{what} is not JSON: {exc}") from None
    errors = validate_model(JobSettings, data, "jobDefaults")
    if errors:
        raise InvalidSetting(f"{what} is not valid: " + "; ".join(map(str, errors)))
    return JobSettings.model_validate(data)


def retention_lock_wait_from_env() -> float:
    """``$SAFEHOLD_RETENTION_LOCK_WAIT``: seconds a retention Job waits for the repository
    lock (``forget --lock-wait``) before it gives up until the next run; default 600."""
    raw = os.environ.get("SAFEHOLD_RETENTION_LOCK_WAIT", "").strip()
    try:
        value = float(raw) if raw else 600.0
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86400:
        log.warning("ignoring SAFEHOLD_RETENTION_LOCK_WAIT=%r: give seconds, 0 to 86400", raw)
        return 600.0
    return value


_PULL_POLICIES: dict[str, PullPolicy] = {
    "Always": "Always",
    "IfNotPresent": "IfNotPresent",
    "Never": "Never",
}


def job_image_from_env() -> JobImage:
    """The Jobs' image: ``$SAFEHOLD_IMAGE``, pulled by ``$SAFEHOLD_IMAGE_PULL_POLICY`` with
    the Secrets ``$SAFEHOLD_IMAGE_PULL_SECRETS`` names (comma-separated), as the chart sets
    them from its ``image`` and ``imagePullSecrets``: the operator's own."""
    raw = os.environ.get("SAFEHOLD_IMAGE_PULL_POLICY", "").strip() or "IfNotPresent"
    policy = _PULL_POLICIES.get(raw)
    if policy is None:
        log.warning(
            "ignoring SAFEHOLD_IMAGE_PULL_POLICY=%r: give one of %s", raw, ", ".join(_PULL_POLICIES)
        )
        policy = "IfNotPresent"
    secrets = os.environ.get("SAFEHOLD_IMAGE_PULL_SECRETS", "").split(",")
    return JobImage(
        name=os.environ.get("SAFEHOLD_IMAGE", DEFAULT_IMAGE),
        pull_policy=policy,
        pull_secrets=tuple(s.strip() for s in secrets if s.strip()),
        user=_job_id("SAFEHOLD_JOB_USER"),
        group=_job_id("SAFEHOLD_JOB_GROUP"),
        proxy=job_proxy_from_env(),
    )


#: The chart's ``jobProxy``: the variable that sets each of the Jobs' proxy variables.
_PROXY_SETTINGS = {
    "HTTPS_PROXY": "SAFEHOLD_JOB_HTTPS_PROXY",
    "HTTP_PROXY": "SAFEHOLD_JOB_HTTP_PROXY",
    "NO_PROXY": "SAFEHOLD_JOB_NO_PROXY",
}


def job_proxy_from_env() -> tuple[tuple[str, str], ...]:
    """The Jobs' egress proxy: ``$SAFEHOLD_JOB_HTTPS_PROXY``, ``$SAFEHOLD_JOB_HTTP_PROXY``
    and ``$SAFEHOLD_JOB_NO_PROXY`` (the chart's ``jobProxy``), as each variable and its
    lower-case twin (which curl and some tools read alone). A proxy URL that is not
    ``http(s)://host[:port]`` is :class:`InvalidSetting`, and so is one with a user or
    password: it would be readable in every Job's pod spec."""
    out: list[tuple[str, str]] = []
    for name, variable in _PROXY_SETTINGS.items():
        value = os.environ.get(variable, "").strip()
        if not value:
            continue
        if name != "NO_PROXY":
            url = urlsplit(value)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise InvalidSetting(
                    f"{variable} (the chart's jobProxy) is not a proxy URL: give "
                    "http://HOST:PORT (or https://)"
                )
            if url.username or url.password:
                raise InvalidSetting(
                    f"{variable} (the chart's jobProxy) holds a user or password, which every "
                    "Job's pod spec would show: use a proxy that admits the cluster's "
                    "addresses without credentials"
                )
        out += [(name, value), (name.lower(), value)]
    return tuple(out)


def _job_id(variable: str) -> int | None:
    """The user or group id the Jobs' pods run as: ``$variable`` (the chart's
    ``podSecurityContext.runAsUser`` or ``runAsGroup``, so that the Jobs run as the operator
    does); empty: none, the platform assigns one (OpenShift); unset: the image's."""
    raw = os.environ.get(variable)
    if raw is None:
        return IMAGE_USER
    raw = raw.strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        log.warning("ignoring %s=%r: give a user id above 0, or nothing", variable, raw)
        return IMAGE_USER
    return value


def exec_hooks_from_env() -> bool:
    """``$SAFEHOLD_EXEC_HOOKS``: ``true`` when the installation enabled exec hooks (the
    chart's ``execHooks.enabled``, which also grants ``pods/exec``); off otherwise."""
    return os.environ.get("SAFEHOLD_EXEC_HOOKS", "").strip().lower() == "true"


def max_concurrent_runs_from_env() -> int | None:
    """``$SAFEHOLD_MAX_CONCURRENT_RUNS``: how many BackupRuns may run at once in the whole
    cluster (the chart's ``maxConcurrentRuns``; :mod:`safehold.controller.admission`);
    empty or 0: no limit."""
    raw = os.environ.get("SAFEHOLD_MAX_CONCURRENT_RUNS", "").strip()
    try:
        value = int(raw) if raw else 0
    except ValueError:
        value = -1
    if value < 0:
        log.warning(
            "ignoring SAFEHOLD_MAX_CONCURRENT_RUNS=%r: give a whole number, 0: no limit", raw
        )
        return None
    return value or None


@dataclass
class Runtime:
    kube: Kube
    image: JobImage = field(default_factory=job_image_from_env)
    job_defaults: JobSettings | None = field(default_factory=job_defaults_from_env)
    #: Seconds between two looks at an object with work in flight (a run that has not
    #: ended, a policy or location whose Job runs): safehold.controller.wakeups.
    poll_interval: float = 3.0
    #: Whether policies' exec hooks may run (docs/hooks.md); off unless the chart enables it.
    exec_hooks: bool = field(default_factory=exec_hooks_from_env)
    #: The ServiceAccounts and database hosts policies may name (the chart's policyLimits).
    limits: Limits = field(default_factory=limits_from_env)
    #: Seconds a retention Job waits for the repository lock before giving up.
    retention_lock_wait: float = field(default_factory=retention_lock_wait_from_env)
    #: Seconds between two reads of a running Job's log for progress.
    progress_interval: float = PROGRESS_INTERVAL
    #: What to reconcile next, and when (fed by watch events and by reconciles).
    queue: WorkQueue[Key] = field(default_factory=WorkQueue)
    #: Reconciles in a row that raised, per object (for the retry back-off).
    failures: dict[Key, int] = field(default_factory=dict)
    #: When each running Job's log was last read for progress (monotonic seconds).
    progress_read: dict[str, float] = field(default_factory=dict)
    #: The latest progress read per running Job.
    progress: dict[str, Progress] = field(default_factory=dict)
    #: How many BackupRuns may run at once in the whole cluster; None: no limit.
    max_concurrent_runs: int | None = field(default_factory=max_concurrent_runs_from_env)

    def job_settings(self, *layers: JobSettings | None) -> JobSettings | None:
        """``layers`` (a policy's ``spec.job``, then a restore's) over the operator's
        defaults, each over the one before, field by field; but the user the volume Jobs run
        as (``runAsRoot``, ``runAsUser``, ``runAsGroup``) whole, from the last layer that
        names it."""
        given = [s for s in (self.job_defaults, *layers) if s is not None]
        if len(given) <= 1:
            return given[0] if given else None
        merged: dict[str, object] = {}
        for settings in given:
            layer = settings.model_dump(by_alias=True, exclude_unset=True)
            if any(key in layer for key in _RUN_AS):  # who the Jobs run as, taken whole
                for key in _RUN_AS:
                    merged.pop(key, None)
            merged.update(layer)
        return JobSettings.model_validate(merged)


_current: Runtime | None = None


def set_runtime(value: Runtime | None) -> None:
    global _current
    _current = value


def runtime() -> Runtime:
    """The process's runtime, created on first use (after the kubeconfig was loaded)."""
    global _current
    if _current is None:
        _current = Runtime(Kube())
    return _current
