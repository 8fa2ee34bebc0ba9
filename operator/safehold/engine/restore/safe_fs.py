"""File system operations that stay inside a directory: the restore's building blocks.

A restore writes into a target that may already hold anything: an earlier snapshot's
symlink where this snapshot has a directory, or entries another process changes while the
restore runs. Every operation here is relative to an open directory file descriptor and
never follows a symlink: directories are opened with ``O_DIRECTORY | O_NOFOLLOW``, files
are created with ``O_EXCL | O_NOFOLLOW``, and modes, owners and times are set through the
entry's own file descriptor or with ``follow_symlinks=False``. A path is never resolved
again once its directory is open, so swapping a directory for a symlink meanwhile leads
nowhere outside.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

__all__ = [
    "DIR_FLAGS",
    "NEW_FILE_FLAGS",
    "bad_name",
    "chmod_entry",
    "clear",
    "enter_dir",
    "may_chown",
    "open_rel",
    "raise_fd_limit",
]

_CAP_CHOWN = 0  # linux/capability.h

#: Opens a directory, never a symlink to one (ELOOP) nor anything else (ENOTDIR).
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Creates a file that did not exist: fails (EEXIST) on anything there, a symlink included.
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: Modes of the directories the restore creates until their own mode is set, last:
#: nobody else can add entries to them meanwhile.
NEW_DIR_MODE = 0o700
_NOT_A_DIR = (errno.ELOOP, errno.ENOTDIR)


def bad_name(name: str) -> bool:
    """True for a name that is not one entry of its directory: empty, ``.``, ``..``, or
    holding ``/`` or NUL (only a crafted snapshot has these)."""
    return not name or name == "." or name == ".." or "/" in name or "\x00" in name


def enter_dir(name: str, dir_fd: int, *, create_only: bool = False) -> tuple[int, bool]:
    """Open the directory ``name`` of ``dir_fd``, creating it when absent: ``(fd, created)``.

    Whatever else is there (a symlink, a file, a special file) is removed and replaced by a
    directory, as the restore replaces any entry that differs from the snapshot's; a symlink
    is never followed. ``create_only``: the directory must be new (raise if anything is
    there), for a directory this run created, which nothing can hold yet.
    """
    try:
        os.mkdir(name, NEW_DIR_MODE, dir_fd=dir_fd)
        created = True
    except FileExistsError:
        if create_only:
            raise
        created = False
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd), created
    except OSError as exc:
        if created or exc.errno not in _NOT_A_DIR:
            raise
    os.unlink(name, dir_fd=dir_fd)
    os.mkdir(name, NEW_DIR_MODE, dir_fd=dir_fd)
    return os.open(name, DIR_FLAGS, dir_fd=dir_fd), True


def clear(name: str, dir_fd: int) -> None:
    """Remove the entry ``name`` of ``dir_fd`` unless it is a directory (then
    :class:`IsADirectoryError`); nothing there is fine. A symlink is removed, not followed."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except PermissionError:
        # EPERM is what POSIX (and some file systems) answer for a directory
        if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), name) from None
        raise


def chmod_entry(name: str, mode: int, dir_fd: int) -> None:
    """Set the mode of the entry ``name`` (a special file: a FIFO, socket or device, which
    cannot be opened to ``fchmod`` it) without following a symlink. Linux has no
    ``lchmod``: ``fchmodat(AT_SYMLINK_NOFOLLOW)`` works on anything but a symlink, and on a
    symlink (one that replaced the entry meanwhile) fails, which is what is wanted."""
    try:
        os.chmod(name, mode, dir_fd=dir_fd, follow_symlinks=False)
    except (ValueError, NotImplementedError):
        # Python's answer when the C library refuses AT_SYMLINK_NOFOLLOW: a symlink
        raise OSError(errno.ELOOP, "is a symbolic link, not changed", name) from None


def open_rel(root_fd: int, rel: str, cache: dict[str, int]) -> int:
    """The directory ``rel`` (names joined by ``/``) under ``root_fd``, opened component by
    component with :data:`DIR_FLAGS`; every directory opened is kept in ``cache`` (by its
    ``rel``) for the next call, and the caller closes them."""
    if not rel:
        return root_fd
    fd = cache.get(rel)
    if fd is not None:
        return fd
    # the nearest ancestor already open, then down from there (no recursion: trees may
    # be thousands of levels deep)
    todo: list[str] = []
    parent = rel
    fd = root_fd
    while parent:
        cached = cache.get(parent)
        if cached is not None:
            fd = cached
            break
        todo.append(parent)
        parent = parent.rpartition("/")[0]
    for path in reversed(todo):
        name = path.rpartition("/")[2]
        if bad_name(name):
            raise OSError(errno.EINVAL, "unsafe name", name)
        fd = os.open(name, DIR_FLAGS, dir_fd=fd)
        cache[path] = fd
    return fd


def may_chown(status: str = "/proc/self/status") -> bool:
    """Whether this process may give a file to another owner: CAP_CHOWN in its effective
    set, which root has unless a container dropped it (then a restore keeps the files as
    a non-root user's, instead of failing every chown). Without ``/proc``: being root."""
    try:
        with open(status, encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_CHOWN & 1)
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


def raise_fd_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit (a restore holds one
    descriptor per directory being restored, and trees may be deep); return the limit."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux
        return 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft
