"""A BackupLocation as the ``safehold`` command sees it: a repository URL, non-secret
options as arguments, Secrets as file volumes, and the filesystem claim as a mount.

Nothing here reads a Secret: the Job gets the credentials Secret mounted whole (each key
a file, read by ``--options-dir``) and the password key mounted as one file.

A Job opens one location as its repository (:func:`with_repository`: ``--repo``,
``--option``, ``--options-dir``, ``--password-file``, and the location's bandwidth limits
``--limit-upload``, ``--limit-download``) and, for replication, a second one as the
recovery site (:func:`with_site`: ``--to``, ``--to-option``, ``--to-options-dir``,
``--to-password-file``, and the site's upload limit in place of the primary's), each with
its own Secrets and mounts. A location's ``serviceAccountName`` becomes the Job's
(``JobRequest.identity_account``), with the pod labels its cloud's webhook looks for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from safehold.api import BackupLocation
from safehold.controller import commands
from safehold.controller.jobs import JobRequest, Mount

__all__ = [
    "LOCK_MODE",
    "REPOSITORY_MOUNT",
    "SITE_MOUNT",
    "RepositoryAccess",
    "location_url",
    "lock_options",
    "repository_access",
    "with_repository",
    "with_site",
]

#: Where a filesystem location's claim is mounted in the Job.
REPOSITORY_MOUNT = "/repository"
#: Where a filesystem recovery site's claim is mounted in a replication Job.
SITE_MOUNT = "/site-repository"
#: Where a recovery site's credentials and password appear in a replication Job.
_SITE_OPTIONS_DIR = "/etc/safehold/site/storage"
#: Where a location's ``caCert`` appears (``--option ca_file``), from a pod annotation.
CA_DIR = "/etc/safehold/ca"
_SITE_CA_DIR = "/etc/safehold/site/ca"
CA_ANNOTATION = "safehold.io/ca-cert"
_SITE_CA_ANNOTATION = "safehold.io/site-ca-cert"
_SITE_PASSWORD_DIR = "/etc/safehold/site/password"  # noqa: S105 - a path
_SCHEMES = {"s3": "s3", "gcs": "gs", "azure": "azure"}
#: The lock mode of a location's ``immutabilityDays`` (docs/immutability.md).
LOCK_MODE = "governance"
#: The pod label that asks Azure Workload Identity's webhook for a token.
AZURE_IDENTITY_LABEL = "azure.workload.identity/use"


@dataclass(frozen=True)
class RepositoryAccess:
    """The arguments, Secrets and mounts a Job needs to open a location's repository."""

    args: list[str]
    credentials_secret: str | None
    password_secret: str
    password_key: str
    mounts: list[Mount] = field(default_factory=list)
    #: The ServiceAccount the location names for its workload identity.
    account: str | None = None
    #: Labels the pod needs for it (Azure Workload Identity's webhook mutates only pods
    #: labelled ``azure.workload.identity/use``).
    labels: dict[str, str] = field(default_factory=dict)
    #: The pod annotations the mounts project as files (the location's ``caCert``).
    annotations: dict[str, str] = field(default_factory=dict)


def location_url(location: BackupLocation, mount: str = REPOSITORY_MOUNT) -> str:
    """The repository URL of ``location`` (a filesystem claim seen at ``mount``)."""
    spec = location.spec
    prefix = spec.prefix.strip("/")
    if spec.provider == "filesystem":
        return f"file://{mount}" + (f"/{prefix}" if prefix else "")
    return f"{_SCHEMES[spec.provider]}://{spec.bucket}" + (f"/{prefix}" if prefix else "")


def _options(location: BackupLocation) -> list[str]:
    """The non-secret storage options of ``location`` as ``key=value``."""
    spec = location.spec
    out = []
    if spec.endpoint:
        out.append(f"endpoint={spec.endpoint}")
    if spec.region:  # s3 only (the API refuses it elsewhere)
        out.append(f"region={spec.region}")
    if spec.provider == "s3":
        # as given; unset, path suits the S3-compatible servers a custom endpoint means
        style = spec.addressing_style or ("path" if spec.endpoint else None)
        if style:
            out.append(f"addressing_style={style}")
    sse = spec.server_side_encryption
    if sse is not None:  # s3 only (the API refuses it elsewhere)
        out.append(f"sse={sse.mode}")
        if sse.kms_key_id:
            out.append(f"sse_kms_key_id={sse.kms_key_id}")
    return out


def _ca(location: BackupLocation, *, site: bool = False) -> tuple[str, Mount, dict[str, str]]:
    """``location``'s ``caCert`` in a Job: the ``ca_file`` option, the downward-API mount
    that makes the pod annotation holding it a file, and that annotation."""
    directory, annotation = (_SITE_CA_DIR, _SITE_CA_ANNOTATION) if site else (CA_DIR, CA_ANNOTATION)
    mount = Mount(
        name="site-ca" if site else "ca",
        path=directory,
        volume={
            "downwardAPI": {
                "items": [
                    {
                        "path": "ca.crt",
                        "fieldRef": {"fieldPath": f"metadata.annotations['{annotation}']"},
                    }
                ]
            }
        },
    )
    return f"ca_file={directory}/ca.crt", mount, {annotation: location.spec.ca_cert or ""}


def lock_options(location: BackupLocation) -> list[str]:
    """The storage options that lock every object a Job writes for the location's
    ``immutabilityDays``; a primary's repository records them in its config instead, so
    only Jobs writing to a recovery site (whose config is the primary's) pass them."""
    days = location.spec.immutability_days
    return [f"object_lock_mode={LOCK_MODE}", f"object_lock_days={days}"] if days else []


def _claim(location: BackupLocation, name: str, mount: str) -> list[Mount]:
    if location.spec.provider != "filesystem":
        return []
    return [
        Mount(
            name=name,
            path=mount,
            volume={"persistentVolumeClaim": {"claimName": location.spec.claim_name}},
            read_only=False,
        )
    ]


def repository_access(location: BackupLocation, *, site_locks: bool = False) -> RepositoryAccess:
    """How a Job opens ``location`` as its repository; ``site_locks`` adds the lock
    options of a recovery site's ``immutabilityDays`` (for Jobs that write to a site)."""
    args = ["--repo", location_url(location)]
    options = _options(location) + (lock_options(location) if site_locks else [])
    mounts = _claim(location, "repository", REPOSITORY_MOUNT)
    annotations: dict[str, str] = {}
    if location.spec.ca_cert:
        option, mount, annotations = _ca(location)
        options.append(option)
        mounts.append(mount)
    for option in options:
        args += ["--option", option]
    limits = location.spec.bandwidth
    if limits is not None:
        args += commands.limit_options(limits.upload_ki_bps, limits.download_ki_bps)
    creds = location.spec.credentials_secret_ref
    account = location.spec.service_account_name
    return RepositoryAccess(
        args=args,
        credentials_secret=creds.name if creds else None,
        password_secret=location.spec.repository_password_secret_ref.name,
        password_key=location.spec.repository_password_secret_ref.key,
        mounts=mounts,
        account=account,
        labels=_identity_labels(location),
        annotations=annotations,
    )


def _identity_labels(location: BackupLocation) -> dict[str, str]:
    """The pod labels ``location``'s workload identity needs."""
    spec = location.spec
    if spec.service_account_name and spec.provider == "azure":
        return {AZURE_IDENTITY_LABEL: "true"}
    return {}


def _account(req: JobRequest, account: str | None) -> str | None:
    """The ServiceAccount of ``req`` once it reaches a location naming ``account`` as well
    (the controllers have refused two different ones: ``identity.account_problem``)."""
    if account and req.identity_account not in (None, account):
        raise ValueError(
            f"a Job runs as one ServiceAccount, not {req.identity_account} and {account}"
        )
    return account or req.identity_account


def with_repository(
    req: JobRequest, location: BackupLocation, *, site_locks: bool = False
) -> JobRequest:
    """``req`` opening ``location``'s repository: its arguments and mounts after the
    request's own, and its Secrets as file volumes."""
    access = repository_access(location, site_locks=site_locks)
    return replace(
        req,
        args=[*req.args, *access.args],
        mounts=[*req.mounts, *access.mounts],
        credentials_secret=access.credentials_secret,
        password_secret=access.password_secret,
        password_key=access.password_key,
        identity_account=_account(req, access.account),
        labels={**req.labels, **access.labels},
        pod_annotations={**req.pod_annotations, **access.annotations},
    )


def with_site(req: JobRequest, site: BackupLocation) -> JobRequest:
    """``req`` (a ``safehold replicate``) writing to recovery site ``site``: its URL,
    options and object lock, its credentials Secret and password key as files of their
    own, next to the primary's. The Job writes to the site and reads from the primary,
    so the site's upload limit replaces the primary's (the primary's download limit
    stays): the command has one limit per direction."""
    spec = site.spec
    upload = spec.bandwidth.upload_ki_bps if spec.bandwidth else None
    args = ["--to", location_url(site, SITE_MOUNT), *commands.limit_options(upload, None)]
    options = _options(site) + lock_options(site)
    mounts = _claim(site, "site-repository", SITE_MOUNT)
    annotations: dict[str, str] = {}
    if spec.ca_cert:
        option, mount, annotations = _ca(site, site=True)
        options.append(option)
        mounts.append(mount)
    for option in options:
        args += ["--to-option", option]
    if spec.credentials_secret_ref:
        mounts.append(
            Mount(
                name="site-storage-options",
                path=_SITE_OPTIONS_DIR,
                volume={"secret": {"secretName": spec.credentials_secret_ref.name}},
            )
        )
        args += ["--to-options-dir", _SITE_OPTIONS_DIR]
    password = spec.repository_password_secret_ref
    mounts.append(
        Mount(
            name="site-password",
            path=_SITE_PASSWORD_DIR,
            volume={
                "secret": {
                    "secretName": password.name,
                    "items": [{"key": password.key, "path": "password"}],
                }
            },
        )
    )
    args += ["--to-password-file", f"{_SITE_PASSWORD_DIR}/password"]
    return replace(
        req,
        args=[*_without_upload_limit(req.args), *args],
        mounts=[*req.mounts, *mounts],
        identity_account=_account(req, spec.service_account_name),
        labels={**req.labels, **_identity_labels(site)},
        pod_annotations={**req.pod_annotations, **annotations},
    )


def _without_upload_limit(args: Sequence[str]) -> list[str]:
    """``args`` without a ``--limit-upload N`` (the primary's, in a replication Job)."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--limit-upload":
            skip = True
        else:
            out.append(arg)
    return out
