"""The walk: the snapshot's trees restored into the target, depth first in the snapshot's
order (every part of a several-process restore walks alike), directories created as it
goes, files handed to :meth:`~safehold.engine.restore.write.FileWriter.file`, symlinks and
special files made on the spot.

The walk holds each directory open and creates, replaces and changes its entries relative to
that descriptor, never through a path (:mod:`safehold.engine.restore.safe_fs`); it never
follows a symlink where the snapshot has a directory or a file (the symlink is replaced);
names that are not one entry (``..``, ``/``, NUL, empty) and names a directory holds twice are
reported and not restored. Errors are per entry: the rest is restored.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from safehold.engine.restore.parts import FILES_PER_OWNER
from safehold.engine.restore.safe_fs import DIR_FLAGS, bad_name, clear, enter_dir
from safehold.engine.restore.state import Dir, has_other_links
from safehold.engine.restore.write import FileWriter
from safehold.repo import CorruptObject, Node

__all__ = ["TreeWalk", "shown"]

_SPECIAL_KINDS = {
    "fifo": stat.S_IFIFO,
    "socket": stat.S_IFSOCK,
    "dev": stat.S_IFBLK,
    "chardev": stat.S_IFCHR,
}


class _Frame:
    """A directory being walked: its entries not yet restored, and where they go."""

    __slots__ = ("dir", "dir_no", "dups", "entries", "fresh", "rel", "whole")

    def __init__(
        self,
        entries: Iterator[tuple[int, Node]],
        where: Dir,
        rel: str,
        fresh: bool,
        dir_no: int,
        dups: set[str] | None,
        whole: bool,
    ) -> None:
        self.entries = entries
        self.dir = where
        self.rel = rel
        self.fresh = fresh
        self.dir_no = dir_no
        self.dups = dups
        self.whole = whole  # everything in it is selected (or there is no selection)


class TreeWalk(FileWriter):
    """Restores the snapshot's entries in the walk's order (files through :meth:`file`)."""

    def walk(self, tree_id: str, fresh: bool = False) -> None:
        """Restore the tree ``tree_id`` into the target, depth first in the snapshot's order
        (every part walks alike). ``fresh``: this run created the directory, so nothing can
        exist in it yet and the per-file checks for an earlier run are skipped. Iterative:
        a tree thousands of levels deep takes memory and a descriptor per level, no
        recursion."""
        stack: list[_Frame] = []
        frame = self._open_tree(tree_id, self.root, "", fresh, self.selection is None)
        while frame is not None:
            child = self._walk_dir(frame)
            if child is not None:
                stack.append(frame)
                frame = child
                continue
            self._release(frame.dir)
            frame = stack.pop() if stack else None

    def _open_tree(
        self, tree_id: str, where: Dir, rel: str, fresh: bool, whole: bool
    ) -> _Frame | None:
        """Load the tree of directory ``where`` (or report it and let go of ``where``)."""
        self.dir_no += 1
        try:
            nodes = self.trees_ahead.take(tree_id)
        except CorruptObject as exc:
            if self.part == 0:  # every part reads it; one message is enough
                self._error(where.path, f"directory cannot be read from the repository: {exc}")
            self._release(where)
            return None
        # The subdirectories' trees are loaded in the background, a few ahead of the walk
        # (engine/ahead.py): on a cold cache each is a read that would otherwise
        # stall the walk, which feeds the workers.
        names: list[object] = []
        subs: list[str] = []
        selection = self.selection
        for node in nodes:
            names.append(node.get("name"))
            sub = node.get("subtree")
            if (
                node.get("type") == "dir"
                and isinstance(sub, str)
                and (
                    whole
                    or selection is None
                    or selection.decide(f"{rel}/{node.get('name')}".lstrip("/"), True, False)[0]
                )
            ):
                subs.append(sub)
        self.trees_ahead.want(subs)
        dups = _duplicates(names)
        if dups and self.part == 0:
            for name in sorted(dups):
                self._error(
                    where.path + shown(name),
                    "the snapshot's directory holds this name more than once: none restored",
                )
        return _Frame(iter(enumerate(nodes)), where, rel, fresh, self.dir_no, dups, whole)

    def _walk_dir(self, frame: _Frame) -> _Frame | None:
        """Restore the entries of ``frame`` in order, up to its next subdirectory: return
        that subdirectory's frame (the walk comes back for the rest), or None when done."""
        where, rel, fresh, dir_no, dups = (
            frame.dir,
            frame.rel,
            frame.fresh,
            frame.dir_no,
            frame.dups,
        )
        part, nparts, by_stripe = self.part, self.nparts, self.own_by_stripe
        prefix = where.path
        selection = None if frame.whole else self.selection
        whole = True
        for position, node in frame.entries:
            mine: bool | None = None
            try:
                kind = node["type"]
                if nparts == 1:
                    mine = True
                elif by_stripe and kind == "file" and len(node.get("content", ())) == 1:
                    mine = self._file_owner(node["content"][0], dir_no, position) == part
                else:
                    mine = (dir_no + position // FILES_PER_OWNER) % nparts == part
                if not (
                    mine
                    or kind == "dir"
                    or len(node.get("content", ())) > 1  # shared by stripe
                    or (part == 0 and kind == "file" and _noted(node))
                ):
                    continue  # another part's, and nothing part 0 notes: the quickest way out
                name = node["name"]
                if type(name) is not str or bad_name(name):
                    if mine:
                        self._error(prefix + shown(name), "unsafe name in snapshot, skipped")
                    continue
                if dups is not None and name in dups:
                    continue  # reported once by _open_tree
                node_rel = f"{rel}/{name}" if rel else name
                if selection is not None:
                    restore, whole = selection.decide(node_rel, kind == "dir", False)
                    if not restore:
                        continue
                elif self.selection is not None and self.selection.filter.excluded(node_rel):
                    continue  # in a directory selected whole, an excluded entry
                path = prefix + name
                if kind == "dir":
                    child = self._enter(where, name, path, node_rel, node, fresh, whole)
                    if child is not None:
                        return child
                    continue
                if kind == "file":
                    self.file(where, name, path, node_rel, node, fresh, mine)
                elif not mine:
                    continue
                elif kind == "symlink":
                    self._symlink(where, name, path, node, fresh)
                else:
                    self._special(where, name, path, node, fresh)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                # only a crafted tree (the decoder checks every field): this entry only,
                # reported by its owner; before the owner was known every part failed
                # alike, and part 0 reports it
                if mine or (mine is None and part == 0):
                    what = node.get("name") if isinstance(node, dict) else None
                    self._error(prefix + shown(what), f"malformed entry in snapshot ({exc})")
        return None

    def _file_owner(self, chunk: object, dir_no: int, position: int) -> int:
        """The part that restores a file of one chunk from an object store: the one its
        chunk's piece of the pack went to (``pack_parts``, as :meth:`_owner`); a chunk id
        that is malformed or in no index by the directory run, so that exactly one part
        reports it."""
        try:
            blob_id = bytes.fromhex(chunk) if isinstance(chunk, str) else b""
        except ValueError:
            blob_id = b""
        place = self.repo.index.pack_place(blob_id) if blob_id else None
        if place is not None:
            return self.pack_parts[place[0]].owner(place[1])
        return (dir_no + position // FILES_PER_OWNER) % self.nparts

    def _enter(
        self,
        where: Dir,
        name: str,
        path: str,
        rel: str,
        node: Node,
        fresh: bool,
        whole: bool,
    ) -> _Frame | None:
        """Create (or open) the directory ``name`` of ``where``; its frame, to walk it
        (``whole``: everything in it is selected)."""
        try:
            if fresh:
                try:
                    fd, _ = enter_dir(name, where.fd, create_only=True)
                except FileExistsError:
                    if self.nparts == 1:  # with parts, another may have come first
                        raise
                    fd = os.open(name, DIR_FLAGS, dir_fd=where.fd)
                sub_fresh = True
            else:
                fd, sub_fresh = enter_dir(name, where.fd)
        except OSError as exc:
            if self.part == 0:  # every part tries; one message is enough
                self._error(path, f"cannot create directory: {exc.strerror}")
            return None
        child = self._adopt(fd, path + "/", rel)
        if self.part == 0:
            self.dirs.append((rel, path, node))
            self.result.dirs += 1
        sub = node.get("subtree")
        if isinstance(sub, str):
            return self._open_tree(sub, child, rel, sub_fresh, whole)
        self._release(child)
        return None

    def _symlink(self, where: Dir, name: str, path: str, node: Node, fresh: bool) -> None:
        dir_fd = where.fd
        try:
            target = str(node.get("target", ""))
            if not fresh:
                try:
                    if os.readlink(name, dir_fd=dir_fd) == target:
                        self._meta_entry(where, name, path, node, True)
                        self.result.links += 1
                        return
                except OSError:
                    pass
                clear(name, dir_fd)
            os.symlink(target, name, dir_fd=dir_fd)
            self._meta_entry(where, name, path, node, True)
            self.result.links += 1
        except (OSError, ValueError) as exc:
            msg = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._error(path, f"cannot create symlink: {msg}")

    def _special(self, where: Dir, name: str, path: str, node: Node, fresh: bool) -> None:
        """A FIFO, socket or device node (a socket's node is made with ``mknod``, as
        binding would; nobody listens on it, as after a reboot)."""
        try:
            if not fresh:
                clear(name, where.fd)
            mode = _SPECIAL_KINDS[node["type"]] | int(node.get("mode", 0o600)) & 0o7777
            os.mknod(name, mode, int(node.get("rdev", 0)), dir_fd=where.fd)
            self._meta_entry(where, name, path, node, False)
            self.result.special += 1
        except (OSError, KeyError) as exc:
            msg = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._error(path, f"cannot create {node['type']}: {msg}")


def _noted(node: Node) -> bool:
    """Part 0 notes another part's file: a hard link (made at the end, by part 0) or a
    file that may be one's first name (see :func:`has_other_links`)."""
    return "hardlink" in node or has_other_links(node)


def shown(name: object) -> str:
    """A name of a crafted snapshot as an error message shows it: NUL escaped, anything
    that is not a string as Python writes it."""
    if isinstance(name, str):
        return name.replace("\x00", "\\x00") if name else "''"
    return repr(name)


def _duplicates(names: list[object]) -> set[str] | None:
    """The names that a directory of the snapshot holds more than once (a crafted tree:
    the decoder refuses them too), or None."""
    try:
        if len(set(names)) == len(names):
            return None
    except TypeError:  # a name that is not a string: reported entry by entry
        pass
    seen: set[str] = set()
    dups: set[str] = set()
    for name in names:
        if isinstance(name, str):
            (dups if name in seen else seen).add(name)
    return dups or None
