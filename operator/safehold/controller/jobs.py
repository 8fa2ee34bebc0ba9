"""THE one place that builds a Job: every Job the operator creates comes from :func:`build_job`.

Backups, restores, retention (forget and prune), replication and location checks differ only in
their command, their volumes and their labels; everything that makes a Job safe is
fixed here, so no kind's module can forget it: a non-root, read-only, capability-less
container with seccomp ``RuntimeDefault``, no service-account token (the pods need no
API rights: results leave through the termination message, progress through the log;
only resource export/apply Jobs run as a ServiceAccount the user names), a deadline, a
retry limit, a TTL, an ``emptyDir`` for ``/tmp``, and Secrets only as read-only file
volumes.

A backup Job whose source has hooks gets a second container, ``hooks`` (the same image and
security context, ``safehold run-hooks``), that has none of the Secret volumes and none of
the repository's mounts: the hooks' commands never have the repository password or the
storage credentials in reach. It shares only an ``emptyDir`` handover directory with the
backup container, and the mounts the request names (the source, read-only); it has its
own ``/tmp``. See :mod:`safehold.cli.hooks` for the handover.

A test restore with the user's own check (``testRestore.check``) runs the Job's command as an
init container and the user's image after it (:class:`CheckContainer`): same restricted
security context, no Secret volume, only the mounts it names.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from safehold import __version__
from safehold.api.jobs import JobSettings
from safehold.controller import commands

__all__ = [
    "CHECK_CONTAINER",
    "COMPONENT_BACKUP",
    "COMPONENT_REPLICATE",
    "COMPONENT_RESTORE",
    "COMPONENT_RETENTION",
    "COMPONENT_TEST_RESTORE",
    "COMPONENT_VALIDATE",
    "DEFAULT_IMAGE",
    "HOOKS_CONTAINER",
    "HOOKS_HANDOVER_DIR",
    "IMAGE_USER",
    "JOB_CONTAINER",
    "LABEL_COMPONENT",
    "LABEL_LOCATION",
    "LABEL_MANAGED_BY",
    "LABEL_POLICY",
    "LABEL_RESTORE",
    "LABEL_RUN",
    "LABEL_SITE",
    "LABEL_SOURCE",
    "MANAGED_BY",
    "OPTIONS_DIR",
    "PASSWORD_FILE",
    "ROOT_CAPABILITIES",
    "TERMINATION_LOG",
    "CheckContainer",
    "FileAccess",
    "JobImage",
    "JobRequest",
    "Mount",
    "PullPolicy",
    "build_job",
    "job_name",
    "label_value",
    "owner_reference",
    "with_settings",
]

DEFAULT_IMAGE = f"safehold:{__version__}"
MANAGED_BY = "safehold-operator"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_RUN = "safehold.io/run"
LABEL_SOURCE = "safehold.io/source"
LABEL_RESTORE = "safehold.io/restore"
LABEL_LOCATION = "safehold.io/location"
LABEL_POLICY = "safehold.io/policy"
#: The recovery site a replication Job (or a site's retention Job) writes to.
LABEL_SITE = "safehold.io/site"
COMPONENT_BACKUP = "backup"
COMPONENT_RESTORE = "restore"
COMPONENT_RETENTION = "retention"
COMPONENT_REPLICATE = "replicate"
COMPONENT_VALIDATE = "validate"
COMPONENT_TEST_RESTORE = "test-restore"

#: Where the credentials Secret's keys appear as files (``safehold --options-dir``).
OPTIONS_DIR = "/etc/safehold/storage"
#: Where the repository password appears (``safehold --password-file``).
PASSWORD_FILE = "/etc/safehold/password/password"  # noqa: S105 - a path, not a password
#: The container's terminationMessagePath (``safehold --termination-log``).
TERMINATION_LOG = "/dev/termination-log"
#: The container that runs the Job's command (its termination message is the result).
JOB_CONTAINER = "safehold"
#: A backup Job's hooks container, and the directory it shares with the backup container.
HOOKS_CONTAINER = "hooks"
HOOKS_HANDOVER_DIR = "/run/safehold/hooks"
#: A test restore's own check, run after the Job's command (then an init container).
CHECK_CONTAINER = "check"
#: The image's user and group (the Dockerfile's, the "nonroot" user of distroless images).
IMAGE_USER = 65532

#: What a volume Job's command does to files other users own: reads them (a backup) or
#: writes them with their owners, modes and times (a restore).
FileAccess = Literal["read", "write"]
#: The capabilities each access takes when the Job runs as root (``spec.job.runAsRoot``),
#: all of them within the baseline Pod Security level. A backup's volume is mounted
#: read-only and the rest of its pod is its own, so DAC_OVERRIDE grants it no more than
#: DAC_READ_SEARCH would, which baseline refuses.
ROOT_CAPABILITIES: Mapping[FileAccess, tuple[str, ...]] = {
    "read": ("DAC_OVERRIDE",),
    "write": ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"),
}


def label_value(text: str) -> str:
    """``text`` as a valid label value (63 characters, alphanumeric at both ends)."""
    clean = re.sub(r"[^A-Za-z0-9._-]", "-", text)
    if len(clean) > 63:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        clean = f"{clean[:54]}-{digest}"
    return clean.strip("-._")


def job_name(*parts: str) -> str:
    """A deterministic Job name from ``parts``: the same inputs give the same name after a
    restart, so an existing Job is found (409) instead of a second one being made."""
    base = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:6]
    # 63 characters for the Job name; the Job controller appends 6 for its pods.
    return f"{base[:50].rstrip('-')}-{digest}"


@dataclass(frozen=True)
class Mount:
    """A volume and where the container sees it."""

    name: str
    path: str
    volume: Mapping[str, Any]  # the pod-spec volume source, e.g. {"persistentVolumeClaim": ...}
    read_only: bool = True
    sub_path: str | None = None


@dataclass(frozen=True)
class CheckContainer:
    """A user's container that runs after the Job's command succeeded: it sees only the
    mounts of the request named in ``mounts`` (name -> path, read-write), its own ``/tmp``,
    and no Secret."""

    image: str
    command: Sequence[str]
    mounts: Mapping[str, str]
    #: Its own user and group (never 0); None: the pod's.
    run_as_user: int | None = None
    run_as_group: int | None = None


PullPolicy = Literal["Always", "IfNotPresent", "Never"]


@dataclass(frozen=True)
class JobImage:
    """The image every Job runs (the operator's own) and how the kubelet gets it: the
    operator's pull policy, and Secrets of the Job's namespace for a private registry
    (named, not copied: a Job's namespace must hold them); and the user and group its pods
    run as, the image's own (None: the platform's choice, as OpenShift assigns one from the
    namespace's range and refuses any other)."""

    name: str = DEFAULT_IMAGE
    pull_policy: PullPolicy = "IfNotPresent"
    pull_secrets: tuple[str, ...] = ()
    user: int | None = IMAGE_USER
    group: int | None = IMAGE_USER
    #: The installation's egress proxy, as every container's environment (``HTTPS_PROXY``,
    #: ``HTTP_PROXY``, ``NO_PROXY`` and their lower-case twins): the chart's ``jobProxy``.
    proxy: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class JobRequest:
    """What differs between Jobs; :func:`build_job` adds everything else."""

    name: str
    namespace: str
    component: str
    args: Sequence[str]
    labels: Mapping[str, str]
    owner: Mapping[str, Any] | None  # the owning object (apiVersion, kind, metadata)
    #: The pod's annotations: what a downward-API mount gives the command as a file (a
    #: location's ``caCert``).
    pod_annotations: Mapping[str, str] = field(default_factory=dict)
    mounts: Sequence[Mount] = ()
    credentials_secret: str | None = None
    password_secret: str | None = None
    password_key: str = "password"  # noqa: S105 - the Secret key name
    image: JobImage = JobImage()
    resources: Mapping[str, Any] | None = None
    active_deadline_seconds: int = 6 * 3600
    backoff_limit: int = 1
    ttl_seconds_after_finished: int = 24 * 3600
    node_name: str | None = None  # read a ReadWriteOnce volume on the node that uses it
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()
    priority_class_name: str | None = None
    #: A ServiceAccount the pod runs as, with its token mounted: only for Jobs that read or
    #: write cluster objects (resource export and apply), under an account the user grants.
    service_account_name: str | None = None
    #: The ServiceAccount the Job's locations name for their cloud workload identity
    #: (``spec.serviceAccountName``): the pod runs as it with no API token. A Job with a
    #: ``service_account_name`` as well needs it to be the same one (``identity``).
    identity_account: str | None = None
    #: ``safehold run-hooks`` options (``--pre-hook``, ...): run in a container of their own,
    #: without the Secrets; the Job's command gets ``--hooks-handover`` (a backup's hooks).
    hooks: Sequence[str] = ()
    #: The names of ``mounts`` the hooks container sees too, always read-only.
    hook_mounts: Sequence[str] = ()
    #: Run after the command (which becomes an init container): a test restore's check.
    check: CheckContainer | None = None
    #: What the command does to a volume's files (None: it touches none). With
    #: ``run_as_root`` (the policy's ``spec.job.runAsRoot``) the command's container runs as
    #: user 0 with that access's ``ROOT_CAPABILITIES``; otherwise as the image's user. The
    #: caller has checked that the installation allows it (``limits.Limits.root``).
    file_access: FileAccess | None = None
    run_as_root: bool = False
    #: Otherwise, with ``file_access``, the command's container runs as this user and group
    #: (the policy's ``spec.job.runAsUser`` and ``runAsGroup``), and a restore's pod gets
    #: that group as its ``fsGroup``.
    run_as: tuple[int, int] | None = None


def with_settings(req: JobRequest, settings: JobSettings | None) -> JobRequest:
    """``req`` with a policy's ``spec.job`` (resources, deadline, retries, placement, root);
    unchanged without one. A volume's ``node_name`` still wins over the node selector."""
    if settings is None:
        return req
    resources = settings.resources.model_dump(by_alias=True) if settings.resources else {}
    return replace(
        req,
        resources={k: v for k, v in resources.items() if v} or None,
        active_deadline_seconds=settings.active_deadline_seconds or req.active_deadline_seconds,
        backoff_limit=settings.backoff_limit,
        node_selector=settings.node_selector,
        tolerations=[t.model_dump(by_alias=True, exclude_none=True) for t in settings.tolerations],
        priority_class_name=settings.priority_class_name,
        run_as_root=bool(settings.run_as_root),
        run_as=(
            (settings.run_as_user, settings.run_as_group or settings.run_as_user)
            if settings.run_as_user is not None
            else None
        ),
    )


def owner_reference(owner: Mapping[str, Any], *, controller: bool = True) -> dict[str, Any]:
    """An owner reference to ``owner``; ``controller``: also as its controller, blocking
    its deletion until the owned object is gone (which needs update rights on the
    owner's finalizers: the operator's own Jobs only)."""
    meta = owner["metadata"]
    ref = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
    }
    return ref | ({"controller": True, "blockOwnerDeletion": True} if controller else {})


def _affinity(node_name: str) -> dict[str, Any]:
    # matchFields on metadata.name pins the pod to that node through the scheduler
    # (unlike spec.nodeName, which bypasses it and its resource checks).
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
        }
    }


def _container_security(
    root: Sequence[str] = (), user: tuple[int, int] | None = None
) -> dict[str, Any]:
    """A container's security context: non-root with no capabilities (as ``user`` and its
    group when given); or, given ``root`` capabilities, user and group 0 with those alone."""
    context: dict[str, Any] = {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if root:
        context |= {"runAsNonRoot": False, "runAsUser": 0, "runAsGroup": 0}
        context["capabilities"]["add"] = list(root)
    elif user is not None:
        context |= {"runAsUser": user[0], "runAsGroup": user[1]}
    return context


def _hooks_container(req: JobRequest) -> dict[str, Any]:
    """The container that runs a backup's hooks: no Secret volume, no repository mount,
    its own ``/tmp``, the handover directory and the mounts named by ``hook_mounts``."""
    mounts: list[dict[str, Any]] = [
        {"name": "hooks-tmp", "mountPath": "/tmp"},
        {"name": "hooks-handover", "mountPath": HOOKS_HANDOVER_DIR},
    ]
    for m in req.mounts:
        if m.name in req.hook_mounts:
            mount: dict[str, Any] = {"name": m.name, "mountPath": m.path, "readOnly": True}
            if m.sub_path:
                mount["subPath"] = m.sub_path
            mounts.append(mount)
    return {
        "name": HOOKS_CONTAINER,
        "image": req.image.name,
        "imagePullPolicy": req.image.pull_policy,
        "command": ["safehold"],
        "args": commands.run_hooks(HOOKS_HANDOVER_DIR, req.hooks),
        "env": [{"name": "HOME", "value": "/tmp"}],
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": _container_security(),
    }


def _check_container(req: JobRequest, check: CheckContainer) -> dict[str, Any]:
    """The user's check: the request's mounts it names, read-write, and its own ``/tmp``."""
    by_name = {m.name: m for m in req.mounts}
    mounts: list[dict[str, Any]] = [{"name": "check-tmp", "mountPath": "/tmp"}]
    for name, path in check.mounts.items():
        mount: dict[str, Any] = {"name": name, "mountPath": path, "readOnly": False}
        if by_name[name].sub_path:
            mount["subPath"] = by_name[name].sub_path
        mounts.append(mount)
    security = _container_security()
    if check.run_as_user is not None:
        security["runAsUser"] = check.run_as_user
    if check.run_as_group is not None:
        security["runAsGroup"] = check.run_as_group
    return {
        "name": CHECK_CONTAINER,
        "image": check.image,
        "command": list(check.command),
        "env": [{"name": "HOME", "value": "/tmp"}],
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": security,
    }


def _container_files(
    req: JobRequest,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """The volumes, mounts and options of the Job container: ``/tmp``, the location's
    Secrets as files, the request's mounts, the hooks' handover directory."""
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    args: list[str] = []
    if req.credentials_secret:
        volumes.append(
            {"name": "storage-options", "secret": {"secretName": req.credentials_secret}}
        )
        mounts.append({"name": "storage-options", "mountPath": OPTIONS_DIR, "readOnly": True})
        args += ["--options-dir", OPTIONS_DIR]
    if req.password_secret:
        volumes.append(
            {
                "name": "repository-password",
                "secret": {
                    "secretName": req.password_secret,
                    "items": [{"key": req.password_key, "path": "password"}],
                },
            }
        )
        mounts.append(
            {
                "name": "repository-password",
                "mountPath": PASSWORD_FILE.rsplit("/", 1)[0],
                "readOnly": True,
            }
        )
        args += ["--password-file", PASSWORD_FILE]
    for m in req.mounts:
        volumes.append({"name": m.name, **m.volume})
        mount: dict[str, Any] = {"name": m.name, "mountPath": m.path, "readOnly": m.read_only}
        if m.sub_path:
            mount["subPath"] = m.sub_path
        mounts.append(mount)
    if req.hooks:
        volumes.append({"name": "hooks-handover", "emptyDir": {"sizeLimit": "1Mi"}})
        mounts.append({"name": "hooks-handover", "mountPath": HOOKS_HANDOVER_DIR})
        args += ["--hooks-handover", HOOKS_HANDOVER_DIR]
    return volumes, mounts, args


def _pod_spec(
    req: JobRequest, containers: list[dict[str, Any]], volumes: list[dict[str, Any]]
) -> dict[str, Any]:
    """The pod: no API token (unless a ServiceAccount for the API is named), non-root,
    placed."""
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            **({"runAsUser": req.image.user} if req.image.user is not None else {}),
            **({"runAsGroup": req.image.group} if req.image.group is not None else {}),
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": containers,
        "volumes": volumes,
    }
    if req.hooks:
        # explicit: the hooks must not see (or signal) the backup container's processes,
        # whose /proc/PID/root and environ would reach its Secret mounts
        pod_spec["shareProcessNamespace"] = False
        volumes.append({"name": "hooks-tmp", "emptyDir": {}})
    if req.image.pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in req.image.pull_secrets]
    if req.identity_account:
        pod_spec["serviceAccountName"] = req.identity_account
    if req.service_account_name:
        if req.identity_account not in (None, req.service_account_name):
            # the controllers refuse this first (identity.account_problem)
            raise ValueError(
                f"a Job runs as one ServiceAccount, not {req.service_account_name} "
                f"and {req.identity_account}"
            )
        pod_spec["serviceAccountName"] = req.service_account_name
        pod_spec["automountServiceAccountToken"] = True
    if req.node_name:
        pod_spec["affinity"] = _affinity(req.node_name)
    elif req.node_selector:
        pod_spec["nodeSelector"] = dict(req.node_selector)
    if req.tolerations:
        pod_spec["tolerations"] = [dict(t) for t in req.tolerations]
    if req.priority_class_name:
        pod_spec["priorityClassName"] = req.priority_class_name
    if req.run_as and req.file_access == "write" and not req.run_as_root:
        # the user may write into a new claim whose root belongs to root; OnRootMismatch:
        # the kubelet walks the volume only when its root's group is not this one yet
        pod_spec["securityContext"] |= {
            "fsGroup": req.run_as[1],
            "fsGroupChangePolicy": "OnRootMismatch",
        }
    return pod_spec


def _cause(owner: Mapping[str, Any]) -> str:
    """The custom resource that caused a Job, as ``safehold.cli.audit`` reads it."""
    meta = owner.get("metadata") or {}
    keys = ("namespace", "name", "uid")
    return json.dumps({"kind": owner.get("kind", ""), **{k: meta.get(k, "") for k in keys}})


def build_job(req: JobRequest) -> dict[str, Any]:
    """The Job manifest for ``req``."""
    labels = {
        "app.kubernetes.io/name": "safehold",
        "app.kubernetes.io/part-of": "safehold",
        "app.kubernetes.io/version": label_value(__version__),
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_COMPONENT: req.component,
        **{k: label_value(v) for k, v in req.labels.items()},
    }
    volumes, mounts, options = _container_files(req)
    # --no-cache: a Job's pod is new each run, so a local cache would be written and thrown
    # away (and fill the pod's /tmp); docs/cli.md "Local cache".
    args = [*req.args, *options, "--no-cache", "--json", "--termination-log", TERMINATION_LOG]
    container: dict[str, Any] = {
        "name": JOB_CONTAINER,
        "image": req.image.name,
        "imagePullPolicy": req.image.pull_policy,
        "command": ["safehold"],
        "args": args,
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "SAFEHOLD_TMPDIR", "value": "/tmp"},
        ],
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": _container_security(
            ROOT_CAPABILITIES[req.file_access] if req.run_as_root and req.file_access else (),
            req.run_as if req.file_access and not req.run_as_root else None,
        ),
    }
    if req.owner is not None:  # the audit record names the resource that caused the Job
        container["env"].append({"name": "SAFEHOLD_AUDIT_CAUSE", "value": _cause(req.owner)})
    containers = [container]
    if req.hooks:
        containers.append(_hooks_container(req))
    inits: list[dict[str, Any]] = []
    if req.check:
        inits, containers = containers, [_check_container(req, req.check)]
        volumes.append({"name": "check-tmp", "emptyDir": {}})
    if req.resources:
        for c in [*inits, *containers]:
            c["resources"] = dict(req.resources)
    for c in [*inits, *containers]:  # hooks and checks may reach out too
        c.setdefault("env", []).extend({"name": k, "value": v} for k, v in req.image.proxy)
    pod_spec = _pod_spec(req, containers, volumes)
    if inits:
        pod_spec["initContainers"] = inits
    metadata: dict[str, Any] = {"name": req.name, "namespace": req.namespace, "labels": labels}
    if req.owner is not None:
        metadata["ownerReferences"] = [owner_reference(req.owner)]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": req.backoff_limit,
            "activeDeadlineSeconds": req.active_deadline_seconds,
            "ttlSecondsAfterFinished": req.ttl_seconds_after_finished,
            "template": {
                "metadata": {
                    "labels": labels,
                    **({"annotations": dict(req.pod_annotations)} if req.pod_annotations else {}),
                },
                "spec": pod_spec,
            },
        },
    }
