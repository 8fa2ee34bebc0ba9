"""A BackupPolicy's ``retention`` mapping means the same to the operator and to ``safehold
forget --policy FILE`` (documented as "as in a BackupPolicy"): the same mapping is fed through
both paths, each ending in the engine's RetentionPolicy, and the two must be equal. Once a
``keepWithin: 90m`` meant 90 minutes to the operator and 90 months to forget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from safehold.api.backuppolicy import Retention
from safehold.cli.context import UsageError
from safehold.cli.main import build_parser
from safehold.cli.maintenance import _policies
from safehold.controller.retention import retention_args
from safehold.engine.retention import RetentionPolicy

MAPPINGS: list[dict[str, Any]] = [
    {"keepWithin": "90min"},
    {"keepWithin": "36h", "keepLast": 2},
    {"keepWithin": "1y6mo", "keepMonthly": 12},
    {"keepWithin": "2w3d", "keepDaily": 7, "keepTags": ["audit"]},
    {"keepDaily": 7, "keepWeekly": 4, "keepYearly": 3},
]


def _through_the_operator(mapping: dict[str, Any]) -> RetentionPolicy:
    """The custom resource's model, the operator's forget arguments, the real CLI parser."""
    retention = Retention.model_validate(mapping)
    argv = retention_args(retention, time_zone="Europe/Berlin", prefix="prod/app/")
    default, _ = _policies(build_parser().parse_args(["-r", "file:///unused", *argv]))
    assert default is not None
    return default


def _through_forget_policy(mapping: dict[str, Any], tmp_path: Path) -> RetentionPolicy:
    """The same mapping as the file a person gives to ``forget --policy``."""
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({**mapping, "timeZone": "Europe/Berlin"}))
    argv = ["-r", "file:///unused", "forget", "--policy", str(path)]
    default, _ = _policies(build_parser().parse_args(argv))
    assert default is not None
    return default


@pytest.mark.parametrize(
    "mapping", MAPPINGS, ids=lambda m: ",".join(f"{k}={v}" for k, v in m.items())
)
def test_the_same_mapping_means_the_same_on_both_paths(
    mapping: dict[str, Any], tmp_path: Path
) -> None:
    assert _through_the_operator(mapping) == _through_forget_policy(mapping, tmp_path)


@pytest.mark.parametrize("span", ["90m", "6m", "1y6m"])
def test_a_bare_m_is_refused_on_both_paths(span: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="ambiguous"):
        Retention.model_validate({"keepWithin": span})
    with pytest.raises(UsageError, match="ambiguous"):
        _through_forget_policy({"keepWithin": span}, tmp_path)
    with pytest.raises(UsageError, match="ambiguous"):
        _policies(build_parser().parse_args(["-r", "file:///x", "forget", "--keep-within", span]))
