"""The pure parts of point-in-time recovery in the operator: what the API refuses (at the
field, saying why), the replication slot's default name, a RestoreRequest's refusal of a
pointInTime source, and the status comparison that a message ending in "Z" once broke."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from safehold.api import BackupPolicy, RestoreRequest, validate_spec
from safehold.api.backuppolicy import BackupPolicyStatus, WalArchiveState
from safehold.controller import metrics
from safehold.controller.common import Stop, _same
from safehold.controller.restoreplan import chosen_sources, point_in_time_sources
from safehold.controller.restoresources import Origin, RestoreSource
from safehold.controller.walarchive import reconcile_wal_archive, slot_name


def _spec(**database: Any) -> dict[str, Any]:
    return {
        "location": {"name": "loc"},
        "sources": {
            "databases": [
                {
                    "name": "orders",
                    "engine": "postgresql",
                    "host": "pg.shop.svc",
                    "credentialsSecretRef": {"name": "pg"},
                    "pointInTime": {},
                    **database,
                }
            ]
        },
    }


def test_a_point_in_time_source_is_valid_with_its_defaults() -> None:
    assert validate_spec("BackupPolicy", _spec()) == []
    policy = BackupPolicy.model_validate({"metadata": {"name": "p"}, "spec": _spec()})
    pit = policy.spec.sources.databases[0].point_in_time
    assert pit is not None
    assert pit.archive_interval == "5m"
    assert pit.slot is None


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        ({"engine": "mysql"}, "spec.sources.databases[0].pointInTime", "PostgreSQL"),
        ({"databases": ["shop"]}, "spec.sources.databases[0].databases", "whole server"),
        (
            {"pointInTime": {"archiveInterval": "30s"}},
            "spec.sources.databases[0].pointInTime.archiveInterval",
            "at least 1m",
        ),
        (
            {"pointInTime": {"slot": "Bad-Slot"}},
            "spec.sources.databases[0].pointInTime.slot",
            "",
        ),
    ],
)
def test_what_point_in_time_refuses_is_named_at_its_field(
    change: dict[str, Any], path: str, words: str
) -> None:
    errors = validate_spec("BackupPolicy", _spec(**change))
    assert [e.path for e in errors] == [path], errors
    assert words in errors[0].message


def test_slot_names_are_what_postgresql_accepts_and_stay_apart() -> None:
    assert slot_name("shop", "db-backup", "orders") == "safehold_shop_db_backup_orders"
    long_a = slot_name("n" * 40, "policy-" + "a" * 30, "orders")
    long_b = slot_name("n" * 40, "policy-" + "a" * 30, "orders2")
    assert len(long_a) == len(long_b) == 63
    assert long_a != long_b
    for name in (long_a, long_b):
        assert all(c.isdigit() or c.islower() or c == "_" for c in name)


def test_a_point_in_time_source_restores_into_a_target_claim() -> None:
    policy = BackupPolicy.model_validate(
        {"metadata": {"name": "shop-db", "namespace": "shop"}, "spec": _spec()}
    )
    origin = Origin(
        policy="shop-db",
        run="r1",
        described="BackupRun r1",
        sources=[RestoreSource(name="orders", kind="database", snapshot_id="b" * 64)],
    )
    pitr = point_in_time_sources(policy, origin)
    assert pitr == {"orders"}
    assert point_in_time_sources(None, origin) == set()  # nor meta, nor policy: a dump
    req = RestoreRequest.model_validate(
        {
            "metadata": {"name": "back", "namespace": "shop"},
            "spec": {"policyRef": {"name": "shop-db"}, "target": {"claimName": "pgdata"}},
        }
    )
    assert [s.name for s in chosen_sources(req, origin, pitr)] == ["orders"]
    with pytest.raises(Stop, match="one volume \\(or point-in-time database\\) source"):
        chosen_sources(req, origin)  # a dumped database has no claim to write into


def test_a_message_that_ends_like_a_time_is_compared_as_text() -> None:
    stored = {
        "message": "restores can reach 2026-12-07T15:58:57.919227Z",
        "t": "2026-12-07T15:58:57Z",
    }
    same = {
        "message": "restores can reach 2026-12-07T15:58:57.919227Z",
        "t": "2026-12-07T15:58:57+00:00",
    }
    assert _same(stored, same)
    assert not _same(stored, {**same, "message": "other"})


def test_a_source_no_longer_archived_leaves_no_gauge_to_alert_on() -> None:
    """Without its gauges, SafeholdWalArchiveLagging cannot fire for a source whose
    pointInTime was removed (the archive's age would only grow)."""
    spec = _spec()
    del spec["sources"]["databases"][0]["pointInTime"]
    policy = BackupPolicy.model_validate(
        {"metadata": {"name": "p", "namespace": "ns"}, "spec": spec}
    )
    labels = ("ns", "p", "orders")
    metrics.WAL_ARCHIVED_UNTIL.labels(*labels).set(1.0)
    metrics.WAL_ARCHIVE_INTERVAL.labels(*labels).set(300.0)
    status = BackupPolicyStatus(
        wal_archive=[WalArchiveState(source="orders", result="Succeeded", job="j")]
    )
    rt: Any = SimpleNamespace()  # nothing to follow or start: no API call
    assert reconcile_wal_archive(rt, {"metadata": {}}, policy, status) is None
    assert status.wal_archive == []
    exported = {tuple(s.labels.values()) for m in metrics.REGISTRY.collect() for s in m.samples
                if s.name.startswith("safehold_wal_archive")}  # fmt: skip
    assert labels not in exported
