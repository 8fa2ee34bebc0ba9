"""A BackupLocation as the ``safehold`` command sees it: a repository URL, non-secret
options as arguments, Secrets as file volumes, and the filesystem claim as a mount.

Nothing here reads a Secret: the Job gets the credentials Secret mounted whole (each key
a file, read by ``--options-dir``) and the password key mounted as one file.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from safehold.api import BackupLocation
from safehold.controller.jobs import JobRequest, Mount

__all__ = ["REPOSITORY_MOUNT", "RepositoryAccess", "repository_access", "with_repository"]

#: Where a filesystem location's claim is mounted in the Job.
REPOSITORY_MOUNT = "/repository"
_SCHEMES = {"s3": "s3", "gcs": "gs", "azure": "azure"}


@dataclass(frozen=True)
class RepositoryAccess:
    """The arguments, Secrets and mounts a Job needs to open a location's repository."""

    args: list[str]
    credentials_secret: str | None
    password_secret: str
    password_key: str
    mounts: list[Mount] = field(default_factory=list)


def repository_access(location: BackupLocation) -> RepositoryAccess:
    spec = location.spec
    prefix = spec.prefix.strip("/")
    mounts: list[Mount] = []
    if spec.provider == "filesystem":
        url = f"file://{REPOSITORY_MOUNT}" + (f"/{prefix}" if prefix else "")
        mounts.append(
            Mount(
                name="repository",
                path=REPOSITORY_MOUNT,
                volume={"persistentVolumeClaim": {"claimName": spec.claim_name}},
                read_only=False,
            )
        )
    else:
        url = f"{_SCHEMES[spec.provider]}://{spec.bucket}" + (f"/{prefix}" if prefix else "")
    args = ["--repo", url]
    if spec.endpoint:
        args += ["--option", f"endpoint={spec.endpoint}"]
    if spec.region and spec.provider == "s3":
        args += ["--option", f"region={spec.region}"]
    if spec.provider == "s3":
        style = spec.addressing_style or ("path" if spec.endpoint else None)
        if style and style != "auto":
            args += ["--option", f"addressing_style={style}"]
    creds = spec.credentials_secret_ref
    return RepositoryAccess(
        args=args,
        credentials_secret=creds.name if creds else None,
        password_secret=spec.repository_password_secret_ref.name,
        password_key=spec.repository_password_secret_ref.key,
        mounts=mounts,
    )


def with_repository(req: JobRequest, location: BackupLocation) -> JobRequest:
    """``req`` opening ``location``'s repository: its arguments and mounts after the
    request's own, and its Secrets as file volumes."""
    access = repository_access(location)
    return replace(
        req,
        args=[*req.args, *access.args],
        mounts=[*req.mounts, *access.mounts],
        credentials_secret=access.credentials_secret,
        password_secret=access.password_secret,
        password_key=access.password_key,
    )
