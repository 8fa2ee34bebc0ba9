"""A WAL archive's drains follow the base backups that stay, not the retention rules
(engine/databases/walretention.py); pure, with snapshots made here. The real round trip
(forget, prune, verify, then a restore that reaches the newest WAL) is in
tests/databases/test_pitr_cli.py."""

from __future__ import annotations

from safehold.engine.databases.walretention import follow_bases
from safehold.repo.snapshot import Snapshot


def _snap(sid: str, source: str, **meta: str) -> Snapshot:
    kind = "postgresql-wal" if source.endswith("/pg/wal") else "postgresql-base"
    return Snapshot(
        time="2026-12-07T00:00:00Z", source=source, type="full", tree="0" * 64, paths=[],
        hostname="h", meta={"source.kind": kind, "pg.system": "7", **meta}, id=sid,
    )  # fmt: skip


WAL, BASE = "ns/pol/db/pg/wal", "ns/pol/db/pg/base"


def test_drains_before_the_oldest_kept_base_backup_go_and_the_rest_stay() -> None:
    drains = [_snap(f"w{i}", WAL, **{"pg.end_lsn": f"0/{i}000000"}) for i in range(1, 6)]
    base = _snap("b", BASE, **{"pg.start_lsn": "0/3000028"})
    decisions = follow_bases(drains, [base])
    # w3 ends at 0/3000000, before the base backup starts: its WAL is in the tar
    assert [decisions[d.id].keep for d in drains] == [False, False, False, True, True]
    assert "oldest kept base backup b" in decisions["w1"].reason


def test_without_a_base_backup_of_their_server_drains_are_kept() -> None:
    drains = [_snap("w1", WAL, **{"pg.end_lsn": "0/1000000"})]
    other = _snap("b", BASE, **{"pg.start_lsn": "0/9000028", "pg.system": "8"})
    elsewhere = _snap("c", "ns/other/db/pg/base", **{"pg.start_lsn": "0/9000028"})
    assert follow_bases(drains, [other, elsewhere])["w1"].keep
