"""The benchmark data set is reproducible and v2 differs from v1 as intended.

Both matter for the numbers: a data set that changed between runs, or a v2 that changed far more
(or less) than about 5 %, would make incremental-backup figures incomparable.
"""

from __future__ import annotations

from pathlib import Path

import blake3
import pytest
from pyfastcdc import FastCDC

import dataset

SCALE = 0.01  # the scale of the `data` fixture (conftest.py)


def _files_on_disk(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_same_seed_gives_same_bytes(data: dataset.DataSet, tmp_path: Path) -> None:
    again = dataset.generate(tmp_path / "again", SCALE, seed=7)
    assert again.manifest == data.manifest
    for version in ("v1", "v2"):
        assert _files_on_disk(again.path(version)) == _files_on_disk(data.path(version))


def test_other_seed_gives_other_bytes(data: dataset.DataSet, tmp_path: Path) -> None:
    other = dataset.generate(tmp_path / "other", SCALE, seed=8)
    assert other.manifest.v1.files.keys() != data.manifest.v1.files.keys() or any(
        other.manifest.v1.files[p] != e for p, e in data.manifest.v1.files.items()
    )
    assert (other.path("v1") / "big/random-a.bin").read_bytes() != (
        data.path("v1") / "big/random-a.bin"
    ).read_bytes()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_manifest_lists_every_file_with_its_checksum(data: dataset.DataSet, version: str) -> None:
    on_disk = _files_on_disk(data.path(version))
    listed = data.version(version).files
    assert sorted(on_disk) == sorted(listed)
    for path, content in on_disk.items():
        assert listed[path].size == len(content), path
        assert listed[path].blake3 == blake3.blake3(content).hexdigest(), path


def test_data_set_has_every_kind_of_file(data: dataset.DataSet) -> None:
    files = data.manifest.v1.files
    layout = dataset.layout_for(SCALE)
    small = [p for p in files if p.startswith("small/")]
    assert len(small) == layout.small_files
    assert len({Path(p).parent for p in small}) > 16  # a directory tree, not one flat folder
    assert files["big/random-a-copy.bin"] == files["big/random-a.bin"]  # the duplicate
    total = data.manifest.v1.total_bytes
    assert 0.8 * layout.approx_bytes < total < 1.2 * layout.approx_bytes
    log = (data.path("v1") / "big/app.log").read_bytes()
    assert len(set(log)) > 30  # text, not a run of zeros
    assert log.count(b"\n") > len(log) // 200


def test_changes_describe_exactly_how_v2_differs(data: dataset.DataSet) -> None:
    v1, v2, changes = data.manifest.v1.files, data.manifest.v2.files, data.manifest.changes
    assert changes.added
    assert changes.deleted
    assert changes.modified
    assert set(v2) == (set(v1) - set(changes.deleted)) | set(changes.added)
    assert not set(changes.added) & set(v1)
    for path in changes.modified:
        assert v1[path] != v2[path], path
    for path in set(v1) & set(v2) - set(changes.modified):
        assert v1[path] == v2[path], path
    unit = dataset.layout_for(SCALE).edit_bytes
    # Inserts shift content (size grows); overwrites keep the size.
    assert v2["big/random-b.bin"].size == v1["big/random-b.bin"].size + 4 * unit
    assert v2["big/random-a.bin"].size == v1["big/random-a.bin"].size


def _chunk_digests(root: Path, files: dict[str, dataset.FileEntry]) -> dict[bytes, int]:
    cdc = FastCDC(avg_size=4096)
    digests: dict[bytes, int] = {}
    for path in files:
        for chunk in cdc.cut_buf((root / path).read_bytes()):
            digests[blake3.blake3(chunk.data).digest()] = chunk.length
    return digests


def test_v2_changes_about_five_percent(data: dataset.DataSet) -> None:
    """Measured independently of the generator's own count: the share of v2's bytes in
    content-defined chunks that v1 does not have."""
    old = _chunk_digests(data.path("v1"), data.manifest.v1.files)
    new = _chunk_digests(data.path("v2"), data.manifest.v2.files)
    fresh = sum(length for digest, length in new.items() if digest not in old)
    fraction = fresh / data.manifest.v2.total_bytes
    assert 0.03 < fraction < 0.10, fraction
    claimed = data.manifest.changes.edited_bytes / data.manifest.v2.total_bytes
    assert 0.03 < claimed < 0.08, claimed


def test_ensure_generates_once_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAFEHOLD_CACHE", str(tmp_path))
    root = dataset.cache_root()
    assert root == tmp_path / f"bench-data-v{dataset.GENERATOR_VERSION}"
    first = dataset.ensure(0.002, seed=3)
    assert first.root.parent == root
    stamp = (first.root / "manifest.json").stat().st_mtime_ns
    second = dataset.ensure(0.002, seed=3)
    assert second.manifest == first.manifest
    assert (second.root / "manifest.json").stat().st_mtime_ns == stamp
    assert [p.name for p in root.iterdir()] == [first.root.name]  # no staging left behind


def test_scale_out_of_range_is_rejected() -> None:
    with pytest.raises(ValueError, match="--scale"):
        dataset.layout_for(0)
