"""A compact set of blob ids, for prune's "which blobs does any snapshot use".

A Python ``set`` of 32-byte ``bytes`` costs about 100 bytes per id; with millions of
chunks that alone would be hundreds of megabytes. This set keeps, per first byte of the
id (256 buckets), a sorted ``array('Q')`` of the next 8 bytes: 8 bytes per id. New ids
go to a small per-bucket buffer that is merged (sorted, deduplicated) when it fills, so
memory stays about 8 bytes per distinct id plus one bucket's merge at a time.

Two different ids that share their first 9 bytes look equal here. That can only make
an unused blob look used (prune then keeps it: wasted space, never lost data), and
with keyed 256-bit ids the chance is about n²/2⁷³ (for 10⁸ blobs: one in 10⁶).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left

__all__ = ["CompactIdSet"]

_FLUSH = 1 << 15


class CompactIdSet:
    """Membership of 32-byte ids, about 8 bytes of memory per distinct id."""

    def __init__(self) -> None:
        self._sorted: list[array[int]] = [array("Q") for _ in range(256)]
        self._pending: list[array[int]] = [array("Q") for _ in range(256)]

    @staticmethod
    def _key(blob_id: bytes) -> tuple[int, int]:
        return blob_id[0], int.from_bytes(blob_id[1:9], "little")

    def add(self, blob_id: bytes) -> None:
        bucket, key = self._key(blob_id)
        pending = self._pending[bucket]
        pending.append(key)
        if len(pending) >= _FLUSH:
            self._merge(bucket)

    def _merge(self, bucket: int) -> None:
        pending = self._pending[bucket]
        if pending:
            merged = sorted(set(self._sorted[bucket]).union(pending))
            self._sorted[bucket] = array("Q", merged)
            self._pending[bucket] = array("Q")

    def __contains__(self, blob_id: object) -> bool:
        if not isinstance(blob_id, bytes) or len(blob_id) < 9:
            return False
        bucket, key = self._key(blob_id)
        if self._pending[bucket]:
            self._merge(bucket)
        values = self._sorted[bucket]
        i = bisect_left(values, key)
        return i < len(values) and values[i] == key

    def __len__(self) -> int:
        for bucket in range(256):
            self._merge(bucket)
        return sum(len(values) for values in self._sorted)
