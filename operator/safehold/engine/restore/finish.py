"""The end of a restore, in part 0: what needs every file written. The other parts' results
are merged and the files they shared completed (size and metadata), hard links are made, and
directories get their metadata last (writing into a directory changes its mtime).
Directories are opened again from the target, one name at a time, never following a
symlink (:func:`safehold.engine.restore.safe_fs.open_rel`)."""

from __future__ import annotations

import os
import stat

from safehold.engine.restore.parts import PartResult
from safehold.engine.restore.safe_fs import clear
from safehold.engine.restore.state import FileMeta
from safehold.engine.restore.walk import TreeWalk
from safehold.repo import Node

__all__ = ["Restore"]


class Restore(TreeWalk):
    """One process's restore: :meth:`walk`, then :meth:`finish` (part 0) or :meth:`drain`
    (the other parts), then :meth:`close`."""

    def finish(self) -> None:
        """Part 0: wait for the other parts, then what needs all files: the metadata of
        files that parts shared, hard links, and directories' metadata (last, as writing
        into a directory changes its mtime). Directories are opened again from the target,
        one name at a time, never following a symlink."""
        self.drain()
        if self.nparts > 1:
            self._merge(self.parts.wait())
            # the other parts are done: what is left (a hard link written from its own
            # content list) is this process's alone, a file of several chunks included
            self.nparts = 1
        for dir_rel, name, path, link, node in self.hardlinks:
            self._hardlink(dir_rel, name, path, link, node)
        self.drain()
        for rel, path, node in reversed(self.dirs):
            self._trim_rel_fds()
            try:
                fd = self._reopen(rel)
            except OSError as exc:
                self._error(path, f"metadata: {exc.strerror}")
                continue
            # its subdirectories came after it in the walk, so they are done: so is it
            del self.rel_fds[rel]
            try:
                if self.owners or os.fstat(fd).st_uid == self.euid:
                    self._meta_fd(fd, path, FileMeta(node))
                # else a directory that was there before, another user's (a claim's mount
                # point, root's, restored into by the application's user): only its owner
                # may set its mode and times, and no later run could; what is in it is done
            finally:
                os.close(fd)
        self._close_rel_fds()

    def _merge(self, results: list[PartResult]) -> None:
        """Count the other parts' work, and complete the files that parts shared: size and
        metadata, except for a file a part could not write (its metadata must not say
        that it is complete, so that another run redoes it)."""
        result = self.result
        failed = {e["path"] for e in result.errors}
        for other in results:
            result.files += other.files
            result.links += other.links
            result.special += other.special
            result.bytes_written += other.bytes_written
            result.errors.extend(other.errors)
            failed.update(e["path"] for e in other.errors)
        for pending in self.deferred:
            if pending.failed or pending.path in failed:
                continue
            self._trim_rel_fds()
            try:
                dir_fd = self._reopen(pending.dir.rel)
                flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                fd = os.open(pending.name, flags, 0o600, dir_fd=dir_fd)
            except OSError as exc:
                self._error(pending.path, f"cannot create file: {exc.strerror}")
                continue
            try:
                os.ftruncate(fd, pending.size)  # a file ending in a hole, or all holes
                self._meta_fd(fd, pending.path, pending.meta)
            except OSError as exc:
                self._error(pending.path, f"cannot create file: {exc.strerror}")
                continue
            finally:
                os.close(fd)
            result.files += 1
            self.progress.files_done += 1
            self.progress.file("restored", pending.path)
        self.deferred = []

    def _hardlink(self, dir_rel: str, name: str, path: str, link: str, node: Node) -> None:
        """``name`` of directory ``dir_rel`` as a hard link to the file ``link`` (both in the
        snapshot), or, when that was not restored, from its own content list."""
        self._trim_rel_fds()
        try:
            dir_fd = self._reopen(dir_rel)
        except OSError as exc:
            self._error(path, f"cannot create hard link: {exc.strerror}")
            return
        first_rel, _, first_name = link.rpartition("/")
        first = None
        if link in self.restored:
            try:
                first_fd = self._reopen(first_rel)
                st = os.stat(first_name, dir_fd=first_fd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    first = st
            except OSError:
                pass
        if first is not None:
            try:
                try:
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    if (st.st_dev, st.st_ino) == (first.st_dev, first.st_ino):
                        self.result.files_skipped += 1
                        return
                except FileNotFoundError:
                    pass
                clear(name, dir_fd)
                os.link(
                    first_name,
                    name,
                    src_dir_fd=first_fd,
                    dst_dir_fd=dir_fd,
                    follow_symlinks=False,
                )
                self.result.files += 1
                self.progress.files_done += 1
                self.progress.file("restored", path)
            except OSError as exc:
                self._error(path, f"cannot create hard link: {exc.strerror}")
            return
        # The first name was not restored: write this one from its own content list, in a
        # descriptor of its own (the batch holds it until the file is written).
        clone = dict(node)
        clone.pop("hardlink")
        try:
            where = self._adopt(os.dup(dir_fd), path[: -len(name)], dir_rel)
        except OSError as exc:
            self._error(path, f"cannot create file: {exc.strerror}")
            return
        try:
            self.file(where, name, path, link, clone, fresh=False)
        finally:
            self._release(where)
