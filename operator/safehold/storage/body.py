"""What ``put`` and ``create`` store: bytes in memory, or a file's bytes (:class:`FileBody`).

A backup stages each pack in a temporary file (``repo/writer.py``). Read back whole into
memory for the upload, a pack of 16 MiB cost that much memory per upload in flight, for no
use: the providers that can send from a file do (the filesystem copies it in the kernel, S3
sends it in pieces), as restic's backends take a reader they can rewind rather than a
buffer. GCS and Azure read it whole, as their clients would for a single request anyway.

A :class:`FileBody` is read from its start every time (by offset, or through ``stream()``,
which rewinds), so a retry sends it whole again, and a wrapper may read it too (to compare
it) without disturbing a provider.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import BinaryIO, TypeAlias

__all__ = ["Body", "FileBody", "body_bytes", "body_range", "body_size"]

#: Pieces in which a file body is read where it cannot be copied in the kernel.
PIECE = 1024 * 1024


class FileBody:
    """All the bytes of ``file`` (a regular file, or a ``BytesIO`` when no temporary file
    could be made), as they are when the body is made: the caller flushes what it wrote
    first, keeps the file open and unchanged until the write returns, then closes it."""

    __slots__ = ("file", "size")

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.size = file.seek(0, io.SEEK_END)

    def __repr__(self) -> str:
        return f"FileBody({self.size} bytes)"

    def fileno(self) -> int | None:
        """The file's descriptor; None for an in-memory file."""
        try:
            return self.file.fileno()
        except (io.UnsupportedOperation, AttributeError):
            return None

    def read_range(self, offset: int, length: int) -> bytes:
        """At most ``length`` bytes from ``offset`` (fewer only past ``size``)."""
        length = max(min(length, self.size - offset), 0)
        fd = self.fileno()
        if fd is None:
            self.file.seek(offset)
            data = self.file.read(length)
        else:
            data = os.pread(fd, length, offset)
            while len(data) < length:  # a single read stops at 2 GiB
                more = os.pread(fd, length - len(data), offset + len(data))
                if not more:
                    break
                data += more
        if len(data) < length:
            raise OSError(f"the staged file ends before its {self.size} bytes")
        return data

    def pieces(self, piece: int = PIECE) -> Iterator[bytes]:
        """The bytes from the start, in pieces of at most ``piece`` bytes."""
        for offset in range(0, self.size, piece):
            yield self.read_range(offset, piece)

    def read(self) -> bytes:
        """The whole body in memory (for a client that takes only bytes, or a comparison)."""
        return self.read_range(0, self.size)

    def stream(self) -> BinaryIO:
        """The file, rewound to its start, for a client that reads a file object itself."""
        self.file.seek(0)
        return self.file


#: What ``put`` and ``create`` store.
Body: TypeAlias = bytes | FileBody


def body_size(data: Body) -> int:
    return data.size if isinstance(data, FileBody) else len(data)


def body_range(data: Body, offset: int, length: int) -> bytes:
    """At most ``length`` bytes of ``data`` from ``offset``."""
    if isinstance(data, FileBody):
        return data.read_range(offset, length)
    return data[offset : offset + length]


def body_bytes(data: Body) -> bytes:
    """``data`` in memory: the bytes themselves, or the file's read whole."""
    return data.read() if isinstance(data, FileBody) else data
