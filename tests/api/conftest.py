"""Shared manifests for the API tests: small valid specs that each test breaks in one place."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

_VALID: dict[str, dict[str, Any]] = {
    "BackupLocation": {
        "provider": "s3",
        "bucket": "backups",
        "repositoryPasswordSecretRef": {"name": "repo-password"},
    },
    "BackupPolicy": {
        "sources": {"volumes": [{"claimName": "data"}]},
        "location": {"name": "primary"},
        "schedule": {"slots": [{"cron": "*/5 * * * *"}]},
        "retention": {"keepLast": 3},
    },
    "BackupRun": {"policyRef": {"name": "daily"}},
    "RestoreRequest": {"backupRunRef": {"name": "daily-1"}},
}


@pytest.fixture
def valid_spec() -> dict[str, dict[str, Any]]:
    """A fresh copy of a minimal valid spec per kind."""
    return copy.deepcopy(_VALID)
