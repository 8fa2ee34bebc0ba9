"""Run one container's command as a local process in a private mount namespace.

``unshare --mount --propagation private`` gives the process its own mount table, so each pod
sees its own volumes at the same paths (two pods may both mount something at ``/data``) and
nothing leaks to the host. A short ``sh`` script creates the mount points, bind-mounts each
volume (remounting read-only when asked), changes to ``workingDir`` and ``exec``s the command,
so the command's exit code is the container's exit code.

Mount points that do not exist are created on the shared filesystem (a mount namespace is not a
filesystem namespace) and left there: ``missing_roots`` reports them for the runner's log.

The process keeps the runner's user (root: the test's files are its own) unless the container's
own security context names ``runAsUser`` (the pod's is not followed: every Job pod names one, and
the tests' directories are root's). A container that drops ``ALL`` capabilities gets only those
it adds, through ``setpriv``'s bounding set, and ``allowPrivilegeEscalation: false`` sets
no-new-privileges. So a Job that should not read another user's file cannot, one given CHOWN
can chown and no more, and a check run as uid 999 reads what uid 999 may.

A container of another user must still reach the Python the runner runs (the venv's base
interpreter) and the ``keep_visible`` directories, which may live under a directory other users
cannot search (pyenv's under ``/root``, mode 0700): inside the namespace that directory is
covered by an empty tmpfs, and those paths alone are bound back into it (``_reachable``), as an
image holds its interpreter where every user may run it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from testground.podrunner.volumes import Mount

# Absolute paths: the pod's own PATH may not contain the system directories.
_UNSHARE = shutil.which("unshare") or "/usr/bin/unshare"
_MOUNT = shutil.which("mount") or "/usr/bin/mount"
_MKDIR = shutil.which("mkdir") or "/usr/bin/mkdir"
_SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"

__all__ = ["Launch", "kill_group", "limited", "missing_roots", "script", "start"]


@dataclass(frozen=True)
class Launch:
    """Everything needed to start one container process."""

    argv: list[str]
    env: dict[str, str]
    working_dir: str
    mounts: list[Mount]
    log: Path
    #: Host directories the command itself needs (the Python environment, the project's source):
    #: bound again over any volume that would cover them, e.g. an emptyDir at /tmp when the
    #: checkout lives under /tmp.
    keep_visible: tuple[Path, ...] = ()
    #: The capabilities the command keeps (``capabilities.add`` of a container that drops
    #: ``ALL``, e.g. ``("CHOWN",)``); None: all of the runner's.
    capabilities: tuple[str, ...] | None = None
    #: ``allowPrivilegeEscalation: false``.
    no_new_privileges: bool = False
    #: The container's own ``runAsUser`` and ``runAsGroup``; None: the runner's.
    user: int | None = None
    group: int | None = None


def _depth(mount: Mount) -> int:
    return len(PurePosixPath(mount.target).parts)


def _kept(launch: Launch) -> list[Mount]:
    """Mounts that put back each ``keep_visible`` directory that a volume target covers."""
    targets = [PurePosixPath(m.target) for m in launch.mounts]
    return [
        Mount(source=path, target=str(path), read_only=True)
        for path in launch.keep_visible
        if path.is_dir() and any(PurePosixPath(path).is_relative_to(t) for t in targets)
    ]


def _hidden_ancestor(path: Path) -> Path | None:
    """The highest ancestor of ``path`` that other users may not search, or None."""
    for parent in reversed(path.parents):
        if parent != parent.parent and not os.stat(parent).st_mode & stat.S_IXOTH:
            return parent
    return None


def _reachable(launch: Launch) -> list[tuple[Path, Path]]:
    """For a container of a user other than root: (covered directory, path to bind back) for
    the interpreter and the ``keep_visible`` directories under a directory that user may not
    search."""
    if not launch.user:
        return []
    needed = [Path(sys.base_prefix).resolve(), *(p.resolve() for p in launch.keep_visible)]
    return [(hidden, p) for p in needed if (hidden := _hidden_ancestor(p)) is not None]


def script(launch: Launch) -> str:
    """The shell script run inside the namespace; its positional arguments are the command.

    Every source is first bind-mounted into a staging directory next to the log, before any
    target is covered; the targets are then mounted from there by paths relative to it (the
    working directory, so lookups start below any later mount, and ``--no-canonicalize`` so
    mount does not turn them back into absolute paths). Otherwise a volume at ``/tmp`` would
    hide the sources that live under ``/tmp`` (a test ground's pod files, for example).
    """
    q = shlex.quote
    stage = launch.log.parent / f"{launch.log.name}.mounts"
    mounts = sorted([*launch.mounts, *_kept(launch)], key=_depth)
    lines = ["set -e", f"{_MKDIR} -p {q(str(stage))}"]
    for i, m in enumerate(mounts):
        staged = q(str(stage / str(i)))
        lines.append(f"{_MKDIR} -p {staged}" if m.source.is_dir() else f": > {staged}")
        lines.append(f"{_MOUNT} --bind {q(str(m.source))} {staged}")
    reachable = _reachable(launch)
    for j, (_, path) in enumerate(reachable):
        lines.append(f"{_MKDIR} -p {q(str(stage / f'r{j}'))}")
        lines.append(f"{_MOUNT} --bind {q(str(path))} {q(str(stage / f'r{j}'))}")
    lines.append(f"cd {q(str(stage))}")
    for i, m in enumerate(mounts):
        target = q(m.target)
        if m.source.is_dir():
            lines.append(f"{_MKDIR} -p {target}")
        else:
            lines.append(f"{_MKDIR} -p {q(str(PurePosixPath(m.target).parent))}")
            lines.append(f"[ -e {target} ] || : > {target}")
        lines.append(f"{_MOUNT} --no-canonicalize --bind ./{i} {target}")
        if m.read_only:
            lines.append(f"{_MOUNT} -o remount,bind,ro {target}")
    for hidden in sorted({h for h, _ in reachable}):
        lines.append(f"{_MOUNT} -t tmpfs -o mode=0755 tmpfs {q(str(hidden))}")
    for j, (_, path) in enumerate(reachable):
        lines.append(f"{_MKDIR} -p {q(str(path))}")
        lines.append(f"{_MOUNT} --no-canonicalize --bind ./r{j} {q(str(path))}")
        lines.append(f"{_MOUNT} -o remount,bind,ro {q(str(path))}")
    wd = launch.working_dir or "/"
    lines.append(f"{_MKDIR} -p {q(wd)}")
    lines.append(f"cd {q(wd)}")
    lines.append(f'exec {_privileges(launch)}"$@"')
    return "\n".join(lines) + "\n"


def _privileges(launch: Launch) -> str:
    """The ``setpriv`` prefix of the command that limits it as ``launch`` says, or ""."""
    options = ["--no-new-privs"] if launch.no_new_privileges else []
    if launch.user is not None:
        options += [f"--reuid={launch.user}", f"--regid={launch.group or 0}", "--clear-groups"]
    if launch.capabilities is not None:
        keep = "".join(f",+{c.lower()}" for c in launch.capabilities)
        options += ["--inh-caps=-all", f"--bounding-set=-all{keep}"]
    if not options:
        return ""
    return " ".join([shlex.quote(_SETPRIV), *options, "--", ""])


def limited(launch: Launch, container: Mapping[str, Any]) -> Launch:
    """``launch`` limited as the container's own ``securityContext`` says."""
    context = container.get("securityContext") or {}
    caps = context.get("capabilities") or {}
    kept: tuple[str, ...] | None = None
    if "ALL" in (caps.get("drop") or []):
        kept = tuple(c.removeprefix("CAP_") for c in caps.get("add") or [])
    return replace(
        launch,
        capabilities=kept,
        no_new_privileges=context.get("allowPrivilegeEscalation") is False,
        user=context.get("runAsUser"),
        group=context.get("runAsGroup"),
    )


def missing_roots(targets: list[str]) -> set[Path]:
    """For each target, the highest ancestor that does not exist yet (what mkdir -p creates)."""
    roots: set[Path] = set()
    for target in targets:
        path = Path(target)
        missing = None
        while not os.path.lexists(path) and path != path.parent:
            missing = path
            path = path.parent
        if missing is not None:
            roots.add(missing)
    return roots


def start(launch: Launch) -> subprocess.Popen[bytes]:
    """Start the container process in a session of its own, output appended to its log."""
    launch.log.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        _UNSHARE, "--mount", "--propagation", "private", "--",
        "/bin/sh", "-c", script(launch), "container", *launch.argv,
    ]  # fmt: skip
    with launch.log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=launch.env,
            start_new_session=True,
            close_fds=True,
        )


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Signal the container's whole process group (the command and its children)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
