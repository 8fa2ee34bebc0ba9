"""Process tuning for operations that stream gigabytes through megabyte-sized buffers.

* :func:`rare_gc`: a backup or restore of tens of thousands of files allocates node
  dicts, tuples and futures by the hundred thousand; with CPython's default thresholds
  the cyclic collector runs thousands of times, each pass walking every live object.
  The engine holds no reference cycles worth collecting early, so the first threshold
  is raised for the duration of an operation.
* :func:`tune_malloc`: chunks (up to 4 MiB) and packs (16 MiB) are short-lived. With
  glibc's defaults they land in per-thread arenas whose freed memory is kept, so the
  peak RSS grows far beyond the working set. A fixed mmap threshold (which also turns
  off glibc's dynamic threshold) hands buffers above it back to the system at once,
  and two arenas bound the fragmentation; buffers below it are reused from the heap,
  which spares the page faults of mapping fresh memory for every chunk. A restore
  holds few buffers at once (a bounded number of reads in flight) but allocates three
  per chunk (the read, the decrypted and the decompressed bytes): it raises both
  thresholds so those are reused instead of mapped, faulted in and zeroed again
  (a quarter of a million page faults for 1 GB restored, against ten thousand).
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["rare_gc", "tune_malloc"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_malloc(
    mmap_threshold: int = 2 * 1024 * 1024, trim_threshold: int = 0, arenas: int = 2
) -> None:
    """Set glibc's malloc parameters (process-wide: the last call wins); harmless where
    unavailable. ``trim_threshold``: free memory kept at the top of the heap instead of
    being returned to the system (0: glibc's default)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
        libc.mallopt(_M_ARENA_MAX, arenas)
        libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold or 128 * 1024)
    except (OSError, AttributeError):
        return


@contextmanager
def rare_gc(threshold: int = 100_000) -> Iterator[None]:
    old = gc.get_threshold()
    gc.set_threshold(max(threshold, old[0]), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)
