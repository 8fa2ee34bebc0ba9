"""The backup's compression dictionary (format section 6): the parent snapshot's, or one
trained on a sample of the small files about to be stored.

Small files compress poorly one by one; a dictionary trained on a few hundred of them
stores the bench's 100,000 small files in 9 % less room (docs/performance.md,
"Compression dictionaries"). A backup uses one dictionary for all its small data blobs:
its parent's when the parent has one (an incremental costs no training, and its packs
hold the same dictionary), else one trained here, before the workers fork, on a sample
taken breadth first (up to 32 files from each directory, under the backup's patterns: an
excluded file never reaches a dictionary). With too few small files (a database dump,
a volume of big files) there is no dictionary.
"""

from __future__ import annotations

import os
import stat
from collections import deque

from safehold.engine.backup.scope import ALL
from safehold.engine.backup.walk import listing, top_scope
from safehold.engine.patterns import PathFilter
from safehold.repo import CorruptObject, Repository, Snapshot
from safehold.repo.dictionary import DICT_MAX_BLOB, Dictionary, train

__all__ = ["choose_dictionary", "sample_files"]

#: The sample: at most this many files, bytes, files per directory, directories listed.
SAMPLE_FILES = 512
SAMPLE_BYTES = 512 * 1024
PER_DIRECTORY = 32
MAX_DIRECTORIES = 1024
#: The smallest file sampled (the encoder does not compress below 64 bytes).
MIN_FILE = 64


def choose_dictionary(
    repo: Repository, parent: Snapshot | None, roots: list[str], filt: PathFilter | None
) -> Dictionary | None:
    """The dictionary of a backup of ``roots`` (None: the repository has none, or too few
    small files were found to train one)."""
    if not repo.config.dictionaries:
        return None
    if parent is not None and parent.dictionary is not None:
        try:
            return repo.dictionary(bytes.fromhex(parent.dictionary))
        except CorruptObject:
            pass  # damaged or pruned away: train another
    return train(sample_files(roots, filt), repo.keys.blob_id)


def sample_files(roots: list[str], filt: PathFilter | None) -> list[bytes]:
    """The contents of up to ``SAMPLE_FILES`` regular files of ``MIN_FILE`` to
    ``DICT_MAX_BLOB`` bytes under ``roots`` that the backup's walk keeps, breadth first."""
    samples: list[bytes] = []
    total = 0
    queue: deque[tuple[str, str, int]] = deque()
    for root in roots:
        try:
            if stat.S_ISDIR(os.lstat(root).st_mode):
                queue.append((root, "", top_scope(filt)))
        except OSError:
            continue
    listed = 0
    while queue and listed < MAX_DIRECTORIES and len(samples) < SAMPLE_FILES:
        path, prefix, scope = queue.popleft()
        listed += 1
        try:
            entries, scopes = listing(path, filt, prefix, scope)
        except OSError:
            continue
        taken = 0
        for k, entry in enumerate(entries):
            try:
                if entry.is_dir(follow_symlinks=False):
                    child = scopes[k] if scopes is not None else ALL
                    queue.append((entry.path, f"{prefix}{entry.name}/", child))
                elif (
                    taken < PER_DIRECTORY
                    and entry.is_file(follow_symlinks=False)
                    and MIN_FILE <= entry.stat(follow_symlinks=False).st_size <= DICT_MAX_BLOB
                ):
                    data = _read(entry.path)
                    if len(data) >= MIN_FILE:
                        samples.append(data)
                        total += len(data)
                        taken += 1
            except OSError:
                continue
            if len(samples) >= SAMPLE_FILES or total >= SAMPLE_BYTES:
                return samples
    return samples


def _read(path: str) -> bytes:
    """The first ``DICT_MAX_BLOB`` bytes of a file, its access time left as it was where
    the process may (O_NOATIME needs the file's owner or root), as the walk reads."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_NOATIME", 0))
    except PermissionError:
        fd = os.open(path, flags)
    try:
        return os.read(fd, DICT_MAX_BLOB)
    finally:
        os.close(fd)
