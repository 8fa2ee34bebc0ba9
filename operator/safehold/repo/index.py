"""The index: which pack holds each blob, in memory and as index objects (format section 8).

In memory it is one dict from blob id to a compact tuple, so lookups during a
backup cost one hash probe. Index objects are binary (fixed-size entries, zstd,
sealed) because they are loaded on every open and can hold millions of entries.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain, repeat, starmap
from operator import itemgetter, or_
from typing import Literal, NamedTuple, cast

import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from safehold.repo.crypto import AAD_INDEX, Sealer, SealError, open_sealed, seal
from safehold.repo.errors import CorruptObject
from safehold.repo.pack import BLOB_DICT, BLOB_TREE, BLOB_TYPES, FLAGS, PackBlob

__all__ = [
    "INDEX_MAX_BLOBS",
    "MARKS",
    "BlobLocation",
    "Index",
    "IndexBody",
    "IndexFile",
    "PackLoad",
    "decode_index",
    "encode_index",
    "split_packs",
]

_MAGIC = b"SHIX"
_ENTRY = struct.Struct("<BBIII32s")  # type, flags, offset, stored, raw, id
#: An entry's first 14 bytes (type, flags, offset, stored, raw), read as one field: as a
#: little-endian integer they are the low bits of the in-memory entry (:func:`_entry`).
_HEAD = struct.Struct("<14s32x")
_ID = struct.Struct("<14x32s")  # an entry's blob id
_NUMBER_SHIFT = 112  # where the pack number starts in the in-memory entry
_first = itemgetter(0)
_LITTLE: Literal["little"] = "little"
_U32 = struct.Struct("<I")
_TYPES = bytes(BLOB_TYPES)
_FLAGS = bytes(FLAGS)
_TREE = bytes((BLOB_TREE,))
_DICT = bytes((BLOB_DICT,))
#: A pack's blobs are located by where the blob at each of these fractions of its entries
#: starts (``PackLoad.marks``): a pack's files are not spread evenly over its bytes (a
#: directory of tiny files, then one of bigger ones; session 25 in docs/performance.md).
MARKS = 16
#: A pack of fewer entries keeps no marks: its blobs are big chunks, which cost their bytes.
_MARKED = 64
#: The largest index body read (zstd's frame header says the size before it is made):
#: 46 bytes per blob, so about 23 million blobs; writers write far smaller objects.
_MAX_BODY = 1 << 30
#: Blobs in one index object at most, whoever writes it (a backup, prune, ``repair
#: index``, replication at a site): 4.6 MB of entries before compression, read whole by
#: every open. A bound in packs alone is none: 2,000 packs of small files' blobs (16,000
#: each) would pass :data:`_MAX_BODY`, and readers would refuse the object.
INDEX_MAX_BLOBS = 100_000


class PackLoad(NamedTuple):
    """What restoring one pack's blobs costs, as a parallel restore shares packs out
    (engine/restore/shares.py): how many blobs the index locates in it, how many bytes it
    spans (to the end of its last blob, as listed), and where its blobs lie: ``marks``, the
    offsets at which the blobs at each 1/:data:`MARKS` of its entries start (little-endian
    u32s, in the listed order: a writer lists a pack's blobs as it wrote them), empty for a
    pack of few entries."""

    blobs: int
    size: int
    marks: bytes = b""

    def offsets(self) -> list[int]:
        """The marks as offsets, sorted (a listing out of order only blurs them)."""
        return sorted(offset for (offset,) in _U32.iter_unpack(self.marks))


def _marked(count: int) -> list[int]:
    """Which of a pack's ``count`` entries give its :attr:`PackLoad.marks`."""
    return [count * i // MARKS for i in range(1, MARKS)] if count >= _MARKED else []


class BlobLocation(NamedTuple):
    """Where a blob lives: pack name hash, and the PackBlob fields."""

    pack: str
    type: int
    flags: int
    offset: int
    stored: int
    raw: int


@dataclass
class IndexFile:
    """The decoded content of one index object."""

    packs: dict[str, list[PackBlob]] = field(default_factory=dict)
    supersedes: list[str] = field(default_factory=list)


def split_packs(
    packs: Iterable[tuple[str, list[PackBlob]]], max_blobs: int | None = None
) -> list[dict[str, list[PackBlob]]]:
    """``packs`` (id, entries), in their order, in as few index objects' worth as hold at
    most ``max_blobs`` (:data:`INDEX_MAX_BLOBS`) blobs each (a pack of more goes in one
    alone); one empty for none, so that a rewrite of an empty index still supersedes."""
    limit = INDEX_MAX_BLOBS if max_blobs is None else max_blobs
    chunks: list[dict[str, list[PackBlob]]] = [{}]
    blobs = 0
    for pack, entries in packs:
        if chunks[-1] and blobs + len(entries) > limit:
            chunks.append({})
            blobs = 0
        chunks[-1][pack] = entries
        blobs += len(entries)
    return chunks


def encode_index(aead: AESGCM | Sealer, index: IndexFile) -> bytes:
    out = bytearray(_MAGIC)
    out.append(1)
    out += _U32.pack(len(index.supersedes))
    for old in index.supersedes:
        out += bytes.fromhex(old)
    out += _U32.pack(len(index.packs))
    for pack, blobs in index.packs.items():
        out += bytes.fromhex(pack)
        out += _U32.pack(len(blobs))
        out += b"".join(starmap(_ENTRY.pack, blobs))  # a PackBlob's fields, in the entry's order
    # Level 1: the ids are random, and level 3 stores no less (3.59 MB for 100,000 blobs
    # either way) in twice the time, at the end of every backup.
    return seal(aead, AAD_INDEX, zstandard.ZstdCompressor(level=1).compress(bytes(out)))


def decode_index(aead: AESGCM | Sealer, data: bytes, name: str) -> IndexFile:
    """An index object's content; :class:`CorruptObject` naming it and what is wrong."""
    return IndexBody(aead, data, name).file()


class IndexBody:
    """An index object, authenticated, decompressed and checked whole, its entries not yet
    decoded: :meth:`file` makes the :class:`IndexFile`, :meth:`merge_into` adds them to an
    :class:`Index` one at a time (loading a repository's index makes no list of them).

    Every count is checked against the bytes left before anything is allocated for it,
    and the type and flags of all entries of a pack are checked at once (byte slices),
    so a hostile object costs no more memory than its own size and no Python per entry.
    Raises :class:`CorruptObject` naming the object and what is wrong.
    """

    __slots__ = ("_body", "_spans", "supersedes")

    def __init__(self, aead: AESGCM | Sealer, data: bytes, name: str) -> None:
        try:
            sealed = open_sealed(aead, AAD_INDEX, data)
        except SealError as exc:
            raise CorruptObject(name, "index object fails authentication") from exc
        try:
            size = zstandard.frame_content_size(sealed)
            if not 0 <= size <= _MAX_BODY:  # writers always record the size (-1: unknown)
                raise CorruptObject(name, f"index object claims an unusable size ({size} bytes)")
            body = zstandard.ZstdDecompressor().decompress(sealed, max_output_size=_MAX_BODY)
        except zstandard.ZstdError as exc:
            raise CorruptObject(name, f"index object does not decompress ({exc})") from exc
        self._body = body
        #: (pack, first entry's offset, end) for each pack, in the object's order.
        self._spans: list[tuple[str, int, int]] = []
        self.supersedes: list[str] = []
        field = "magic"
        try:
            if body[:4] != _MAGIC or body[4] != 1:
                raise ValueError("bad magic or version")
            field = "supersedes"
            pos = 5
            (count,) = _U32.unpack_from(body, pos)
            pos += 4
            if pos + 32 * count > len(body):
                raise ValueError(f"{count} ids do not fit in the object")
            self.supersedes = [body[pos + 32 * i : pos + 32 * (i + 1)].hex() for i in range(count)]
            pos += 32 * count
            field = "packs"
            (npacks,) = _U32.unpack_from(body, pos)
            pos += 4
            if pos + 36 * npacks > len(body):
                raise ValueError(f"{npacks} packs do not fit in the object")
            for _ in range(npacks):
                pack = body[pos : pos + 32].hex()
                field = f"pack {pack}"
                (nblobs,) = _U32.unpack_from(body, pos + 32)
                pos += 36
                end = pos + nblobs * _ENTRY.size
                if end > len(body):
                    raise ValueError("truncated")
                if body[pos : end : _ENTRY.size].translate(None, _TYPES):
                    raise ValueError("an entry has an unknown blob type")
                if body[pos + 1 : end : _ENTRY.size].translate(None, _FLAGS):
                    raise ValueError("an entry has unknown blob flags")
                self._spans.append((pack, pos, end))
                pos = end
            field = "end"
            if pos != len(body):
                raise ValueError("trailing bytes")
        except (ValueError, IndexError, struct.error) as exc:
            raise CorruptObject(name, f"index object is malformed at {field} ({exc})") from exc

    def file(self) -> IndexFile:
        body = self._body
        packs = {
            pack: list(map(PackBlob._make, _ENTRY.iter_unpack(body[pos:end])))
            for pack, pos, end in self._spans
        }
        return IndexFile(packs, self.supersedes)

    def merge_into(self, index: Index) -> None:
        """Add every entry to ``index`` (a blob it knows keeps its first location)."""
        body = self._body
        view = memoryview(body)
        spans: list[PackSpan] = []
        for pack, pos, end in self._spans:
            types = body[pos : end : _ENTRY.size]
            at = [pos + 2 + i * _ENTRY.size for i in _marked(len(types))]  # offset: u32 LE
            dictionary = None
            if _DICT in types:  # a pack of small files, with its dictionary (format section 7)
                where = pos + types.index(_DICT) * _ENTRY.size
                dictionary = PackBlob._make(_ENTRY.unpack_from(body, where))
            _, _, offset, stored, _, _ = (
                _ENTRY.unpack_from(body, end - _ENTRY.size) if end > pos else (0,) * 6
            )
            spans.append(
                PackSpan(
                    pack,
                    view[pos:end],
                    len(types),
                    _TREE in types,
                    dictionary,
                    b"".join([body[a : a + 4] for a in at]),
                    offset + stored,
                )
            )
        index.add_spans(spans)


class PackSpan(NamedTuple):
    """One pack's entries in an index object, still as bytes, and what the index keeps of
    the pack beside them (found without a step per entry: byte scans)."""

    pack: str
    entries: memoryview  # the entries, _ENTRY.size bytes each
    blobs: int
    holds_trees: bool
    dictionary: PackBlob | None
    marks: bytes
    end: int  # where its last entry's blob ends


#: An entry of the in-memory index is one int: (type, flags, offset, stored, raw, pack
#: number) in fields of 8, 8, 32, 32, 32 bits and the rest, low to high. One int object per
#: blob instead of a tuple and four ints takes 44 bytes instead of 200 (100,000 blobs: 15 MB
#: less), and a lookup touches one object, so a forked worker or restore part copies fewer
#: pages of it. Its low 112 bits are an index object entry's first 14 bytes read as a
#: little-endian integer, so loading an index makes the entries in C (:meth:`Index.add_spans`);
#: :meth:`Index.add_pack` makes them field by field.


def _entry(number: int, blob: PackBlob) -> int:
    """The in-memory entry of ``blob`` in pack ``number``."""
    return (
        number << _NUMBER_SHIFT
        | blob.raw << 80
        | blob.stored << 48
        | blob.offset << 16
        | blob.flags << 8
        | blob.type
    )


def _fields(entry: int) -> tuple[int, int, int, int, int, int]:
    """(pack number, type, flags, offset, stored, raw) of an in-memory entry."""
    m32 = 0xFFFFFFFF
    return (
        entry >> _NUMBER_SHIFT,
        entry & 0xFF,
        entry >> 8 & 0xFF,
        entry >> 16 & m32,
        entry >> 48 & m32,
        entry >> 80 & m32,
    )


class Index:
    """The merged, in-memory index of a repository; thread-safe for adds and lookups."""

    def __init__(self) -> None:
        # blob id -> (type, flags, offset, stored, raw, pack number) in one int (_fields)
        self._blobs: dict[bytes, int] = {}
        self._packs: list[str] = []
        self._pack_numbers: dict[str, int] = {}
        #: Numbers of the packs that hold a tree blob (trees have packs of their own).
        self._tree_packs: set[int] = set()
        #: The dictionary of each pack that holds one: (id, offset, stored, raw).
        self._pack_dicts: dict[int, tuple[bytes, int, int, int]] = {}
        #: Per pack number: the blobs the index locates in it, where its last blob ends,
        #: and where its blobs lie (:class:`PackLoad`).
        self._pack_blobs: list[int] = []
        self._pack_ends: list[int] = []
        self._pack_marks: list[bytes] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._blobs)

    def __contains__(self, blob_id: object) -> bool:
        return blob_id in self._blobs

    def add_pack(
        self,
        pack: str,
        blobs: Iterable[PackBlob],
        *,
        holds_trees: bool | None = None,
        holds_dict: bool | None = None,
        marks: bytes | None = None,
    ) -> None:
        """Add the pack's blobs (a blob already known keeps its first location).
        ``holds_trees``, ``holds_dict``, ``marks``: whether a blob is a tree, a dictionary,
        and the pack's :attr:`PackLoad.marks`, when the caller knows them without a step per
        entry (loading an index object: byte scans); else found here. A pack met again
        (an index object that lists it after a repair) keeps its first marks."""
        dictionary = None
        if holds_trees is None or holds_dict is None or marks is None:
            blobs = list(blobs)
            if marks is None:
                marks = b"".join(_U32.pack(blobs[i][2]) for i in _marked(len(blobs)))
            holds_trees = any(blob[0] == BLOB_TREE for blob in blobs)
            dictionary = next((blob for blob in blobs if blob[0] == BLOB_DICT), None)
        with self._lock:
            number = self._pack_numbers.get(pack)
            if number is None:
                number = self._new_pack(pack, marks)
            table = self._blobs
            known = len(table)
            offset = stored = 0
            base = number << _NUMBER_SHIFT
            for blob_type, flags, offset, stored, raw, blob_id in blobs:
                if blob_id not in table:  # the fields, low to high (see _fields)
                    table[blob_id] = (
                        base | raw << 80 | stored << 48 | offset << 16 | flags << 8 | blob_type
                    )
            # counted without a step per blob: the load of an index is a hot loop
            self._pack_blobs[number] += len(table) - known
            self._pack_ends[number] = max(self._pack_ends[number], offset + stored)
            self._note(number, holds_trees, dictionary)

    def _new_pack(self, pack: str, marks: bytes) -> int:
        """Number a pack the index has not met (the lock held)."""
        number = len(self._packs)
        self._packs.append(pack)
        self._pack_numbers[pack] = number
        self._pack_blobs.append(0)
        self._pack_ends.append(0)
        self._pack_marks.append(marks)
        return number

    def _note(self, number: int, holds_trees: bool, dictionary: PackBlob | None) -> None:
        """Whether pack ``number`` holds trees, and its dictionary (the lock held)."""
        if holds_trees:
            self._tree_packs.add(number)
        if dictionary is not None:
            _, _, offset, stored, raw, blob_id = dictionary
            self._pack_dicts[number] = (blob_id, offset, stored, raw)

    def add_spans(self, spans: list[PackSpan]) -> None:
        """Add the packs of one index object, as :meth:`add_pack` would one by one, with
        no Python step per entry: the object's entries become one dict in C (ids from
        their bytes, values from their first bytes and the pack's number), merged in one
        update. A dictionary stored in many packs (format section 7) keeps its first
        location, as any blob does. When other blobs are not all new (an object that
        repeats one or meets a known one: after a crash or a repair) or a pack is met
        again, pack by pack instead, so that a blob known keeps its first location."""
        if not self._add_new_spans(spans):
            for span in spans:
                entries = cast("Iterator[PackBlob]", _ENTRY.iter_unpack(span.entries))
                if span.dictionary is not None:
                    self.add_pack(span.pack, entries, marks=span.marks)
                else:
                    self.add_pack(
                        span.pack,
                        entries,
                        holds_trees=span.holds_trees,
                        holds_dict=False,
                        marks=span.marks,
                    )

    def _add_new_spans(self, spans: list[PackSpan]) -> bool:
        """:meth:`add_spans` when every pack and every blob but dictionaries is new; else
        False, having added nothing."""
        with self._lock:
            first = len(self._packs)
            packs = {span.pack for span in spans}
            if len(packs) != len(spans) or not packs.isdisjoint(self._pack_numbers):
                return False
            ids = chain.from_iterable(_ID.iter_unpack(span.entries) for span in spans)
            heads = chain.from_iterable(_HEAD.iter_unpack(span.entries) for span in spans)
            numbers = chain.from_iterable(
                repeat(n << _NUMBER_SHIFT, span.blobs) for n, span in enumerate(spans, first)
            )
            low = map(int.from_bytes, map(_first, heads), repeat(_LITTLE))
            new = dict(zip(map(_first, ids), map(or_, low, numbers), strict=True))
            # A dictionary's copies: the dict kept the last; the first is the location.
            located: dict[bytes, int] = {}  # dictionary id -> its first pack here
            for number, span in enumerate(spans, first):
                if span.dictionary is not None and span.dictionary.id not in located:
                    located[span.dictionary.id] = number
                    new[span.dictionary.id] = _entry(number, span.dictionary)
            copies = sum(span.dictionary is not None for span in spans) - len(located)
            if len(new) != sum(span.blobs for span in spans) - copies:
                return False  # a blob other than a dictionary is listed twice
            known = new.keys() & self._blobs.keys()
            if not known.issubset(located):
                return False
            for blob_id in known:  # a dictionary met before: it keeps that location
                del new[blob_id]
            if len(new) > len(self._blobs):  # the first object, say: insert the fewer
                new.update(self._blobs)
                self._blobs = new
            else:
                self._blobs.update(new)
            for number, span in enumerate(spans, first):
                self._new_pack(span.pack, span.marks)
                d = span.dictionary
                # its blobs that are new to the index (a dictionary's later copy is not)
                self._pack_blobs[number] = span.blobs - (
                    d is not None and (d.id in known or located[d.id] != number)
                )
                self._pack_ends[number] = span.end
                self._note(number, span.holds_trees, d)
            return True

    def add_file(self, index: IndexFile) -> None:
        for pack, blobs in index.packs.items():
            self.add_pack(pack, blobs)

    def lookup(self, blob_id: bytes) -> BlobLocation | None:
        entry = self._blobs.get(blob_id)
        if entry is None:
            return None
        number, t, f, o, s, r = _fields(entry)
        return BlobLocation(self._packs[number], t, f, o, s, r)

    def pack_place(self, blob_id: bytes) -> tuple[int, int] | None:
        """The number of the pack that holds the blob and the blob's offset in it, or None.
        The number is the pack's place in the order the index met packs (the packs one
        backup wrote have consecutive numbers; the place in :meth:`pack_loads`). A look-up
        that makes only a tuple: a parallel restore asks it of every file."""
        entry = self._blobs.get(blob_id)
        return None if entry is None else (entry >> _NUMBER_SHIFT, entry >> 16 & 0xFFFFFFFF)

    def raw_size(self, blob_id: bytes) -> int | None:
        entry = self._blobs.get(blob_id)
        return None if entry is None else entry >> 80 & 0xFFFFFFFF

    def dictionary_of(self, pack: str) -> PackBlob | None:
        """``pack``'s own dictionary, as its entry in the pack (format section 7); None
        when it holds none."""
        number = self._pack_numbers.get(pack)
        found = None if number is None else self._pack_dicts.get(number)
        if found is None:
            return None
        blob_id, offset, stored, raw = found
        return PackBlob(BLOB_DICT, 0, offset, stored, raw, blob_id)

    def dictionary_copies(self, dict_id: bytes) -> list[tuple[str, PackBlob]]:
        """Every pack that holds dictionary ``dict_id``, with its entry there."""
        return [
            (self._packs[number], PackBlob(BLOB_DICT, 0, offset, stored, raw, found))
            for number, (found, offset, stored, raw) in list(self._pack_dicts.items())
            if found == dict_id
        ]

    def packs(self) -> list[str]:
        return list(self._packs)

    def tree_packs(self) -> set[str]:
        """The packs that hold a tree blob (the local cache keeps them)."""
        return {self._packs[number] for number in self._tree_packs}

    def pack_loads(self) -> list[PackLoad]:
        """Per pack number, what restoring its blobs costs (:class:`PackLoad`); nothing
        (``PackLoad(0, 0)``) for a pack of trees, whose restore writes no file."""
        with self._lock:
            return [
                PackLoad(0, 0) if number in self._tree_packs else PackLoad(*load)
                for number, load in enumerate(
                    zip(self._pack_blobs, self._pack_ends, self._pack_marks, strict=True)
                )
            ]

    def items(self) -> Iterator[tuple[bytes, BlobLocation]]:
        for blob_id, entry in list(self._blobs.items()):
            number, t, f, o, s, r = _fields(entry)
            yield blob_id, BlobLocation(self._packs[number], t, f, o, s, r)
