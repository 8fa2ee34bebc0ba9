"""``BackupLocation``: where a repository lives and how to reach it.

The controller validates a location with a short Job that connects with the
credentials Secret, initialises the repository if it is empty, and reports the result
in the ``Available`` condition; it re-checks every ``validationInterval``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from safehold.api.base import ApiModel
from safehold.api.conditions import Conditions
from safehold.api.errors import invalid
from safehold.api.meta import CrdInfo, CustomResource, PrinterColumn
from safehold.api.references import SecretKeyReference, SecretReference
from safehold.api.types import Duration, ResourceName

__all__ = [
    "BackupLocation",
    "BackupLocationSpec",
    "BackupLocationStatus",
    "BandwidthLimits",
    "LocationProvider",
    "LocationRole",
    "ServerSideEncryption",
    "SourceSnapshots",
]

LocationProvider = Literal["s3", "gcs", "azure", "filesystem"]
LocationRole = Literal["primary", "recovery-site"]


class BandwidthLimits(ApiModel):
    """How fast the Jobs that reach a location may move data, in KiB/s (1 KiB = 1024 bytes),
    each Job on its own: the ``safehold`` command's ``--limit-upload`` and
    ``--limit-download`` (docs/cli.md)."""

    upload_ki_bps: int | None = Field(default=None, ge=1, le=2**31 - 1)
    """Writing to the location (a backup's packs, a replication's copies to a recovery
    site, a prune's rewritten packs), at most this many KiB/s; empty: unlimited."""
    download_ki_bps: int | None = Field(default=None, ge=1, le=2**31 - 1)
    """Reading from the location (a restore, a test restore, `verify`'s data reads, a
    replication from this primary), at most this many KiB/s; empty: unlimited."""


class ServerSideEncryption(ApiModel):
    """S3 server-side encryption of every object the Jobs write, on top of the
    repository's own encryption (which is always on): for buckets whose policy demands
    the x-amz-server-side-encryption header, or keys an auditor wants in KMS."""

    mode: Literal["s3", "kms"]
    """s3: S3's own keys (SSE-S3, AES256); kms: a KMS key (SSE-KMS, aws:kms)."""
    kms_key_id: str | None = Field(default=None, min_length=1, max_length=2048)
    """For mode kms: the key's id, alias (alias/NAME) or ARN; empty: the account's
    aws/s3 key."""

    @model_validator(mode="after")
    def _key_for_kms(self) -> ServerSideEncryption:
        if self.kms_key_id and self.mode != "kms":
            raise invalid("kmsKeyId", "names a KMS key, which only mode kms uses")
        return self


class BackupLocationSpec(ApiModel):
    """Where a repository lives: a bucket (or container, or volume) and how to reach it."""

    # The apiserver can say "bucket or claimName" without CEL (which 1.20 lacks); which of
    # the two the provider needs is checked in Python, and by the controller.
    model_config = ConfigDict(
        json_schema_extra={"anyOf": [{"required": ["bucket"]}, {"required": ["claimName"]}]}
    )

    provider: LocationProvider
    """The storage service: s3 (any S3-compatible service), gcs, azure or filesystem."""
    bucket: str | None = Field(default=None, min_length=1, max_length=255)
    """The bucket (s3, gcs) or container (azure). Required except for filesystem."""
    claim_name: ResourceName | None = None
    """For filesystem: the PersistentVolumeClaim (e.g. on NFS) that holds repositories."""
    prefix: str = Field(default="", max_length=1024, pattern=r"^[^/].*$|^$")
    """A path inside the bucket or volume under which the repository lives (no leading /)."""
    endpoint: str | None = Field(default=None, max_length=2048, pattern=r"^https?://[^\s]+$")
    """The service URL for S3-compatible stores, emulators or sovereign clouds
    (e.g. https://minio.example:9000); empty means the provider's public endpoint."""
    ca_cert: str | None = Field(default=None, max_length=65536)
    """PEM certificates of the CA (or CAs) that signed the endpoint's TLS certificate, for
    a server behind a private CA (MinIO, Ceph, a proxy): every Job that reaches the
    location trusts them instead of the system's CAs. Not secret, so it stays in the spec,
    where a new cluster's copy of the location finds it. Not used by provider filesystem."""
    region: str | None = Field(default=None, max_length=64)
    """For s3: the bucket's region; empty uses us-east-1 (or the endpoint's own). GCS and
    Azure find a bucket's location themselves."""
    server_side_encryption: ServerSideEncryption | None = None
    """For s3: the server-side encryption every upload and copy asks for
    (docs/storage.md); empty: the bucket's default."""
    addressing_style: Literal["auto", "path", "virtual"] | None = None
    """For s3: how buckets are addressed; path suits MinIO, SeaweedFS and Ceph. Empty means
    path with a custom endpoint, otherwise auto."""
    credentials_secret_ref: SecretReference | None = None
    """The Secret with the storage credentials, mounted read-only into the Job as one file
    per key (never as environment variables): for s3 AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN);
    for gcs service-account.json (a service-account key file); for azure
    AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with AZURE_STORAGE_KEY or
    AZURE_STORAGE_SAS_TOKEN (the account alone: Microsoft Entra ID). Empty: the Jobs find
    credentials themselves, from the workload identity of `serviceAccountName` or the
    node's."""
    service_account_name: ResourceName | None = None
    """The ServiceAccount (in the Job's namespace) that every Job reaching this location
    runs as, so that the cloud's workload identity grants it the bucket without keys in a
    Secret: IRSA or EKS Pod Identity (s3), GKE Workload Identity (gcs), Azure Workload
    Identity (azure; its pods get the label azure.workload.identity/use). Its Kubernetes
    API token is not mounted: the Jobs still have no API rights. Not used by provider
    filesystem. The chart's policyLimits.serviceAccounts applies (docs/storage.md)."""
    repository_password_secret_ref: SecretKeyReference
    """The Secret key holding the repository password, which encrypts every backup.
    Losing it means losing the backups: keep a copy outside the cluster."""
    role: LocationRole = "primary"
    """primary receives backups (a BackupPolicy's `location` must be one);
    recovery-site is written only by replication (a policy's `replicateTo`) and read by
    restores. Failing over is changing a site's role to primary and pointing the policy's
    `location` at it (docs/disaster-recovery.md)."""
    immutability_days: int = Field(default=0, ge=0, le=36500)
    """Lock every object for this many days in governance mode (S3 object lock, GCS
    object retention, Azure version-level immutability) so nobody, not even Safehold,
    can delete backups earlier; 0 disables it. The bucket must have locking enabled; a
    primary's repository records the lock when it is created (a repository created
    without it is refused), a recovery site's replication Jobs lock what they write
    (docs/immutability.md)."""
    bandwidth: BandwidthLimits | None = None
    """Bandwidth limits of each Job that reaches the location, on its own (Jobs running at
    once do not share them): backup, restore, retention, verify, test restore, and
    replication (a recovery site's upload limit for writing to it, the primary's download
    limit for reading from it; server-side copies are not limited). A limit holds on
    average over the objects a Job moves: each object goes at the link's speed once its
    turn has come. Empty: unlimited."""
    validation_interval: Duration = "1h"
    """How often the controller re-checks that the location is reachable."""
    max_concurrent_runs: int | None = Field(default=None, ge=1, le=10000)
    """How many BackupRuns writing here may run at once (a run's Jobs, one per source,
    count as one run); more wait in order of creation, phase Pending with reason Queued.
    Empty: no limit but the operator's cluster-wide one (the chart's maxConcurrentRuns)."""

    @model_validator(mode="after")
    def _bucket_or_claim(self) -> BackupLocationSpec:
        """`bucket` is required for s3, gcs and azure; `claimName` for filesystem (and only
        there); `region` and `addressingStyle` are only for s3. A field the provider would
        not use is refused, not ignored."""
        if self.provider == "filesystem":
            if not self.claim_name:
                raise invalid(
                    "claimName",
                    "is required for provider filesystem: name the PersistentVolumeClaim "
                    "that holds the repositories",
                )
            unused = {
                "bucket": self.bucket,
                "endpoint": self.endpoint,
                "caCert": self.ca_cert,
                "region": self.region,
                "addressingStyle": self.addressing_style,
                "serverSideEncryption": self.server_side_encryption,
                "credentialsSecretRef": self.credentials_secret_ref,
                "serviceAccountName": self.service_account_name,
            }
            for name, value in unused.items():
                if value:
                    raise invalid(name, "is not used by provider filesystem: remove it")
            if self.immutability_days:
                raise invalid(
                    "immutabilityDays",
                    "provider filesystem cannot lock files against deletion: use a bucket "
                    "with object lock (s3, gcs, azure), or set 0",
                )
        elif not self.bucket:
            raise invalid(
                "bucket",
                f"is required for provider {self.provider}: name the "
                f"{'container' if self.provider == 'azure' else 'bucket'} to write to",
            )
        elif self.addressing_style and self.provider != "s3":
            raise invalid("addressingStyle", f"is only used by provider s3, not {self.provider}")
        elif self.server_side_encryption and self.provider != "s3":
            raise invalid(
                "serverSideEncryption",
                f"is only used by provider s3, not {self.provider} (which encrypts at rest "
                "with its own keys)",
            )
        elif self.region and self.provider != "s3":
            raise invalid(
                "region",
                f"is only used by provider s3: {self.provider} finds the "
                f"{'container' if self.provider == 'azure' else 'bucket'}'s location itself; "
                "remove it",
            )
        elif self.claim_name:
            raise invalid("claimName", f"is only used by provider filesystem, not {self.provider}")
        if self.ca_cert is not None:
            _check_ca_cert(self.ca_cert)
        if self.max_concurrent_runs is not None and self.role == "recovery-site":
            raise invalid(
                "maxConcurrentRuns",
                "limits the BackupRuns writing to a primary; no run writes to a recovery "
                "site (replication does): remove it",
            )
        return self


_PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----\s*[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----"
)


def _check_ca_cert(text: str) -> None:
    """``caCert`` holds PEM certificates, and nothing secret."""
    if "PRIVATE KEY-----" in text:
        raise invalid(
            "caCert",
            "holds a private key: give only the CA's certificates (the spec is not secret)",
        )
    if not _PEM_CERTIFICATE.search(text):
        raise invalid(
            "caCert",
            "holds no PEM certificate: give the CA's certificates as -----BEGIN "
            "CERTIFICATE----- ... -----END CERTIFICATE----- blocks",
        )


class SourceSnapshots(ApiModel):
    """The snapshots of one source that the location holds (as its last check found)."""

    source: str = Field(max_length=1024)
    """The snapshot source, ``<namespace>/<policy>/<source>`` for the operator's backups."""
    snapshots: int = Field(ge=0)
    """How many snapshots of it the repository holds."""
    newest_time: datetime | None = None
    """The time of the newest one."""
    newest_snapshot: str | None = Field(default=None, max_length=128)
    """The id of the newest one (``RestoreRequest`` resolves it by policy and time)."""


class BackupLocationStatus(ApiModel):
    """What the controller last found at the location."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The ``metadata.generation`` this status describes."""
    conditions: Conditions = Field(default_factory=list)
    """Available is True when the location was reached and holds a repository."""
    phase: Literal["Pending", "Available", "Unavailable"] | None = None
    """A one-word summary of the Available condition."""
    last_validation_time: datetime | None = None
    """When the location was last checked."""
    repository_id: str | None = Field(default=None, max_length=128)
    """The id of the repository found or created there."""
    bytes_stored: int | None = Field(default=None, ge=0)
    """Bytes the repository occupies in storage (after deduplication and compression)."""
    snapshot_count: int | None = Field(default=None, ge=0)
    """Snapshots in the repository."""
    size: str | None = Field(default=None, max_length=32)
    """``bytesStored`` for people, e.g. ``1.2 GiB`` (the Size column of ``kubectl get``)."""
    sources: list[SourceSnapshots] = Field(default_factory=list, max_length=256)
    """Per source, how many snapshots the repository holds and the newest: what a new
    cluster can restore from here without any BackupRun (the first entries, by name, when
    there are more than a check can report)."""
    immutability_days: int | None = Field(default=None, ge=0)
    """The object lock in force: days each written object stays locked (empty: none)."""
    locks: int | None = Field(default=None, ge=0)
    """Locks in the repository at ``lastValidationTime``."""
    oldest_lock_age_seconds: int | None = Field(default=None, ge=0)
    """At ``lastValidationTime``, seconds since the oldest lock was written or refreshed
    (0: no lock). A live lock is refreshed every 5 minutes; one older than 30 minutes was
    left by a killed Job, or cannot be read (docs/monitoring.md, SafeholdRepositoryLockedLong)."""


class BackupLocation(CustomResource):
    """A storage location for backups: bucket, credentials and repository password."""

    crd = CrdInfo(
        kind="BackupLocation",
        plural="backuplocations",
        singular="backuplocation",
        short_names=("bl", "bloc"),
        printer_columns=(
            PrinterColumn("Provider", "string", ".spec.provider", "The storage service"),
            PrinterColumn("Bucket", "string", ".spec.bucket", "Bucket or container"),
            PrinterColumn("Role", "string", ".spec.role", "primary or recovery-site"),
            PrinterColumn(
                "Available",
                "string",
                '.status.conditions[?(@.type=="Available")].status',
                "Whether the location was reached",
            ),
            PrinterColumn("Size", "string", ".status.size", "Stored size of the repository"),
            PrinterColumn("Snapshots", "integer", ".status.snapshotCount", "Snapshots"),
            PrinterColumn("Stored", "integer", ".status.bytesStored", "Bytes stored", priority=1),
            PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Age"),
        ),
    )

    kind: Literal["BackupLocation"] = "BackupLocation"
    """``BackupLocation``."""
    spec: BackupLocationSpec
    """Where the repository lives."""
    status: BackupLocationStatus | None = None
    """Written by the controller."""
