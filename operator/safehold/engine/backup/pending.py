"""A file's content while its chunk ids are still being computed.

A chunk goes to the pool (:mod:`.chunks`) in a :class:`Batch`; until the batch is done its
id is only a place in that batch. A node's ``content`` is a list of hex ids (the format's)
or a :class:`PendingContent`, never a mix: the tree thread (:mod:`.trees`) turns the
latter into the former when it stores the directory.
"""

from __future__ import annotations

from concurrent.futures import Future

__all__ = ["BATCH_BYTES", "BATCH_COUNT", "Batch", "ChunkRef", "PendingContent"]

BATCH_BYTES = 2 * 1024 * 1024
BATCH_COUNT = 256


class Batch:
    """Chunks submitted together: one future for many small chunks keeps overhead low."""

    __slots__ = ("future", "nbytes", "views")

    def __init__(self) -> None:
        self.views: list[memoryview | bytes] = []
        self.nbytes = 0
        self.future: Future[list[bytes]] | None = None


#: A chunk of a file: its id (hex) when known, else its place in a batch still in the pool.
ChunkRef = str | tuple[Batch, int]


class PendingContent:
    """A file's ``content`` while its chunk ids are being computed.

    Held in the node until the tree thread asks for :meth:`ids`: either the file's chunks
    (``refs``, read by the walk) or the future of a big file's chunks (``future``, read by
    a big-file thread; its result is None when the file could not be read).
    """

    __slots__ = ("future", "refs")

    def __init__(
        self,
        refs: list[ChunkRef] | None = None,
        future: Future[list[ChunkRef] | None] | None = None,
    ) -> None:
        self.refs = refs
        self.future = future

    def ids(self) -> list[str] | None:
        """The chunk ids, in order (waits for the pool); None: the file was left out."""
        refs = self.future.result() if self.future is not None else self.refs
        if refs is None:
            return None
        return [ref if isinstance(ref, str) else _resolve(ref) for ref in refs]


def _resolve(ref: tuple[Batch, int]) -> str:
    """The id of a chunk that went to the pool (waits for its batch)."""
    batch, slot = ref
    assert batch.future is not None
    return batch.future.result()[slot].hex()
