"""New packs from blobs copied out of other packs: prune's repack, repair's salvage.

Each blob is copied sealed, and sealed again under its new pack's subkey in format
version 2 (section 5a; the same length). Blobs compressed with a dictionary go to packs
of that dictionary, which hold it as their first blob (section 7), as the backup's
:class:`~safehold.repo.writer.BlobWriter` packs them; other blobs go to packs without one.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from safehold.repo.crypto import blob_aad, seal_parts
from safehold.repo.dictionary import Dictionary
from safehold.repo.pack import BLOB_DICT, FLAG_DICT, PackBlob, pack_trailer, reseal_blob
from safehold.repo.repository import Repository

__all__ = ["Repacker"]

#: What a full pack is handed to: its entries and its whole bytes.
Save = Callable[[list[PackBlob], bytes], None]


class _NewPack:
    """A pack being filled: its subkey, bytes so far and entries."""

    def __init__(self, repo: Repository, dictionary: Dictionary | None) -> None:
        self.key = repo.aead.new_pack_key()
        self.buf = bytearray(self.key.prefix)
        self.entries: list[PackBlob] = []
        if dictionary is not None:
            aad = blob_aad(BLOB_DICT, dictionary.id)
            nonce, ciphertext = seal_parts(self.key.aead, aad, dictionary.data)
            self.append(BLOB_DICT, 0, len(dictionary.data), dictionary.id, nonce + ciphertext)

    def append(self, blob_type: int, flags: int, raw: int, blob_id: bytes, sealed: bytes) -> None:
        self.entries.append(PackBlob(blob_type, flags, len(self.buf), len(sealed), raw, blob_id))
        self.buf += sealed

    def bytes(self) -> bytes:
        return bytes(self.buf) + pack_trailer(self.key.aead, self.entries)


class Repacker:
    """Fills new packs of about the repository's pack size and hands each to ``save``."""

    def __init__(self, repo: Repository, save: Save) -> None:
        self.repo = repo
        self.save = save
        #: the pack being filled, per dictionary id (None: blobs without a dictionary)
        self._open: dict[bytes | None, _NewPack] = {}

    def add(
        self,
        source: AESGCM,
        blob: PackBlob,
        sealed: bytes | memoryview,
        dictionary: Dictionary | None = None,
    ) -> None:
        """Copy ``blob`` (``sealed`` under ``source``, its pack's key); a blob flagged
        ``FLAG_DICT`` needs ``dictionary``, its pack's. :class:`SealError` when it does
        not open."""
        if blob.type == BLOB_DICT:
            return  # a dictionary leads each new pack of its blobs
        if blob.flags & FLAG_DICT:
            if dictionary is None:
                raise ValueError("a blob compressed with a dictionary needs that dictionary")
            lane: bytes | None = dictionary.id
        else:
            lane, dictionary = None, None
        new = self._open.get(lane)
        if new is None:
            new = self._open[lane] = _NewPack(self.repo, dictionary)
        if new.key.prefix:  # another pack's subkey: open and seal again
            sealed = reseal_blob(source, new.key.aead, blob.type, blob.id, sealed)
        new.append(blob.type, blob.flags, blob.raw, blob.id, bytes(sealed))
        if len(new.buf) >= self.repo.config.pack_size:
            del self._open[lane]
            self.save(new.entries, new.bytes())

    def finish(self) -> None:
        """Hand over every pack begun."""
        for lane in list(self._open):
            new = self._open.pop(lane)
            self.save(new.entries, new.bytes())
