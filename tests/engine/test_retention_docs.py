"""Run every ``retention-example`` block of docs/retention.md, so the docs cannot drift.

A block is YAML with three keys: ``policy`` (the camelCase mapping of a
``BackupPolicy``'s ``retention``), ``snapshots`` (id -> time, or id -> mapping with
``time``, ``source``, ``tags``) and ``decisions`` (id -> list of the reasons it is
kept, or ``forget``). Every snapshot must have a decision, so a reader sees the fate
of each one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from safehold.engine.retention import RetentionPolicy, apply_policy

DOC = Path(__file__).resolve().parents[2] / "docs" / "retention.md"
BLOCK = re.compile(r"^```retention-example\n(.*?)^```", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Snap:
    id: str
    time: datetime
    source: str
    tags: frozenset[str]
    host: str | None = None


def examples() -> list[Any]:
    text = DOC.read_text(encoding="utf-8")
    found = []
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        found.append(pytest.param(match.group(1), id=f"retention.md:{line}"))
    return found


def test_the_docs_have_examples_for_every_rule() -> None:
    text = "\n".join(p.values[0] for p in examples())
    for key in ("keepLast", "keepHourly", "keepDaily", "keepWeekly", "keepMonthly"):
        assert key in text
    for key in ("keepYearly", "keepWithin", "keepTags", "timeZone", "policy: {}"):
        assert key in text


def snapshot(snap_id: str, value: Any) -> Snap:
    spec = value if isinstance(value, dict) else {"time": value}
    moment = spec["time"]
    assert isinstance(moment, datetime), f"{snap_id}: time {moment!r} is not a timestamp"
    assert moment.tzinfo is not None, f"{snap_id}: write the time with its offset or Z"
    return Snap(
        id=snap_id,
        time=moment,
        source=spec.get("source", "default"),
        tags=frozenset(spec.get("tags", [])),
        host=spec.get("host"),
    )


@pytest.mark.parametrize("block", examples())
def test_doc_example(block: str) -> None:
    example = yaml.safe_load(block)
    assert set(example) == {"policy", "snapshots", "decisions"}
    policy = RetentionPolicy.model_validate(example["policy"])
    snaps = [snapshot(str(k), v) for k, v in example["snapshots"].items()]
    expected = {str(k): v for k, v in example["decisions"].items()}
    assert set(expected) == {s.id for s in snaps}, "give a decision for every snapshot"

    got = {
        d.snapshot.id: list(d.reasons) if d.keep else "forget" for d in apply_policy(policy, snaps)
    }
    assert got == expected
