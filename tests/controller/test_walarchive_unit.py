"""The pure parts of point-in-time recovery in the operator: what the API refuses (at the
field, saying why), the replication slot's default name, a RestoreRequest's refusal of a
pointInTime source, and the status comparison that a message ending in "Z" once broke."""

from __future__ import annotations

from typing import Any

import pytest

from safehold.api import BackupPolicy, RestoreRequest, validate_spec
from safehold.controller.common import _same
from safehold.controller.sources.databases import database_restore_item
from safehold.controller.walarchive import slot_name


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


def test_a_restore_request_refuses_a_point_in_time_source_with_the_command_to_use() -> None:
    policy = BackupPolicy.model_validate(
        {"metadata": {"name": "shop-db", "namespace": "shop"}, "spec": _spec()}
    )
    req = RestoreRequest.model_validate(
        {
            "metadata": {"name": "back", "namespace": "shop"},
            "spec": {"policyRef": {"name": "shop-db"}},
        }
    )
    item = database_restore_item(req, policy, "shop-db", "orders", "a" * 64)
    assert item.phase == "Failed"
    assert item.error is not None
    assert item.error.reason == "PointInTimeSource"
    assert "safehold pg-restore-pitr --source shop/shop-db/orders" in item.error.message


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
