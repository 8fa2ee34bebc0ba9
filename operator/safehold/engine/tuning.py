"""Process tuning for operations that stream gigabytes through megabyte-sized buffers.

* :func:`rare_gc`: a backup or restore of tens of thousands of files allocates node
  dicts, tuples and futures by the hundred thousand; with CPython's default thresholds
  the cyclic collector runs thousands of times, each pass walking every live object.
  The engine holds no reference cycles worth collecting early, so the first threshold
  is raised for the duration of an operation.
* :func:`tune_malloc`: chunks (up to 2 MiB), reads of up to 4 MiB and packs (16 MiB) are
  short-lived, and each chunk passes through several buffers (read, compressed or
  decrypted, sealed or decompressed). With glibc's defaults, buffers above the dynamic
  mmap threshold are mapped, faulted in and zeroed anew each time, and memory freed at
  the top of the heap is handed back at once (128 KiB trim threshold) only to be faulted
  in again: a quarter of a million page faults per GB backed up or restored. A fixed
  32 MiB mmap threshold and a 64 MiB trim threshold keep those buffers in the heap for
  reuse (35k faults for the same backup, 0.5 s less system time), and two arenas bound
  the fragmentation of many threads. The price is up to ~25 MB more peak RSS.
* :func:`release_free_memory`: what that trim threshold keeps is a cost where a process
  forks. A restore split into processes forks after the index load and the trees' read-ahead
  have freed tens of MB; kept in the heap, those pages are shared with every child, and the
  first allocation that reuses them in either process copies them (100,000 small files from
  S3, two processes: 29 MB of the 310 MB summed PSS). Given back before the fork, they are
  not copied. A backup's workers are forked the same way (the unchanged re-run of the
  100,000 files: 114-115 -> 100-104 MB locally, 173-174 -> 158-162 MB from S3).
* :data:`PACK_READS_MAPPED`: a restore from an object store reads whole packs (16 MiB and
  more), each once. Kept in the heap, the pages of a freed pack stay resident (the heap's
  free space is fragmented between threads' buffers), so a restore held the high-water mark
  of its reads to the end; mapped, a pack's pages go back when it is freed. Its pages are
  faulted in as it is read, as they were in the heap, which grew rather than reuse its
  fragmented space (78,000 page faults against 77,000, the same CPU time).
"""

from __future__ import annotations

import ctypes
import gc
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["PACK_READS_MAPPED", "available_cpus", "rare_gc", "release_free_memory", "tune_malloc"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
#: An mmap threshold above every chunk (2 MiB at most) and its buffers, below a pack.
PACK_READS_MAPPED = 4 * 1024 * 1024


def tune_malloc(
    mmap_threshold: int = 32 * 1024 * 1024,
    trim_threshold: int = 64 * 1024 * 1024,
    arenas: int = 2,
) -> None:
    """Set glibc's malloc parameters (process-wide); harmless where unavailable.
    ``trim_threshold``: free memory kept at the top of the heap instead of being returned
    to the system."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
        libc.mallopt(_M_ARENA_MAX, arenas)
        libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    except (OSError, AttributeError):
        return


def release_free_memory() -> None:
    """Give the heap's free pages back to the system (glibc's ``malloc_trim``); harmless
    where unavailable."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
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


def available_cpus(cgroup: str = "/sys/fs/cgroup") -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup CPU quota.

    In a pod with ``resources.limits.cpu: 1`` on a 32-core node the affinity still lists
    32 CPUs; 32 threads would then only take turns at the GIL and the quota. cgroup v2
    (``cpu.max``: ``quota period``) and v1 (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``)
    quotas are honoured, rounded up."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup)
    return max(1, min(cpus, math.ceil(quota))) if quota else max(1, cpus)


def _cgroup_quota(root: str) -> float | None:
    try:
        with open(os.path.join(root, "cpu.max")) as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(root, "cpu", "cpu.cfs_quota_us")) as f:
            quota_us = int(f.read())
        with open(os.path.join(root, "cpu", "cpu.cfs_period_us")) as f:
            period_us = int(f.read())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None
