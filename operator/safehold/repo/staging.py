"""Where a pack is assembled before it is stored: a temporary file in ``SAFEHOLD_TMPDIR`` (or
the system's temporary directory), which the page cache holds rather than the process, and
from which the storage sends it (``storage.FileBody``); in memory when no file can be made,
which the command says once (the process then holds every pack it assembles)."""

from __future__ import annotations

import io
import logging
import os
import tempfile
from typing import BinaryIO

__all__ = ["staging_file"]

log = logging.getLogger(__name__)
_said = False  # the warning, once per process


def staging_file() -> BinaryIO:
    """A new, empty file for one pack, deleted when it is closed."""
    directory = os.environ.get("SAFEHOLD_TMPDIR") or None
    try:
        return tempfile.TemporaryFile(dir=directory)
    except OSError as exc:
        global _said
        if not _said:
            _said = True
            log.warning(
                "packs are assembled in memory: no temporary file can be made in %s (%s); "
                "point SAFEHOLD_TMPDIR at a writable directory",
                directory or tempfile.gettempdir(),
                exc.strerror or exc,
            )
        return io.BytesIO()
