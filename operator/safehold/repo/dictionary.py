"""Compression dictionaries: zstd dictionaries stored as blobs (format sections 6, 7).

A file of a few hundred bytes compresses poorly on its own: zstd has nothing to match
it against. A dictionary, trained on samples of the files a backup is about to store,
gives it that history; the bench's 100,000 small files take 9 % less room (their blobs 11 %)
(docs/performance.md, "Compression dictionaries"). Each dictionary is a blob of type
``BLOB_DICT`` whose id is the keyed hash of its bytes, like any blob; a pack that holds a
blob compressed with a dictionary holds that dictionary too, as its first blob, so that
every pack still describes itself and no blob depends on an object outside its pack.
Readers take any copy of the dictionary (the same id is the same bytes).

Only repositories whose config names the compression ``zstd-dict`` hold dictionaries;
older Safehold refuses them by that name.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import zstandard

__all__ = [
    "DICT_MAX_BLOB",
    "DICT_SIZE",
    "Dictionary",
    "train",
]

#: Bytes of a trained dictionary. 16 KiB trained on 500 files stored the small files in
#: 59.8 MB; 64 KiB trained on 2,000 in 59.3 MB (docs/performance.md).
DICT_SIZE = 16 * 1024
#: The largest blob compressed with the dictionary: beyond this a blob has history enough
#: of its own, and compressing with the dictionary costs more CPU than it saves bytes (the
#: mixed set's small files: 64 KiB saved 1.2 MB more for 12 % more compression time).
DICT_MAX_BLOB = 16 * 1024
#: The fewest samples worth training on (zstd's trainer fails or overfits below).
MIN_SAMPLES = 64
#: The largest dictionary a reader accepts (a hostile blob cannot make it allocate more).
MAX_DICT_SIZE = 1024 * 1024


class Dictionary:
    """One dictionary: its blob id, bytes, and zstd contexts made once per thread."""

    __slots__ = ("_local", "_zstd", "data", "id")

    def __init__(self, blob_id: bytes, data: bytes) -> None:
        self.id = blob_id
        self.data = data
        self._zstd = zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_FULLDICT)
        self._local = threading.local()

    def compressor(self, level: int) -> zstandard.ZstdCompressor:
        """A compressor at ``level`` with this dictionary (one per thread and level)."""
        made: dict[int, zstandard.ZstdCompressor] | None = getattr(self._local, "c", None)
        if made is None:
            made = self._local.c = {}
        cctx = made.get(level)
        if cctx is None:
            # no dictionary id in the frame: the pack names its dictionary (4 bytes a blob)
            cctx = made[level] = zstandard.ZstdCompressor(
                level=level, dict_data=self._zstd, write_content_size=True, write_dict_id=False
            )
        return cctx

    def decompressor(self) -> zstandard.ZstdDecompressor:
        """A decompressor with this dictionary (one per thread)."""
        dctx: zstandard.ZstdDecompressor | None = getattr(self._local, "d", None)
        if dctx is None:
            dctx = self._local.d = zstandard.ZstdDecompressor(dict_data=self._zstd)
        return dctx

    def __getstate__(self) -> tuple[bytes, bytes]:
        return self.id, self.data

    def __setstate__(self, state: tuple[bytes, bytes]) -> None:
        self.__init__(*state)  # type: ignore[misc]


def train(
    samples: Sequence[bytes | bytearray | memoryview], blob_id: Callable[[bytes], bytes]
) -> Dictionary | None:
    """A dictionary trained on ``samples`` (``blob_id``: the repository's keyed id of
    its bytes); None when there are too few samples, or zstd's trainer finds nothing."""
    if len(samples) < MIN_SAMPLES:
        return None
    try:
        data = zstandard.train_dictionary(DICT_SIZE, list(samples), level=1).as_bytes()
    except zstandard.ZstdError:
        return None
    return Dictionary(blob_id(data), data)
