"""Checks that a restore reproduced the source exactly: same files, same bytes, nothing extra.

A fast restore that loses or corrupts data must never count as a result, so every restore in the
benchmark is compared against the data set's manifest (BLAKE3 of every file) before its timing is
accepted. Tools lay out restored files differently (restic and borg recreate the absolute source
path under the target), so the restored copy of the source is located first.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3

from dataset import VersionManifest

__all__ = ["RestoreMismatch", "locate", "verify"]

_SHOWN = 10  # problems listed in the error message; the count says how many there are


class RestoreMismatch(AssertionError):
    """The restored tree differs from the source; the message lists the first differences."""


def locate(target: Path, source: Path, expected: VersionManifest) -> Path:
    """Where under ``target`` the restored copy of ``source`` is."""
    probe = next(iter(expected.files))
    candidates = [target / source.relative_to(source.anchor), target / source.name, target]
    for candidate in candidates:
        if (candidate / probe).is_file():
            return candidate
    raise RestoreMismatch(
        f"the restore into {target} holds no copy of {source}: looked for {probe} under "
        + ", ".join(str(c) for c in candidates)
    )


def _digest(path: Path) -> str:
    hasher = blake3.blake3()
    if path.stat().st_size > 1 << 20:
        hasher.update_mmap(path)
    else:
        hasher.update(path.read_bytes())
    return hasher.hexdigest()


def verify(root: Path, expected: VersionManifest) -> None:
    """Raise RestoreMismatch unless ``root`` holds exactly the files of ``expected``."""
    found: set[str] = set()
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            found.add(Path(dirpath, name).relative_to(root).as_posix())
    problems = [f"missing: {p}" for p in sorted(set(expected.files) - found)]
    problems += [f"unexpected: {p}" for p in sorted(found - set(expected.files))]
    common = sorted(found & set(expected.files))
    with ThreadPoolExecutor(max_workers=4) as pool:  # BLAKE3 releases the GIL
        digests = pool.map(lambda p: _digest(root / p), common)
        for path, digest in zip(common, digests, strict=True):
            want = expected.files[path]
            size = (root / path).stat().st_size
            if size != want.size:
                problems.append(f"size differs: {path} has {size} bytes, expected {want.size}")
            elif digest != want.blake3:
                problems.append(f"content differs: {path}")
    if problems:
        raise RestoreMismatch(
            f"restore in {root} differs from the source in {len(problems)} ways:\n  "
            + "\n  ".join(problems[:_SHOWN])
            + ("\n  ..." if len(problems) > _SHOWN else "")
        )
