"""Trees read ahead (safehold.repo.prefetch): every tree under the root in a few ranged reads
(a pack of trees read once for every level), checked like any blob; a damaged one left to
the walk, which reports it; a budget honoured."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from safehold.engine import BackupOptions, backup_paths
from safehold.repo import (
    BLOB_TREE,
    ChunkerParams,
    Config,
    CorruptObject,
    Node,
    Repository,
    Snapshot,
)
from safehold.repo.prefetch import prefetch_trees, subtrees
from safehold.repo.tree import encode_tree
from safehold.storage import Storage, open_storage
from safehold.storage.wrappers import ForwardingStorage

PASSWORD = "prefetch"


class _Counting(ForwardingStorage):
    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.gets = 0

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self.gets += 1
        return super().get(name, offset, length)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    config = Config.new(
        chunker=ChunkerParams(min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024),
        pack_size=512 * 1024,
    )
    storage = _Counting(open_storage((tmp_path / "repo").as_uri()))
    yield Repository.init(storage, PASSWORD, config)
    storage.close()


@pytest.fixture
def snap(repo: Repository, tmp_path: Path) -> Snapshot:
    src = tmp_path / "src"
    for a in range(6):
        for b in range(5):
            leaf = src / f"a{a}" / f"b{b}"
            leaf.mkdir(parents=True)
            (leaf / "f").write_bytes(bytes([a, b]) * 5000)
    return backup_paths(repo, [str(src)], BackupOptions(source="t")).snapshot


def _trees(repo: Repository, root: str) -> set[str]:
    found, level = set(), [root]
    while level:
        found.update(level)
        level = [str(n["subtree"]) for t in level for n in repo.load_tree(t) if n["type"] == "dir"]
    return found


def test_trees_and_file_data_are_in_packs_of_their_own(repo: Repository, snap: Snapshot) -> None:
    types: dict[str, set[int]] = {}
    for _, loc in repo.index.items():
        types.setdefault(loc.pack, set()).add(loc.type)
    assert all(len(kinds) == 1 for kinds in types.values())
    assert {BLOB_TREE} in types.values()


def test_every_tree_is_read_ahead_in_few_requests(repo: Repository, snap: Snapshot) -> None:
    trees = _trees(repo, snap.tree)
    assert len(trees) > 35
    storage = repo.storage
    assert isinstance(storage, _Counting)
    storage.gets = 0
    assert prefetch_trees(repo, snap.tree) == len(trees)
    assert storage.gets < len(trees) // 4  # a ranged read per pack and level
    assert set(repo.tree_cache) == trees
    storage.gets = 0
    assert _trees(repo, snap.tree) == trees
    assert storage.gets == 0  # the walk reads none again


def test_a_pack_of_trees_is_read_once_for_every_level(repo: Repository, snap: Snapshot) -> None:
    """Four levels of trees in one pack (the children before their parent, the root last):
    one request, from the pack's start (its prefix comes with it), serves every level; the
    repository is opened anew, so no pack's key is known beforehand."""
    packs = {loc.pack for _, loc in repo.index.items() if loc.type == BLOB_TREE}
    assert len(packs) == 1
    trees = _trees(repo, snap.tree)
    reopened = Repository.open(repo.storage, PASSWORD)
    storage = reopened.storage
    assert isinstance(storage, _Counting)
    storage.gets = 0
    assert prefetch_trees(reopened, snap.tree) == len(trees)
    assert storage.gets == 1
    assert set(reopened.tree_cache) == trees


def test_a_damaged_tree_is_left_to_the_walk_which_reports_it(
    repo: Repository, snap: Snapshot, tmp_path: Path
) -> None:
    top = next(n for n in repo.load_tree(snap.tree) if n["type"] == "dir")
    sub = str(next(n for n in repo.load_tree(str(top["subtree"])) if n["name"] == "a2")["subtree"])
    loc = repo.locate(bytes.fromhex(sub), BLOB_TREE)
    pack = tmp_path / "repo" / "data" / loc.pack[:2] / loc.pack
    data = bytearray(pack.read_bytes())
    data[loc.offset + 5] ^= 0x01
    pack.write_bytes(bytes(data))
    prefetch_trees(repo, snap.tree)
    assert sub not in repo.tree_cache
    assert str(top["subtree"]) in repo.tree_cache
    with pytest.raises(CorruptObject, match="is damaged"):
        repo.load_tree(sub)


def test_the_budget_stops_the_read_ahead(repo: Repository, snap: Snapshot) -> None:
    read = prefetch_trees(repo, snap.tree, budget=1)
    assert read == 1  # the root, then the budget is spent
    assert list(repo.tree_cache) == [snap.tree]


def test_subtrees_are_found_in_the_bytes_and_never_in_a_name() -> None:
    """The read-ahead finds subtree ids without decoding a tree: every directory's, and none
    from a name or a link target that spells a subtree key (JSON escapes its quotes)."""
    real, fake = "ab" * 32, "cd" * 32
    trap = f'x,"subtree":"{fake}"'
    nodes: list[Node] = [
        {"name": "dir-b", "type": "dir", "mode": 0o755, "subtree": real},
        {"name": "dir-a", "type": "dir", "mode": 0o755, "subtree": fake[::-1]},
        {"name": trap, "type": "file", "mode": 0o644, "size": 0, "content": []},
        {"name": "link", "type": "symlink", "mode": 0o777, "target": "{" + trap[2:]},
        # a backslash before the quote: encoded \\\" (the quote still escaped)
        {"name": "\\" + trap[1:], "type": "file", "mode": 0o644, "size": 0, "content": []},
    ]
    data = encode_tree(nodes)
    assert fake.encode() in data  # the trap is in the bytes
    assert subtrees(data) == [fake[::-1], real]  # in the tree's (name) order
    assert subtrees(encode_tree([])) == []
