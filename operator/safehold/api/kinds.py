"""The four kinds, by name: the one list the generator, docs and validation iterate."""

from __future__ import annotations

from collections.abc import Mapping

from safehold.api.backuplocation import BackupLocation
from safehold.api.backuppolicy import BackupPolicy
from safehold.api.backuprun import BackupRun
from safehold.api.meta import CustomResource
from safehold.api.restorerequest import RestoreRequest

__all__ = ["KINDS"]

#: kind -> model, in the order resources depend on each other (locations first).
KINDS: Mapping[str, type[CustomResource]] = {
    model.crd.kind: model for model in (BackupLocation, BackupPolicy, BackupRun, RestoreRequest)
}
