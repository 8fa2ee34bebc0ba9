"""A node's metadata from an ``lstat``: type, mode, owner (by id and by name), times."""

from __future__ import annotations

import grp
import os
import pwd
import stat

from safehold.repo import Node

__all__ = ["Names", "meta"]

_TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFBLK: "dev",
    stat.S_IFCHR: "chardev",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


class Names:
    """uid/gid to names, cached (pwd/grp lookups are slow and repetitive)."""

    def __init__(self) -> None:
        self.users: dict[int, str] = {}
        self.groups: dict[int, str] = {}

    def user(self, uid: int) -> str:
        name = self.users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = ""
            self.users[uid] = name
        return name

    def group(self, gid: int) -> str:
        name = self.groups.get(gid)
        if name is None:
            try:
                name = grp.getgrgid(gid).gr_name
            except KeyError:
                name = ""
            self.groups[gid] = name
        return name


def meta(names: Names, name: str, st: os.stat_result) -> Node:
    """The node of ``name`` without its content (file), subtree (dir) or target (link)."""
    return {
        "name": name,
        "type": _TYPES.get(stat.S_IFMT(st.st_mode), "file"),
        "mode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "user": names.user(st.st_uid),
        "group": names.group(st.st_gid),
        "mtime_ns": st.st_mtime_ns,
        "atime_ns": st.st_atime_ns,
        "ctime_ns": st.st_ctime_ns,
        "inode": st.st_ino,
        "dev": st.st_dev,
        "links": st.st_nlink,
    }
