"""The custom resources of Safehold (``safehold.io/v1alpha1``): the single source of truth.

The CRDs in ``crds/`` (and the Helm chart) and ``docs/resources.md`` are generated from
these models by ``python -m safehold.api.crdgen``; the controller parses objects with
them and calls :func:`validate_spec` to report every problem with its field path.
This package imports nothing else of Safehold, so any layer may use it.
"""

from safehold.api.backuplocation import (
    BackupLocation,
    BackupLocationSpec,
    BackupLocationStatus,
)
from safehold.api.backuppolicy import BackupPolicy, BackupPolicySpec, BackupPolicyStatus
from safehold.api.backuprun import (
    BackupRun,
    BackupRunSpec,
    BackupRunStatus,
    ReplicationResult,
    SourceResult,
)
from safehold.api.base import API_VERSION, GROUP, VERSION
from safehold.api.conditions import (
    AVAILABLE,
    COMPLETE,
    FAILED,
    READY,
    REPLICATED,
    RESTORE_TESTED,
    VERIFIED,
    Condition,
    find_condition,
    set_condition,
)
from safehold.api.enums import BackupType, RunPhase, SourceKind
from safehold.api.errors import FieldError
from safehold.api.kinds import KINDS
from safehold.api.meta import CrdInfo, CustomResource, ObjectMeta, PrinterColumn
from safehold.api.references import LocalObjectReference, SecretKeyReference, SecretReference
from safehold.api.reports import ErrorDetail, Progress
from safehold.api.restorerequest import (
    RestoredItem,
    RestoreRequest,
    RestoreRequestSpec,
    RestoreRequestStatus,
)
from safehold.api.types import parse_duration
from safehold.api.validation import resource_model, spec_model, validate_object, validate_spec

__all__ = [
    "API_VERSION",
    "AVAILABLE",
    "COMPLETE",
    "FAILED",
    "GROUP",
    "KINDS",
    "READY",
    "REPLICATED",
    "RESTORE_TESTED",
    "VERIFIED",
    "VERSION",
    "BackupLocation",
    "BackupLocationSpec",
    "BackupLocationStatus",
    "BackupPolicy",
    "BackupPolicySpec",
    "BackupPolicyStatus",
    "BackupRun",
    "BackupRunSpec",
    "BackupRunStatus",
    "BackupType",
    "Condition",
    "CrdInfo",
    "CustomResource",
    "ErrorDetail",
    "FieldError",
    "LocalObjectReference",
    "ObjectMeta",
    "PrinterColumn",
    "Progress",
    "ReplicationResult",
    "RestoreRequest",
    "RestoreRequestSpec",
    "RestoreRequestStatus",
    "RestoredItem",
    "RunPhase",
    "SecretKeyReference",
    "SecretReference",
    "SourceKind",
    "SourceResult",
    "find_condition",
    "parse_duration",
    "resource_model",
    "set_condition",
    "spec_model",
    "validate_object",
    "validate_spec",
]
