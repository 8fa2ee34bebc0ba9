"""Readers the chunker pulls from: a stream read in full blocks, a file read ahead."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import BinaryIO

__all__ = ["READ_AHEAD_WINDOW", "full_reader", "reading_ahead"]

READ_AHEAD_WINDOW = 8 * 1024 * 1024  # big files: the kernel fetches this much past each read


def full_reader(stream: BinaryIO) -> Callable[[memoryview], int]:
    """A readinto that fills the buffer unless the stream ends (pipes return short reads)."""
    readinto = getattr(stream, "readinto", None)

    def fill(buffer: memoryview) -> int:
        done = 0
        while done < len(buffer):
            if readinto is not None:
                n = readinto(buffer[done:])
            else:
                data = stream.read(len(buffer) - done)
                n = len(data)
                buffer[done : done + n] = data
            if not n:
                break
            done += n
        return done

    return fill


def reading_ahead(
    fd: int, readinto: Callable[[memoryview], int], ahead: int = READ_AHEAD_WINDOW
) -> Callable[[memoryview], int]:
    """A readinto that asks the kernel to fetch the next ``ahead`` bytes in the background.

    The chunker reads a block, then cuts it (without the GIL) while the workers hash the
    previous block; without a hint the disk idles during the cut, because the kernel's
    own read-ahead is far smaller than a block. ``POSIX_FADV_WILLNEED`` on the range after
    each read keeps the disk busy meanwhile: reading overlaps chunking and hashing.
    """
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return readinto
    try:
        advise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    except OSError:
        return readinto
    pos = 0
    hinted = 0

    def read(buffer: memoryview) -> int:
        nonlocal pos, hinted
        n = readinto(buffer)
        pos += n
        if n and pos + ahead > hinted:
            start = max(pos, hinted)
            with contextlib.suppress(OSError):
                advise(fd, start, pos + ahead - start, os.POSIX_FADV_WILLNEED)
            hinted = pos + ahead
        return n

    return read
