"""Blobs and packs: how chunks are compressed, sealed and gathered (format sections 6, 7).

A pack is ``blob_1 .. blob_n || sealed header || u32 header length``. The header
lists every blob (type, flags, stored and raw length, id), so a pack describes
itself and the index can always be rebuilt from the packs.
"""

from __future__ import annotations

import struct
import threading
from typing import NamedTuple

import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from safehold.repo.crypto import (
    AAD_PACK_HEADER,
    SEAL_OVERHEAD,
    SealError,
    blob_aad,
    open_sealed,
    seal,
    seal_parts,
)
from safehold.repo.errors import CorruptObject

__all__ = [
    "BLOB_DATA",
    "BLOB_TREE",
    "FLAG_ZSTD",
    "HEADER_ENTRY",
    "BlobEncoder",
    "PackBlob",
    "build_pack",
    "decode_blob",
    "pack_trailer",
    "parse_pack",
    "parse_pack_header",
]

BLOB_DATA = 0x01
BLOB_TREE = 0x02
FLAG_ZSTD = 0x01
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


class BlobEncoder:
    """Compresses (when worth it) and seals blobs. One per thread: zstd contexts are not shared."""

    def __init__(self, aead: AESGCM, level: int) -> None:
        self._aead = aead
        self._zstd = zstandard.ZstdCompressor(level=level, write_content_size=True)
        self._probe = zstandard.ZstdCompressor(level=1)

    def encode(
        self, blob_type: int, blob_id: bytes, data: bytes | memoryview
    ) -> tuple[tuple[bytes, bytes], int]:
        """Return ((nonce, ciphertext), flags); the sealed blob is their concatenation."""
        size = len(data)
        body: bytes | memoryview = data
        flags = 0
        if size >= 64:
            worth = True
            if size > 2 * _SAMPLE:
                sample = data[:_SAMPLE]
                worth = len(self._probe.compress(sample)) < _SAMPLE * _SAMPLE_MIN_GAIN
            if worth:
                packed = self._zstd.compress(data)
                if len(packed) < size:
                    body, flags = packed, FLAG_ZSTD
        return seal_parts(self._aead, blob_aad(blob_type, blob_id), body), flags


_LOCAL = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    """One decompression context per thread: contexts are not thread-safe, and making
    one per blob costs more than decompressing a small blob."""
    dctx: zstandard.ZstdDecompressor | None = getattr(_LOCAL, "dctx", None)
    if dctx is None:
        dctx = zstandard.ZstdDecompressor()
        _LOCAL.dctx = dctx
    return dctx


def _decompress_unsized(body: bytes | memoryview, raw: int) -> bytes:
    """Decompress a frame that does not state its size (Safehold never writes one; only a
    damaged or foreign blob has it) in pieces, stopping past ``raw`` bytes, so that memory
    follows what the frame really holds rather than what the header claims."""
    out = bytearray()
    for piece in _decompressor().read_to_iter(body, write_size=64 * 1024):
        out += piece
        if len(out) > raw:
            break
    return bytes(out)


def decode_blob(
    aead: AESGCM, blob_type: int, blob_id: bytes, flags: int, raw: int, sealed: bytes | memoryview
) -> bytes:
    """Open and decompress one blob; raise :class:`SealError` or :class:`ValueError` on damage."""
    body = open_sealed(aead, blob_aad(blob_type, blob_id), sealed)
    if flags & ~FLAG_ZSTD:
        raise ValueError(f"unknown blob flags {flags:#x}")
    if flags & FLAG_ZSTD:
        try:
            # zstd allocates the size its frame header claims: refuse one that is not ``raw``
            claimed = zstandard.frame_content_size(body)
            if claimed == raw:
                body = _decompressor().decompress(body)
            elif claimed == -1:
                body = _decompress_unsized(body, raw)
            else:
                raise ValueError(f"blob's compressed frame does not hold {raw} bytes")
        except zstandard.ZstdError as exc:
            raise ValueError(f"blob does not decompress ({exc})") from exc
    if len(body) != raw:
        raise ValueError(f"blob is {len(body)} bytes, the header says {raw}")
    return body


def pack_trailer(aead: AESGCM, blobs: list[PackBlob]) -> bytes:
    """The sealed header and its length, to append after the blobs of a pack."""
    header = b"".join(HEADER_ENTRY.pack(b.type, b.flags, b.stored, b.raw, b.id) for b in blobs)
    sealed_header = seal(aead, AAD_PACK_HEADER, header)
    return sealed_header + _TRAILER.pack(len(sealed_header))


def build_pack(aead: AESGCM, blobs: list[tuple[PackBlob, bytes]]) -> bytes:
    """Assemble a whole pack from blobs and their sealed bytes (offsets must be consecutive)."""
    return b"".join([sealed for _, sealed in blobs] + [pack_trailer(aead, [b for b, _ in blobs])])


def parse_pack_header(aead: AESGCM, tail: bytes, pack_size: int, name: str) -> list[PackBlob]:
    """Decode the header from the end of a pack (``tail`` holds at least the header + trailer)."""
    if len(tail) < _TRAILER.size:
        raise CorruptObject(name, "pack is too short to hold a header")
    (hlen,) = _TRAILER.unpack_from(tail, len(tail) - _TRAILER.size)
    if hlen < SEAL_OVERHEAD or hlen + _TRAILER.size > min(len(tail), pack_size):
        raise CorruptObject(name, f"pack header length {hlen} does not fit the pack")
    start = len(tail) - _TRAILER.size - hlen
    try:
        header = open_sealed(aead, AAD_PACK_HEADER, tail[start : start + hlen])
    except SealError as exc:
        raise CorruptObject(name, "pack header fails authentication") from exc
    if len(header) % HEADER_ENTRY.size:
        raise CorruptObject(name, "pack header has a partial entry")
    entries: list[PackBlob] = []
    offset = 0
    for blob_type, flags, stored, raw, blob_id in HEADER_ENTRY.iter_unpack(header):
        if blob_type not in (BLOB_DATA, BLOB_TREE) or flags & ~FLAG_ZSTD:
            raise CorruptObject(
                name, f"pack header entry {len(entries)} has type {blob_type}, flags {flags:#x}"
            )
        if stored < SEAL_OVERHEAD:
            raise CorruptObject(name, f"pack header entry {len(entries)} is {stored} bytes")
        entries.append(PackBlob(blob_type, flags, offset, stored, raw, blob_id))
        offset += stored
    if offset + hlen + _TRAILER.size != pack_size:
        raise CorruptObject(name, "pack header does not account for the pack's bytes")
    return entries


def parse_pack(aead: AESGCM, data: bytes, name: str) -> list[PackBlob]:
    """Decode the header of a whole pack held in memory."""
    return parse_pack_header(aead, data, len(data), name)
