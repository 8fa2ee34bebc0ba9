"""Blobs and packs: how chunks are compressed, sealed and gathered (format sections 6, 7).

A pack is ``blob_1 .. blob_n || sealed header || u32 header length``. The header
lists every blob (type, flags, stored and raw length, id), so a pack describes
itself and the index can always be rebuilt from the packs. A pack holding blobs
compressed with a dictionary (:mod:`safehold.repo.dictionary`) holds the dictionary
too, as its first blob. In format version 2 the
pack starts with its subkey prefix (``u32 key version || salt``, section 5a), and
its blobs and header are sealed under that pack's own subkey.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from typing import NamedTuple, TypeAlias

import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from safehold.repo.crypto import (
    AAD_PACK_HEADER,
    SEAL_OVERHEAD,
    Sealer,
    SealError,
    blob_aad,
    open_sealed,
    seal,
    seal_parts,
)
from safehold.repo.dictionary import DICT_MAX_BLOB, MAX_DICT_SIZE, Dictionary
from safehold.repo.errors import CorruptObject

__all__ = [
    "BLOB_DATA",
    "BLOB_DICT",
    "BLOB_TREE",
    "BLOB_TYPES",
    "FLAGS",
    "FLAG_DICT",
    "FLAG_ZSTD",
    "HEADER_ENTRY",
    "BlobEncoder",
    "EncodedBlob",
    "PackBlob",
    "Unsealed",
    "build_pack",
    "decode_blob",
    "open_dictionary",
    "pack_key",
    "pack_trailer",
    "parse_pack",
    "parse_pack_header",
    "reseal_blob",
]

BLOB_DATA = 0x01
BLOB_TREE = 0x02
BLOB_DICT = 0x03  # a compression dictionary (format section 6)
BLOB_TYPES = (BLOB_DATA, BLOB_TREE, BLOB_DICT)
FLAG_ZSTD = 0x01
FLAG_DICT = 0x02  # compressed with the dictionary of its pack; only with FLAG_ZSTD
#: The flags a blob may have: none, zstd, zstd with the pack's dictionary.
FLAGS = (0, FLAG_ZSTD, FLAG_ZSTD | FLAG_DICT)
HEADER_ENTRY = struct.Struct("<BBII32s")  # type, flags, stored length, raw length, id
_TRAILER = struct.Struct("<I")
_SAMPLE = 64 * 1024
_SAMPLE_MIN_GAIN = 0.97


class PackBlob(NamedTuple):
    """One blob's place in a pack. A named tuple: indexes hold one per blob, and loading
    them is the bulk of opening a repository (tuples are made several times faster than
    frozen dataclass instances)."""

    type: int
    flags: int
    offset: int
    stored: int
    raw: int
    id: bytes


class Unsealed(NamedTuple):
    """A compressed blob not sealed yet: in format version 2 its key is that of the pack
    it lands in, which the writer knows only when it adds the blob (it seals it then)."""

    aad: bytes
    body: bytes | memoryview


#: What :meth:`BlobEncoder.encode` gives the writer: (nonce, ciphertext), or an
#: :class:`Unsealed` body for the writer to seal under its pack's subkey.
EncodedBlob: TypeAlias = tuple[bytes, bytes] | Unsealed


class BlobEncoder:
    """Compresses (when worth it) and seals blobs. One per thread: zstd contexts are not shared.

    With the sealer of a version-2 repository it only compresses: the writer seals each
    blob under the subkey of the pack it adds it to (one HKDF per pack, not per blob).
    With a ``dictionary``, data blobs up to ``DICT_MAX_BLOB`` bytes are compressed with it
    (flags ``FLAG_ZSTD | FLAG_DICT``); the writer must put them in packs holding it."""

    def __init__(
        self, aead: AESGCM | Sealer, level: int, dictionary: Dictionary | None = None
    ) -> None:
        if isinstance(aead, Sealer):
            self._aead: AESGCM | None = aead.new_pack_key().aead if aead.version < 2 else None
        else:
            self._aead = aead
        self._zstd = zstandard.ZstdCompressor(level=level, write_content_size=True)
        self._probe = zstandard.ZstdCompressor(level=1)
        self._dict = dictionary.compressor(level) if dictionary is not None else None

    def encode(
        self, blob_type: int, blob_id: bytes, data: bytes | memoryview
    ) -> tuple[EncodedBlob, int]:
        """Return ((nonce, ciphertext), flags), the sealed blob being their concatenation;
        or (:class:`Unsealed`, flags) for a version-2 repository's writer to seal."""
        size = len(data)
        body: bytes | memoryview = data
        flags = 0
        if size >= 64:
            worth = True
            if size > 2 * _SAMPLE:
                sample = data[:_SAMPLE]
                worth = len(self._probe.compress(sample)) < _SAMPLE * _SAMPLE_MIN_GAIN
            if worth:
                if self._dict is not None and blob_type == BLOB_DATA and size <= DICT_MAX_BLOB:
                    packed, zstd = self._dict.compress(data), FLAG_ZSTD | FLAG_DICT
                else:
                    packed, zstd = self._zstd.compress(data), FLAG_ZSTD
                if len(packed) < size:
                    body, flags = packed, zstd
        if self._aead is None:
            return Unsealed(blob_aad(blob_type, blob_id), body), flags
        return seal_parts(self._aead, blob_aad(blob_type, blob_id), body), flags


def reseal_blob(
    source: AESGCM, target: AESGCM, blob_type: int, blob_id: bytes, sealed: bytes | memoryview
) -> bytes:
    """A sealed blob moved to a pack with another key (a repack in format version 2):
    opened under ``source`` and sealed again under ``target``, the body unchanged.
    :class:`SealError` when it does not open."""
    aad = blob_aad(blob_type, blob_id)
    nonce, ciphertext = seal_parts(target, aad, open_sealed(source, aad, sealed))
    return nonce + ciphertext


_LOCAL = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    """One decompression context per thread: contexts are not thread-safe, and making
    one per blob costs more than decompressing a small blob."""
    dctx: zstandard.ZstdDecompressor | None = getattr(_LOCAL, "dctx", None)
    if dctx is None:
        dctx = zstandard.ZstdDecompressor()
        _LOCAL.dctx = dctx
    return dctx


def _decompress_unsized(
    dctx: zstandard.ZstdDecompressor, body: bytes | memoryview, raw: int
) -> bytes:
    """Decompress a frame that does not state its size (Safehold never writes one; only a
    damaged or foreign blob has it) in pieces, stopping past ``raw`` bytes, so that memory
    follows what the frame really holds rather than what the header claims."""
    out = bytearray()
    for piece in dctx.read_to_iter(body, write_size=64 * 1024):
        out += piece
        if len(out) > raw:
            break
    return bytes(out)


def decode_blob(
    aead: AESGCM,
    blob_type: int,
    blob_id: bytes,
    flags: int,
    raw: int,
    sealed: bytes | memoryview,
    dictionary: Dictionary | None = None,
) -> bytes:
    """Open and decompress one blob (``dictionary``: its pack's, for a blob flagged
    ``FLAG_DICT``); raise :class:`SealError` or :class:`ValueError` on damage."""
    body = open_sealed(aead, blob_aad(blob_type, blob_id), sealed)
    if flags not in FLAGS:
        raise ValueError(f"unknown blob flags {flags:#x}")
    if flags & FLAG_ZSTD:
        dctx = _decompressor()
        if flags & FLAG_DICT:
            if dictionary is None:
                raise ValueError("it needs its pack's dictionary, which cannot be read")
            dctx = dictionary.decompressor()
        try:
            # zstd allocates the size its frame header claims: refuse one that is not ``raw``
            claimed = zstandard.frame_content_size(body)
            if claimed == raw:
                body = dctx.decompress(body)
            elif claimed == -1:
                body = _decompress_unsized(dctx, body, raw)
            else:
                raise ValueError(f"blob's compressed frame does not hold {raw} bytes")
        except zstandard.ZstdError as exc:
            raise ValueError(f"blob does not decompress ({exc})") from exc
    if len(body) != raw:
        raise ValueError(f"blob is {len(body)} bytes, the header says {raw}")
    return body


def open_dictionary(
    aead: AESGCM, data: bytes | memoryview, where: PackBlob, id_of: Callable[[bytes], bytes]
) -> Dictionary:
    """The dictionary at ``where`` in a pack's ``data`` (``id_of``: the repository's blob
    id), authenticated and checked against its id; :class:`SealError` or
    :class:`ValueError` when it is damaged."""
    sealed = memoryview(data)[where.offset : where.offset + where.stored]
    plain = decode_blob(aead, BLOB_DICT, where.id, 0, where.raw, sealed)
    if id_of(plain) != where.id:
        raise ValueError("the pack's dictionary does not match its id")
    return Dictionary(where.id, plain)


def pack_trailer(aead: AESGCM, blobs: list[PackBlob]) -> bytes:
    """The sealed header and its length, to append after the blobs of a pack."""
    header = b"".join(HEADER_ENTRY.pack(b.type, b.flags, b.stored, b.raw, b.id) for b in blobs)
    sealed_header = seal(aead, AAD_PACK_HEADER, header)
    return sealed_header + _TRAILER.pack(len(sealed_header))


def build_pack(aead: AESGCM, blobs: list[tuple[PackBlob, bytes]], prefix: bytes = b"") -> bytes:
    """Assemble a whole pack from its subkey prefix (version 2; empty in version 1), blobs
    and their sealed bytes (offsets must be consecutive, the first after the prefix)."""
    trailer = pack_trailer(aead, [b for b, _ in blobs])
    return b"".join([prefix] + [sealed for _, sealed in blobs] + [trailer])


def parse_pack_header(
    aead: AESGCM, tail: bytes, pack_size: int, name: str, prefix: int = 0
) -> list[PackBlob]:
    """Decode the header from the end of a pack (``tail`` holds at least the header +
    trailer); ``prefix`` is the size of the subkey prefix that leads the pack."""
    if len(tail) < _TRAILER.size:
        raise CorruptObject(name, "pack is too short to hold a header")
    (hlen,) = _TRAILER.unpack_from(tail, len(tail) - _TRAILER.size)
    end = hlen + _TRAILER.size
    if hlen < SEAL_OVERHEAD or end > len(tail) or end + prefix > pack_size:
        raise CorruptObject(name, f"pack header length {hlen} does not fit the pack")
    start = len(tail) - _TRAILER.size - hlen
    try:
        header = open_sealed(aead, AAD_PACK_HEADER, tail[start : start + hlen])
    except SealError as exc:
        raise CorruptObject(name, "pack header fails authentication") from exc
    if len(header) % HEADER_ENTRY.size:
        raise CorruptObject(name, "pack header has a partial entry")
    entries: list[PackBlob] = []
    offset = prefix
    for blob_type, flags, stored, raw, blob_id in HEADER_ENTRY.iter_unpack(header):
        n = len(entries)
        if blob_type not in BLOB_TYPES or flags not in FLAGS:
            raise CorruptObject(
                name, f"pack header entry {n} has type {blob_type}, flags {flags:#x}"
            )
        if stored < SEAL_OVERHEAD:
            raise CorruptObject(name, f"pack header entry {n} is {stored} bytes")
        if blob_type == BLOB_DICT and (n or flags or raw > MAX_DICT_SIZE):
            raise CorruptObject(name, f"pack header entry {n} is a dictionary out of place")
        if flags & FLAG_DICT and (blob_type != BLOB_DATA or not n or entries[0].type != BLOB_DICT):
            raise CorruptObject(name, f"pack header entry {n} needs a dictionary the pack lacks")
        entries.append(PackBlob(blob_type, flags, offset, stored, raw, blob_id))
        offset += stored
    if offset + hlen + _TRAILER.size != pack_size:
        raise CorruptObject(name, "pack header does not account for the pack's bytes")
    return entries


def pack_key(sealer: Sealer, data: bytes | memoryview, name: str) -> AESGCM:
    """The key of the pack whose first bytes are ``data`` (format section 5a);
    :class:`CorruptObject` when its prefix names a key version the sealer lacks."""
    try:
        return sealer.key_for(data)
    except SealError as exc:
        raise CorruptObject(name, f"pack {exc}") from exc


def parse_pack(aead: AESGCM | Sealer, data: bytes, name: str) -> list[PackBlob]:
    """Decode the header of a whole pack held in memory (with a :class:`Sealer`, a pack
    of its repository's version; with an AEAD, a version-1 pack)."""
    if isinstance(aead, Sealer):
        return parse_pack_header(
            pack_key(aead, data, name), data, len(data), name, aead.prefix_size
        )
    return parse_pack_header(aead, data, len(data), name)
