"""Snapshot metadata (format section 9): stored in the snapshot object, checked when read.

A snapshot written before ``meta`` existed reads as ``{}``; a snapshot whose ``meta`` breaks
the rules is a damaged object (``CorruptObject`` naming it), never a traceback, so
``safehold snapshots`` lists the others and names it unreadable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from safehold.repo import CorruptObject, Repository, Snapshot, check_meta
from safehold.repo.crypto import AAD_SNAPSHOT, open_sealed, seal
from safehold.repo.snapshot import decode_snapshot, newest_per_source, source_filter
from safehold.storage import open_storage

PW = "meta password"


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(open_storage((tmp_path / "repo").as_uri()), PW)


def _snap(source: str = "ns/pol/vol", time: str = "2026-11-01T00:00:00Z", **kw: Any) -> Snapshot:
    return Snapshot(
        time=time, source=source, type="full", tree="00" * 32, paths=["/d"], hostname="h", **kw
    )


def _save_raw(repo: Repository, doc: dict[str, Any]) -> str:
    """Store a snapshot object with exactly this JSON (as another writer might have)."""
    return repo.save_object("snapshots", seal(repo.aead, AAD_SNAPSHOT, json.dumps(doc).encode()))


def test_meta_is_stored_in_the_snapshot_object_and_read_back(repo: Repository) -> None:
    meta = {
        "claim.size": "10Gi",
        "claim.storageClassName": "fast-ssd",
        "claim.accessModes": "ReadWriteOnce",
        "claim.labels": json.dumps({"app": "web"}),
        "source.kind": "volume",
    }
    snap_id = repo.save_snapshot(_snap(meta=meta))
    (found,) = repo.snapshots()
    assert found.id == snap_id
    assert found.meta == meta
    stored = json.loads(
        open_sealed(repo.aead, AAD_SNAPSHOT, repo.storage.get(f"snapshots/{snap_id}"))
    )
    assert stored["meta"] == meta


def test_a_snapshot_without_meta_reads_as_empty(repo: Repository) -> None:
    old = {
        "version": 1,
        "time": "2025-01-01T00:00:00Z",
        "source": "old",
        "type": "full",
        "tree": "00" * 32,
        "paths": ["/d"],
        "hostname": "h",
    }
    _save_raw(repo, old)
    (found,) = repo.snapshots()
    assert found.meta == {}
    repo.save_snapshot(_snap(source="new"))  # no meta: the object has no "meta" field
    new = next(s for s in repo.snapshots() if s.source == "new")
    raw = json.loads(open_sealed(repo.aead, AAD_SNAPSHOT, repo.storage.get(f"snapshots/{new.id}")))
    assert "meta" not in raw


@pytest.mark.parametrize(
    ("meta", "why"),
    [
        ({"bad key": "x"}, "meta key 'bad key' is not allowed"),
        ({".hidden": "x"}, "meta key '.hidden' is not allowed"),
        ({"k" * 64: "x"}, "is not allowed"),
        ({"claim.size": 10}, "meta value of 'claim.size' must be a string"),
        ({"claim.labels": "x" * 1025}, "has 1025 characters; at most 1024"),
        ({f"k{i}": "v" for i in range(33)}, "meta has 33 entries; at most 32"),
        (["claim.size", "1Gi"], "meta must be a mapping"),
    ],
)
def test_a_bad_meta_field_is_a_damaged_snapshot_named_by_its_object(
    repo: Repository, meta: Any, why: str
) -> None:
    good = repo.save_snapshot(_snap(source="good", meta={"source.kind": "volume"}))
    doc = {**json.loads(json.dumps(_snap().__dict__)), "meta": meta}
    doc.pop("id")
    bad = _save_raw(repo, doc)
    errors: dict[str, str] = {}
    assert [s.id for s in repo.snapshots(errors=errors)] == [good]
    assert list(errors) == [f"snapshots/{bad}"]
    assert why in errors[f"snapshots/{bad}"]
    assert "snapshot is malformed" in errors[f"snapshots/{bad}"]
    with pytest.raises(CorruptObject, match=f"snapshots/{bad}: snapshot is malformed"):
        decode_snapshot(repo.aead, repo.storage.get(f"snapshots/{bad}"), f"snapshots/{bad}")
    with pytest.raises(ValueError, match=r"not allowed|must be|at most"):
        repo.save_snapshot(_snap(meta=meta))  # and such a snapshot is never written


def test_the_limits_themselves_are_allowed() -> None:
    meta = {f"k{i}": "v" * 1024 for i in range(31)}
    meta["a" + "b" * 62] = ""
    assert check_meta(meta) == meta


def test_newest_per_source_and_source_filter() -> None:
    a1 = _snap("ns/p/a", "2026-11-01T00:00:00Z")
    a2 = _snap("ns/p/a", "2026-11-02T00:00:00Z")
    b1 = _snap("ns/p/b", "2026-11-01T00:00:00Z")
    newest = newest_per_source([a2, b1, a1])
    assert list(newest) == ["ns/p/a", "ns/p/b"]
    assert newest["ns/p/a"] is a2
    chosen = source_filter(["other"], ["ns/p/"])
    assert chosen("ns/p/a")
    assert chosen("other")
    assert not chosen("ns/q/a")
