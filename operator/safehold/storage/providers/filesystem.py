"""The filesystem provider: objects are files under a directory.

Atomic puts write a temporary file in ``.tmp/`` under the root, fsync it, rename
it into place and fsync the directory. ``create`` links the temporary file to the
final name, which fails atomically when the name exists (POSIX ``link``), so a
reader never sees a partial object and exactly one concurrent creator wins.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from safehold.storage.base import ObjectInfo, Storage
from safehold.storage.body import Body, FileBody
from safehold.storage.errors import (
    AlreadyExists,
    InvalidLocation,
    NotFound,
    PermanentError,
    PermissionDenied,
    StorageError,
    TransientError,
)
from safehold.storage.registry import Location

__all__ = ["FilesystemStorage", "open"]

_TMP = ".tmp"


def open(location: Location) -> FilesystemStorage:
    return FilesystemStorage(Path(location.bucket))


def _mtime(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime, UTC)


class FilesystemStorage(Storage):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = f"file://{root}"

    # -- helpers
    def _path(self, name: str) -> Path:
        parts = name.split("/")
        if not name or any(p in ("", ".", "..") for p in parts) or parts[0] == _TMP:
            raise InvalidLocation(self.location, "invalid object name", name=name)
        return self.root.joinpath(*parts)

    def _error(self, exc: OSError, name: str | None) -> StorageError:
        if exc.errno == errno.ENOENT:
            return NotFound(self.location, "no such object", name=name)
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return PermissionDenied(
                self.location,
                f"permission denied ({exc.strerror}): check the directory's owner and mode",
                name=name,
            )
        if exc.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
            return PermanentError(
                self.location,
                "the name clashes with another object: on a filesystem a name cannot be both "
                "an object and the directory of other objects ('a' and 'a/b')",
                name=name,
            )
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return PermanentError(self.location, f"no space left ({exc.strerror})", name=name)
        if exc.errno in (errno.EIO, errno.EAGAIN, errno.EINTR, errno.ESTALE):
            return TransientError(self.location, exc.strerror or str(exc), name=name)
        return PermanentError(self.location, exc.strerror or str(exc), name=name)

    def _write_temp(self, data: Body) -> Path:
        tmpdir = self.root / _TMP
        tmpdir.mkdir(parents=True, exist_ok=True)
        tmp = tmpdir / uuid.uuid4().hex
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if isinstance(data, FileBody):
                _copy_body(data, fd)
            else:
                _write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        return tmp

    @staticmethod
    def _fsync_dir(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- the interface
    def put(self, name: str, data: Body) -> None:
        path = self._path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._write_temp(data)
            os.replace(tmp, path)
            self._fsync_dir(path.parent)
        except OSError as exc:
            raise self._error(exc, name) from exc

    def create(self, name: str, data: Body) -> None:
        path = self._path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._write_temp(data)
            try:
                os.link(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            self._fsync_dir(path.parent)
        except FileExistsError as exc:
            raise AlreadyExists(self.location, "an object of this name exists", name=name) from exc
        except OSError as exc:
            raise self._error(exc, name) from exc

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(name)
        try:
            with path.open("rb") as f:
                if offset:
                    f.seek(offset)
                return f.read() if length is None else f.read(length)
        except (IsADirectoryError, NotADirectoryError) as exc:
            raise NotFound(self.location, "no such object", name=name) from exc
        except OSError as exc:
            raise self._error(exc, name) from exc

    def stat(self, name: str) -> ObjectInfo:
        path = self._path(name)
        try:
            st = path.stat()
        except NotADirectoryError as exc:
            raise NotFound(self.location, "no such object", name=name) from exc
        except OSError as exc:
            raise self._error(exc, name) from exc
        if not path.is_file():
            raise NotFound(self.location, "no such object", name=name)
        return ObjectInfo(name, st.st_size, _mtime(st))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        head, _, _ = prefix.rpartition("/")
        start = self.root.joinpath(*head.split("/")) if head else self.root
        base = f"{head}/" if head else ""
        try:
            yield from self._walk(start, base, prefix)
        except OSError as exc:
            raise self._error(exc, None) from exc

    def _walk(self, directory: Path, base: str, prefix: str) -> Iterator[ObjectInfo]:
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            return
        except NotADirectoryError:
            return
        # Sort as full names sort: a directory "a" holds names "a/...", so it sorts as "a/".
        keyed = sorted(
            ((e.name + "/" if e.is_dir(follow_symlinks=False) else e.name), e) for e in entries
        )
        for key, entry in keyed:
            full = base + key
            if not base and key == _TMP + "/":
                continue
            if key.endswith("/"):
                # Descend only when the prefix and the directory can still meet.
                if full.startswith(prefix) or prefix.startswith(full):
                    yield from self._walk(Path(entry.path), full, prefix)
            elif full.startswith(prefix):
                st = entry.stat(follow_symlinks=False)
                yield ObjectInfo(full, st.st_size, _mtime(st))

    def check_reachable(self) -> None:
        """A missing directory lists as empty; here it is :class:`NotFound`."""
        if not self.root.is_dir():
            raise NotFound(
                self.location,
                "the directory does not exist: create it, or check the path in the URL",
            )
        try:
            with os.scandir(self.root):
                pass
        except OSError as exc:
            raise self._error(exc, None) from exc

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise self._error(exc, name) from exc


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _copy_body(body: FileBody, fd: int) -> None:
    """Copy a file body into ``fd`` in the kernel (``copy_file_range``: no pass through
    this process's memory; a reflink where the file system shares blocks), or in pieces
    where the kernel cannot (an in-memory body, another file system on an old kernel)."""
    source = body.fileno()
    copied = 0
    if source is not None and hasattr(os, "copy_file_range"):  # Linux
        try:
            while copied < body.size:
                n = os.copy_file_range(source, fd, body.size - copied, copied)
                if n == 0:
                    raise OSError(
                        errno.EIO, f"the staged file ended {body.size - copied} bytes early"
                    )
                copied += n
            return
        except OSError as exc:
            if copied or exc.errno not in _NO_KERNEL_COPY:
                raise
    for piece in body.pieces():
        _write_all(fd, piece)


#: What ``copy_file_range`` answers where it cannot copy between these two files.
_NO_KERNEL_COPY = frozenset(
    {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF, errno.EPERM}
)
