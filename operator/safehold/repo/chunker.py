"""Content-defined chunking of a byte stream with FastCDC, read in large blocks.

The chunk boundaries must not depend on how the file was read (format section 6):
a chunk is accepted only when more data could not have moved its cut (the stream
ended, ``max_size`` bytes follow its start, or FastCDC found a natural cut with at
least ``avg_size`` bytes ahead); otherwise the tail is carried into the next block.
So only about one chunk per block is carried over and cut twice.
Cutting releases the GIL, so another thread can hash and compress meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from pyfastcdc import FastCDC

from safehold.repo.config import ChunkerParams

__all__ = ["Chunker"]


class Chunker:
    """Splits streams into chunks; one instance per thread (FastCDC is not thread-safe)."""

    def __init__(self, params: ChunkerParams, seed: int, block_size: int = 4 * 1024 * 1024):
        self.params = params
        self.max_size = params.max_size
        self.avg_size = params.avg_size
        self.block_size = max(block_size, params.max_size)
        self._cdc = FastCDC(
            params.avg_size,
            min_size=params.min_size,
            max_size=params.max_size,
            normalized_chunking=params.normalization,  # type: ignore[arg-type]
            seed=seed,
        )

    def chunks_of(self, readinto: Callable[[memoryview], int]) -> Iterator[memoryview]:
        """Yield the chunks of the stream that ``readinto(buffer)`` fills.

        One buffer is reused: a yielded view is valid only until the next chunk is
        asked for, so the caller copies what it keeps. That keeps memory at one block.
        """
        buf = bytearray(self.block_size + self.max_size)
        view = memoryview(buf)
        filled = 0
        eof = False
        try:
            while not eof:
                while filled < len(buf):
                    n = readinto(view[filled:])
                    if not n:
                        eof = True
                        break
                    filled += n
                if filled == 0:
                    return
                data = view[:filled]
                start = filled
                for chunk in self._cdc.cut_buf(data):
                    end = chunk.offset + chunk.length
                    if not eof:
                        # Would more data change this cut? Not when the scan could reach
                        # max_size, nor when it found a natural cut before the end of the
                        # buffer with at least avg_size ahead (FastCDC only narrows its
                        # masks' switch point when less than avg_size remains).
                        room = filled - chunk.offset
                        if room < self.max_size and (room < self.avg_size or end >= filled):
                            start = chunk.offset
                            break
                    yield data[chunk.offset : end]
                data.release()
                # Carry the unfinished tail to the front of the buffer.
                rest = filled - start
                if rest:
                    buf[:rest] = buf[start:filled]
                filled = rest
        finally:
            view.release()

    def chunks_of_bytes(self, data: bytes) -> Iterator[memoryview]:
        """The chunks of an in-memory buffer (for tests and small inputs)."""
        view = memoryview(data)
        for chunk in self._cdc.cut_buf(view):
            yield view[chunk.offset : chunk.offset + chunk.length]
