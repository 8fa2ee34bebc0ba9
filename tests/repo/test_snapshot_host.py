"""A snapshot's ``host`` (format section 9): stored when set, absent (unset) on snapshots
written before it existed, checked when read, and the one rule that a snapshot without a
host belongs to every host, as the parent choice, ``latest`` and the filters apply it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from safehold.repo import CorruptObject, Repository, Snapshot
from safehold.repo.crypto import AAD_SNAPSHOT, open_sealed, seal

PW = "host password"


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    from safehold.storage import open_storage

    return Repository.init(open_storage((tmp_path / "repo").as_uri()), PW)


def _doc(**fields: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "time": "2025-01-01T00:00:00Z",
        "source": "s",
        "type": "full",
        "tree": "00" * 32,
        "paths": ["/d"],
        "hostname": "pod-x7",
        **fields,
    }


def _save_raw(repo: Repository, doc: dict[str, Any]) -> str:
    return repo.save_object("snapshots", seal(repo.aead, AAD_SNAPSHOT, json.dumps(doc).encode()))


def _raw(repo: Repository, snap_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        open_sealed(repo.aead, AAD_SNAPSHOT, repo.storage.get(f"snapshots/{snap_id}"))
    )
    return doc


def test_host_is_stored_when_set_and_left_out_when_unset(repo: Repository) -> None:
    with_host = Snapshot(
        time="2026-01-01T00:00:00Z", source="s", type="full", tree="00" * 32, paths=[],
        hostname="m", host="web-1",
    )  # fmt: skip
    assert _raw(repo, repo.save_snapshot(with_host))["host"] == "web-1"
    without = Snapshot(
        time="2026-01-02T00:00:00Z", source="s", type="full", tree="00" * 32, paths=[],
        hostname="m",
    )  # fmt: skip
    assert "host" not in _raw(repo, repo.save_snapshot(without))
    assert [s.host for s in repo.snapshots()] == ["web-1", None]


@pytest.mark.parametrize("value", [None, "a"])
def test_absent_or_null_host_is_unset_and_a_string_is_read(repo: Repository, value: Any) -> None:
    _save_raw(repo, _doc(host=value))
    _save_raw(repo, _doc(time="2024-01-01T00:00:00Z"))
    hosts = [s.host for s in repo.snapshots()]
    assert hosts == [None, value]


@pytest.mark.parametrize("value", ["", 5, ["a"], "a\x00b", "x" * 4097])
def test_a_bad_host_makes_the_snapshot_damaged(repo: Repository, value: Any) -> None:
    name = _save_raw(repo, _doc(host=value))
    errors: dict[str, str] = {}
    assert repo.snapshots(errors=errors) == []
    assert "field 'host'" in errors[f"snapshots/{name}"]
    with pytest.raises(CorruptObject):
        repo.find_snapshot("latest")


def test_a_snapshot_without_host_belongs_to_every_host(repo: Repository) -> None:
    old = _save_raw(repo, _doc(time="2026-01-01T00:00:00Z"))
    a = _save_raw(repo, _doc(time="2026-01-02T00:00:00Z", host="a"))
    b = _save_raw(repo, _doc(time="2026-01-03T00:00:00Z", host="b"))
    assert [s.id for s in repo.snapshots(host="a")] == [old, a]
    assert [s.id for s in repo.snapshots(host="c")] == [old]
    assert [s.id for s in repo.snapshots()] == [old, a, b]
    assert repo.find_snapshot("latest", host="a").id == a
    assert repo.find_snapshot("latest", host="c").id == old
    assert repo.find_snapshot("latest").id == b
    only_b = [s for s in repo.snapshots() if s.of_host("b")]
    assert [s.id for s in only_b] == [old, b]
