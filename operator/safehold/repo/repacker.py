"""New packs from blobs copied out of other packs: prune's repack, repair's salvage.

Each blob is copied sealed, and sealed again under its new pack's subkey in format
version 2 (section 5a; the same length). Blobs compressed with a dictionary go to packs
of that dictionary, which hold it as their first blob (section 7), as the backup's
:class:`~safehold.repo.writer.BlobWriter` packs them; other blobs go to packs without one.
A new pack is assembled in a staging file (:mod:`safehold.repo.staging`) and handed over
as a :class:`~safehold.storage.FileBody`, as the backup's are: a repack holds no pack in
memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from safehold.repo.crypto import blob_aad, seal_parts
from safehold.repo.dictionary import Dictionary
from safehold.repo.pack import BLOB_DICT, FLAG_DICT, PackBlob, pack_trailer, reseal_blob
from safehold.repo.repository import Repository
from safehold.repo.staging import staging_file
from safehold.storage import FileBody

__all__ = ["Repacker"]

#: What a full pack is handed to: its entries and its bytes, in its staging file (valid
#: until ``save`` returns).
Save = Callable[[list[PackBlob], FileBody], None]


class _NewPack:
    """A pack being filled: its subkey, staging file, size so far and entries."""

    def __init__(self, repo: Repository, dictionary: Dictionary | None) -> None:
        self.key = repo.aead.new_pack_key()
        self.file: BinaryIO = staging_file()
        self.file.write(self.key.prefix)
        self.size = len(self.key.prefix)
        self.entries: list[PackBlob] = []
        if dictionary is not None:
            aad = blob_aad(BLOB_DICT, dictionary.id)
            nonce, ciphertext = seal_parts(self.key.aead, aad, dictionary.data)
            self.append(BLOB_DICT, 0, len(dictionary.data), dictionary.id, nonce + ciphertext)

    def append(
        self, blob_type: int, flags: int, raw: int, blob_id: bytes, sealed: bytes | memoryview
    ) -> None:
        self.entries.append(PackBlob(blob_type, flags, self.size, len(sealed), raw, blob_id))
        self.file.write(sealed)
        self.size += len(sealed)

    def hand_over(self, save: Save) -> None:
        """End the pack with its trailer, give it to ``save``, and drop the staging file."""
        with self.file:
            self.file.write(pack_trailer(self.key.aead, self.entries))
            self.file.flush()
            save(self.entries, FileBody(self.file))


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
        new.append(blob.type, blob.flags, blob.raw, blob.id, sealed)
        if new.size >= self.repo.config.pack_size:
            del self._open[lane]
            new.hand_over(self.save)

    def finish(self) -> None:
        """Hand over every pack begun."""
        for lane in list(self._open):
            self._open.pop(lane).hand_over(self.save)
