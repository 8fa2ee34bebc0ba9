"""Where a pack is assembled before it is stored: a temporary file in ``SAFEHOLD_TMPDIR`` (or
the system's temporary directory), which the page cache holds rather than the process, and
from which the storage sends it (``storage.FileBody``); in memory when no file can be made."""

from __future__ import annotations

import io
import os
import tempfile
from typing import BinaryIO

__all__ = ["staging_file"]


def staging_file() -> BinaryIO:
    """A new, empty file for one pack, deleted when it is closed."""
    try:
        return tempfile.TemporaryFile(dir=os.environ.get("SAFEHOLD_TMPDIR") or None)
    except OSError:
        return io.BytesIO()
