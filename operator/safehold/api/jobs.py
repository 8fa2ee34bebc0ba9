"""How the Jobs that do the work are run: resources, deadline, placement, and the user the
Jobs that read or write a volume's files run as (root, or the application's own user).

Everything else about a Job (the rest of its security context, labels, owner) is fixed by
the controller's job builder and is deliberately not configurable here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from safehold.api.base import ApiModel
from safehold.api.errors import invalid
from safehold.api.types import (
    Labels,
    LabelValue,
    ResourceList,
    ResourceName,
    TaintKey,
    quantity_value,
)

__all__ = ["JobSettings", "ResourceRequirements", "Toleration"]


class ResourceRequirements(ApiModel):
    """CPU and memory for a container, as in a Pod spec."""

    requests: ResourceList = Field(default_factory=dict)
    """The resources the scheduler reserves, e.g. ``cpu: 500m``, ``memory: 256Mi``."""
    limits: ResourceList = Field(default_factory=dict)
    """The most the container may use. A backup or restore starts one worker thread per CPU
    it may use (the CPU limit, else the node's CPUs) and needs about 150Mi plus 64Mi per
    worker thread."""

    @model_validator(mode="after")
    def _requests_within_limits(self) -> ResourceRequirements:
        """A request is no more than the limit of the same resource, or the apiserver
        refuses the Job."""
        for name, request in self.requests.items():
            limit = self.limits.get(name)
            if limit is not None and quantity_value(request) > quantity_value(limit):
                raise invalid(
                    f"requests.{name}",
                    f"{request} is more than the limit of {limit}: lower the request or "
                    "raise the limit",
                )
        return self


class Toleration(ApiModel):
    """Lets the Job's pod run on nodes with a matching taint."""

    key: TaintKey | None = None
    """The taint key; empty with operator Exists matches every taint."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """Equal matches the value; Exists matches any value."""
    value: LabelValue | None = None
    """The taint value for operator Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """The taint effect to match; empty matches all effects."""
    toleration_seconds: int | None = Field(default=None, ge=0)
    """For NoExecute: how long the pod stays after the taint appears."""

    @model_validator(mode="after")
    def _as_pods_take_it(self) -> Toleration:
        """A toleration is one a pod may carry, or the apiserver refuses the Job made with
        it: `tolerationSeconds` needs `effect: NoExecute`; an empty `key` needs `operator:
        Exists`; `operator: Exists` takes no `value`."""
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise invalid(
                "effect",
                "tolerationSeconds only applies to NoExecute taints: set effect: NoExecute, "
                "or remove tolerationSeconds",
            )
        if not self.key and self.operator != "Exists":
            raise invalid(
                "operator",
                "a toleration without a key matches every taint only with operator: Exists",
            )
        if self.operator == "Exists" and self.value:
            raise invalid("value", "operator Exists matches any value: remove value")
        return self


class JobSettings(ApiModel):
    """Settings for the Jobs of a policy's runs."""

    resources: ResourceRequirements | None = None
    """CPU and memory for the backup container."""
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    """Kill a Job that runs longer than this; the source then fails with reason DeadlineExceeded."""
    backoff_limit: int = Field(default=1, ge=0, le=10)
    """How often a failed pod is retried before the source fails."""
    node_selector: Labels = Field(default_factory=dict)
    """Labels a node must have to run the Job (ignored for a volume in use on a node)."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    """Taints the Job's pod tolerates."""
    priority_class_name: ResourceName | None = None
    """The PriorityClass of the Job's pod."""
    run_as_root: bool | None = None
    """Run the Jobs that read or write a volume's files as user 0, with only the capabilities
    their work needs: a backup reads every file whatever its owner and mode (DAC_OVERRIDE,
    on a read-only mount), a restore sets each file's owner, group, mode and times
    (CHOWN, DAC_OVERRIDE, FOWNER, FSETID). Without it they run as the image's non-root user:
    files that user cannot read are reported (FilesUnreadable) and restored files belong to
    it. Refused unless the installation allows it (the chart value
    policyLimits.runAsRoot); the namespace's Pod Security level must be baseline or
    privileged, not restricted. Database and resource Jobs never run as root."""
    run_as_user: int | None = Field(default=None, ge=1, le=2147483647)
    """Run the Jobs that read or write a volume's files as this user (never root), e.g. the
    application's own (999 for the postgres image): a backup then reads the files only that
    user may read (a data directory of mode 0700) and a restore gives every file it writes
    to that user, without root, also where the namespace enforces the restricted Pod Security
    level. A restore's pod also gets fsGroup runAsGroup, so that the user may write into a
    new claim whose root directory belongs to root. Files of other owners are reported
    (FilesUnreadable) rather than backed up; to keep several owners, use runAsRoot.
    runAsRoot, runAsUser and runAsGroup are taken together from the last of jobDefaults,
    spec.job and a RestoreRequest's spec.job that sets any of them."""
    run_as_group: int | None = Field(default=None, ge=1, le=2147483647)
    """The group of those Jobs with runAsUser (never root); default: runAsUser."""

    @model_validator(mode="after")
    def _one_user(self) -> JobSettings:
        """The volume Jobs run as root or as runAsUser, not both; runAsGroup goes with
        runAsUser."""
        if self.run_as_root and self.run_as_user is not None:
            raise invalid(
                "runAsUser",
                "the Jobs run as root with runAsRoot: true: set runAsUser or runAsRoot, not both",
            )
        if self.run_as_group is not None and self.run_as_user is None:
            raise invalid("runAsGroup", "runAsGroup goes with runAsUser: set runAsUser too")
        return self
