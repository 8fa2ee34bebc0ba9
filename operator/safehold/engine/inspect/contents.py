"""A file's bytes, blob by blob and checked, and a directory as a tar stream (``safehold cat``)."""

from __future__ import annotations

import os
import tarfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, TYPE_CHECKING

from safehold.engine.inspect.paths import Loader, iter_entries, split_path
from safehold.repo.errors import CorruptObject
from safehold.repo.pack import BLOB_DATA
from safehold.repo.tree import TreeNode
from safehold.repo.walk import blobs_of

if TYPE_CHECKING:
    from safehold.repo.repository import Repository

__all__ = ["read_file", "write_tar"]

#: Blobs read ahead of the one being written (an object store is latency-bound).
READ_AHEAD = 4


def read_file(repo: Repository, node: TreeNode, path: str = "") -> Iterator[bytes]:
    """The bytes of file ``node``, one data blob at a time, in order (a few read ahead),
    each authenticated and checked against its id; :class:`CorruptObject` when one cannot
    be read or the blobs do not add up to the node's size."""
    blobs = [bytes.fromhex(b) for b in blobs_of(node)]
    size = int(node.get("size", 0))
    done = 0
    if not blobs:
        if size:
            raise CorruptObject(path or str(node.get("name")), f"lists no data for {size} bytes")
        return
    with ThreadPoolExecutor(max_workers=READ_AHEAD) as pool:
        pending: deque[Future[bytes]] = deque()
        ahead = iter(blobs)
        try:
            for blob in ahead:
                pending.append(pool.submit(repo.read_blob, blob, BLOB_DATA))
                if len(pending) >= READ_AHEAD:
                    break
            while pending:
                data = pending.popleft().result()
                nxt = next(ahead, None)
                if nxt is not None:
                    pending.append(pool.submit(repo.read_blob, nxt, BLOB_DATA))
                done += len(data)
                if done > size:
                    break
                yield data
        finally:
            for future in pending:
                future.cancel()
    if done != size:
        raise CorruptObject(
            path or str(node.get("name")),
            f"its data blobs hold {done} bytes or more, the snapshot says {size}",
        )


class _Reader:
    """A file's blobs as the file object :meth:`tarfile.TarFile.addfile` reads."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.buffer = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.buffer) < n:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.buffer += chunk
        if n < 0:
            out, self.buffer = self.buffer, b""
        else:
            out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out


_TAR_TYPES = {
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "fifo": tarfile.FIFOTYPE,
    "chardev": tarfile.CHRTYPE,
    "dev": tarfile.BLKTYPE,
}


def _tar_info(name: str, node: TreeNode) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = int(node.get("mode", 0o644)) & 0o7777
    info.uid = int(node.get("uid", 0))
    info.gid = int(node.get("gid", 0))
    info.uname = str(node.get("user", ""))
    info.gname = str(node.get("group", ""))
    info.mtime = int(node.get("mtime_ns", 0)) / 1e9
    kind = str(node.get("type"))
    if kind == "file":
        info.type = tarfile.REGTYPE
        info.size = int(node.get("size", 0))
    else:
        info.type = _TAR_TYPES[kind]
    if kind == "symlink":
        info.linkname = str(node.get("target", ""))
    if kind in ("chardev", "dev"):
        rdev = int(node.get("rdev", 0))
        info.devmajor, info.devminor = os.major(rdev), os.minor(rdev)
    return info


def write_tar(
    repo: Repository,
    load: Loader,
    path: str,
    node: TreeNode,
    stream: IO[bytes],
    skipped: Callable[[str, str], None] | None = None,
) -> int:
    """Write the directory ``node`` (at snapshot path ``path``) and all it holds to
    ``stream`` as a tar stream (PAX: modes, owners, mtimes, symlinks, hard links within
    it), its entries named from the directory's own name (``/data/docs`` gives
    ``docs/...``; the root gives its backed-up paths). Sockets cannot be in a tar: each
    is passed to ``skipped`` (path, why). Returns the number of entries written."""
    base = split_path(path)
    top = base[-1] if base else ""
    strip = len("/".join(base[:-1])) + 2 if len(base) > 1 else 1  # "/parent/" or "/"

    def tar_name(snapshot_path: str) -> str:
        return snapshot_path[strip:] if base else snapshot_path.lstrip("/")

    count = 0
    linked: set[str] = set()  # first names of hard-linked files written so far
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        entries: Iterator[tuple[str, TreeNode]] = iter_entries(load, path, node, recursive=True)
        if top:
            entries = _chain_first((path, node), entries)
        for entry_path, entry in entries:
            kind = str(entry.get("type"))
            if kind not in _TAR_TYPES and kind != "file":
                if skipped is not None:
                    skipped(entry_path, f"a {kind} cannot be written to a tar stream")
                continue
            info = _tar_info(tar_name(entry_path), entry)
            count += 1
            if kind != "file":
                tar.addfile(info)
                continue
            first = entry.get("hardlink")
            if first is not None and "/" + first.lstrip("/") in linked:
                info.type = tarfile.LNKTYPE
                info.linkname = tar_name("/" + first.lstrip("/"))
                info.size = 0
                tar.addfile(info)
                continue
            if int(entry.get("links", 1)) > 1:
                linked.add(entry_path)
            tar.addfile(info, _Reader(read_file(repo, entry, entry_path)))
    return count


def _chain_first(
    first: tuple[str, TreeNode], rest: Iterator[tuple[str, TreeNode]]
) -> Iterator[tuple[str, TreeNode]]:
    yield first
    yield from rest
