"""The in-memory index keeps each blob's location packed in one int (repo/index.py): what a
lookup returns must be exactly what was added, at every field's full width."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from safehold.repo import MasterKeys
from safehold.repo.index import (
    MARKS,
    BlobLocation,
    Index,
    IndexBody,
    IndexFile,
    decode_index,
    encode_index,
)
from safehold.repo.pack import BLOB_DATA, BLOB_DICT, BLOB_TREE, FLAG_ZSTD, PackBlob

U32 = st.integers(0, 2**32 - 1)


@given(
    blobs=st.lists(
        st.tuples(
            st.sampled_from([BLOB_DATA, BLOB_TREE]), st.sampled_from([0, FLAG_ZSTD]), U32, U32, U32
        ),
        min_size=1,
        max_size=20,
    ),
    packs=st.integers(1, 300),
)
def test_a_lookup_returns_what_was_added(
    blobs: list[tuple[int, int, int, int, int]], packs: int
) -> None:
    index = Index()
    expected: dict[bytes, BlobLocation] = {}
    for n in range(packs):  # pack numbers past one byte
        pack = f"{n:064x}"
        added = []
        for i, (t, f, o, s, r) in enumerate(blobs):
            blob_id = n.to_bytes(16, "big") + i.to_bytes(16, "big")
            added.append(PackBlob(t, f, o, s, r, blob_id))
            expected[blob_id] = BlobLocation(pack, t, f, o, s, r)
        index.add_pack(pack, added)
    assert len(index) == len(expected)
    for blob_id, loc in expected.items():
        assert index.lookup(blob_id) == loc
        assert index.raw_size(blob_id) == loc.raw
    assert dict(index.items()) == expected


def test_the_first_location_of_a_blob_stays() -> None:
    index = Index()
    blob = bytes(32)
    index.add_pack("a" * 64, [PackBlob(BLOB_DATA, 0, 0, 10, 20, blob)])
    index.add_pack("b" * 64, [PackBlob(BLOB_DATA, FLAG_ZSTD, 5, 6, 7, blob)])
    assert index.lookup(blob) == BlobLocation("a" * 64, BLOB_DATA, 0, 0, 10, 20)
    assert index.lookup(bytes(31) + b"\x01") is None


def test_an_index_object_merges_into_the_index_as_its_file_does() -> None:
    """Loading a repository merges index objects' entries straight from their bytes
    (IndexBody.merge_into): the same index as decoding the object's file first."""
    keys = MasterKeys.generate()
    aead = keys.aead()
    packs = {
        f"{p:064x}": [
            PackBlob(
                BLOB_DATA if i % 3 or p > 1 else BLOB_TREE,  # packs 0 and 1 hold trees
                FLAG_ZSTD * (i % 2),
                i * 100,
                i + 1,
                2**32 - 1 - i,
                os.urandom(32),
            )
            for i in range(50 + 30 * p)  # packs of many entries have marks
        ]
        for p in range(4)
    }
    data = encode_index(aead, IndexFile(packs, supersedes=["c" * 64]))
    body = IndexBody(aead, data, "index/x")
    assert body.supersedes == ["c" * 64]
    direct, through_file = Index(), Index()
    body.merge_into(direct)
    through_file.add_file(decode_index(aead, data, "index/x"))
    assert dict(direct.items()) == dict(through_file.items())
    assert len(direct) == sum(len(blobs) for blobs in packs.values())
    assert direct.pack_loads() == through_file.pack_loads()
    assert [bool(load.marks) for load in direct.pack_loads()] == [False, False, True, True]


def test_a_packs_load_is_the_blobs_located_in_it_and_where_its_last_blob_ends() -> None:
    """What a parallel restore shares packs out by (engine/restore/parts.py): a blob another
    pack already holds is not counted again, and a pack of trees costs nothing to restore."""
    index = Index()
    ids = [i.to_bytes(32, "big") for i in range(6)]
    index.add_pack("a" * 64, [PackBlob(BLOB_DATA, 0, 0, 100, 100, ids[0]),
                              PackBlob(BLOB_DATA, 0, 100, 50, 90, ids[1])])  # fmt: skip
    index.add_pack("b" * 64, [PackBlob(BLOB_DATA, 0, 0, 10, 10, ids[1]),  # known: in "a"
                              PackBlob(BLOB_DATA, 0, 10, 30, 30, ids[2]),
                              PackBlob(BLOB_DATA, 0, 40, 20, 20, ids[3])])  # fmt: skip
    index.add_pack("c" * 64, [PackBlob(BLOB_TREE, 0, 0, 70, 300, ids[4])])
    assert [load[:2] for load in index.pack_loads()] == [(2, 150), (2, 60), (0, 0)]
    places = [index.pack_place(i) for i in ids]
    assert places == [(0, 0), (0, 100), (1, 10), (1, 40), (2, 0), None]
    # an index file met later that lists "a" again (after a repair) adds only what is new
    index.add_pack("a" * 64, [PackBlob(BLOB_DATA, 0, 150, 10, 10, ids[5])])
    assert index.pack_loads()[0][:2] == (3, 160)


def test_a_packs_marks_say_where_each_sixteenth_of_its_blobs_starts() -> None:
    """How a parallel restore finds where a pack's files lie (engine/restore/shares.py): a
    pack whose first 16 KiB hold 900 tiny blobs and whose other 4 MiB hold 100 bigger ones
    has 14 of its 15 marks in those first 16 KiB. The same marks whether the index is
    loaded from an index object or told of the pack by the writer."""
    offsets = [i * 16 for i in range(900)] + [16 * 1024 + i * 40_000 for i in range(100)]
    blobs = [PackBlob(BLOB_DATA, 0, o, 16, 16, os.urandom(32)) for o in offsets]
    from_writer = Index()
    from_writer.add_pack("a" * 64, blobs)
    (load,) = from_writer.pack_loads()
    assert load.blobs == 1000
    assert load.size == offsets[-1] + 16
    expected = [offsets[1000 * i // MARKS] for i in range(1, MARKS)]
    assert load.offsets() == expected
    assert sum(o < 16 * 1024 for o in load.offsets()) == 14
    keys = MasterKeys.generate()
    data = encode_index(keys.aead(), IndexFile({"a" * 64: blobs}))
    loaded = Index()
    IndexBody(keys.aead(), data, "index/x").merge_into(loaded)
    assert loaded.pack_loads() == [load]
    few = Index()
    few.add_pack("b" * 64, blobs[:10])
    assert few.pack_loads()[0].marks == b""  # a pack of a few big chunks: its bytes say it


_POOL = [bytes([i]) * 32 for i in range(40)]  # few ids: objects share some blobs and packs
_PACKS = [f"{p:064x}" for p in range(6)]


@st.composite
def _index_objects(draw: st.DrawFn) -> list[IndexFile]:
    """One to three index objects whose packs and blobs may repeat, within an object and
    across objects, as after a crash or a repair; each pack holds at most one dictionary,
    and a dictionary's copies in several packs share its id (format section 7)."""
    objects = []
    for _ in range(draw(st.integers(1, 3))):
        packs: dict[str, list[PackBlob]] = {}
        for pack in draw(st.lists(st.sampled_from(_PACKS), max_size=4, unique=True)):
            blobs = []
            offset = 0
            for blob_id, blob_type in draw(
                st.lists(
                    st.tuples(st.sampled_from(_POOL), st.sampled_from([BLOB_DATA, BLOB_TREE])),
                    max_size=6,
                )
            ):
                stored = draw(st.integers(1, 2**20))
                blobs.append(PackBlob(blob_type, 0, offset, stored, stored + 1, blob_id))
                offset += stored
            if draw(st.booleans()):  # the pack's dictionary, first in it
                dictionary = draw(st.sampled_from(_POOL[:2]))
                blobs.insert(0, PackBlob(BLOB_DICT, 0, 0, 36, 32, dictionary))
            packs[pack] = blobs
        objects.append(IndexFile(packs))
    return objects


@given(objects=_index_objects())
def test_loading_index_objects_makes_the_index_their_files_make(
    objects: list[IndexFile],
) -> None:
    """Loading merges each object's entries in bulk when its packs and blobs are new
    (Index.add_spans), and pack by pack otherwise: either way the index is the one the
    objects' files make, entry by entry (a blob known keeps its first location; a
    dictionary's later copies are not counted in their packs' loads)."""
    aead = MasterKeys.generate().aead()
    loaded, from_files = Index(), Index()
    for n, index_file in enumerate(objects):
        data = encode_index(aead, index_file)
        IndexBody(aead, data, f"index/{n}").merge_into(loaded)
        from_files.add_file(decode_index(aead, data, f"index/{n}"))
    assert dict(loaded.items()) == dict(from_files.items())
    assert loaded.packs() == from_files.packs()
    assert loaded.pack_loads() == from_files.pack_loads()
    assert loaded.tree_packs() == from_files.tree_packs()
    for pack in _PACKS:
        assert loaded.dictionary_of(pack) == from_files.dictionary_of(pack)
    for dictionary in _POOL[:2]:
        assert loaded.dictionary_copies(dictionary) == from_files.dictionary_copies(dictionary)


def test_copies_of_a_dictionary_do_not_stop_the_bulk_load() -> None:
    """A repository of small files holds one dictionary in many packs, within one index
    object and across objects: loading them still takes the bulk path, and the
    dictionary's id keeps the location of its first copy."""
    aead = MasterKeys.generate().aead()
    dictionary = os.urandom(32)

    def pack_of(n: int) -> list[PackBlob]:
        return [PackBlob(BLOB_DICT, 0, 36, 100, 90, dictionary)] + [
            PackBlob(BLOB_DATA, FLAG_ZSTD, 136 + 10 * i, 10, 20, os.urandom(32)) for i in range(100)
        ]

    first = IndexFile({f"{p:064x}": pack_of(p) for p in range(3)})
    second = IndexFile({f"{p:064x}": pack_of(p) for p in range(3, 5)})
    index = Index()
    bulk_calls = []
    index.add_pack = lambda *a, **k: bulk_calls.append(a)  # type: ignore[method-assign]
    for n, index_file in enumerate((first, second)):
        IndexBody(aead, encode_index(aead, index_file), f"index/{n}").merge_into(index)
    assert bulk_calls == []  # never pack by pack
    assert index.lookup(dictionary) == BlobLocation(f"{0:064x}", BLOB_DICT, 0, 36, 100, 90)
    assert len(index) == 1 + 5 * 100
    assert [load.blobs for load in index.pack_loads()] == [101, 100, 100, 100, 100]
    assert len(index.dictionary_copies(dictionary)) == 5
