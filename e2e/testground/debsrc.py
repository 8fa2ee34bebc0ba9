"""Debian source packages, fetched through a private apt configuration, and logged build steps.

The test ground builds what no registry reachable from the test machines ships as a binary
(kube-apiserver, a current PostgreSQL) from Debian's source packages. The machine's own apt
sources are left untouched: each ``SourceList`` keeps its ``deb-src`` lines, package lists and
downloads in a directory of its own under the cache, and apt checks the archive's signatures
as it does for any source.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BuildError", "SourceList", "cache_root", "run_logged"]


class BuildError(RuntimeError):
    """A build step failed; the message names the step and the log to read."""


def cache_root() -> Path:
    """``$SAFEHOLD_CACHE``, or ``~/.cache/safehold``, as the Makefile exports it."""
    return Path(os.environ.get("SAFEHOLD_CACHE") or Path.home() / ".cache" / "safehold")


@dataclass(frozen=True)
class SourceList:
    """A private apt configuration of ``lines`` (``deb-src ...``) in the cache's ``name``."""

    name: str
    lines: str

    @property
    def directory(self) -> Path:
        return cache_root() / self.name

    def options(self) -> list[str]:
        """apt options that read only this list and keep their own state."""
        base = self.directory
        return [
            "-o", f"Dir::Etc::SourceList={base / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/nonexistent",
            "-o", f"Dir::State::Lists={base / 'lists'}",
            "-o", f"Dir::Cache={base / 'cache'}",
            "-o", "APT::Get::List-Cleanup=false",
        ]  # fmt: skip

    def _prepare(self) -> None:
        base = self.directory
        (base / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (base / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        sources = base / "sources.list"
        if not sources.exists() or sources.read_text() != self.lines:
            sources.write_text(self.lines)

    def _showsrc(self, package: str) -> str | None:
        result = subprocess.run(
            ["apt-cache", *self.options(), "showsrc", package],
            capture_output=True,
            text=True,
            check=False,
        )
        versions = [
            line.split(":", 1)[1].strip()
            for line in result.stdout.splitlines()
            if line.startswith("Version:")
        ]
        return versions[0] if versions else None

    def version(self, package: str, *, refresh: bool = False) -> str:
        """The source version of ``package`` the list offers; ``refresh`` updates the lists
        first (otherwise they are updated only when they do not know the package)."""
        # apt's own lock fails a second updater at once (two test workers collecting on a
        # fresh machine): ours makes it wait for the first, whose lists it then reads
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / "update.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._prepare()
            version = None if refresh else self._showsrc(package)
            if version is None:
                run_logged(
                    ["apt-get", *self.options(), "update", "-qq"],
                    step=f"apt-get update (private deb-src list {self.name})",
                    log=self.directory / "update.log",
                )
                version = self._showsrc(package)
        if version is None:
            raise BuildError(
                f"apt-cache showsrc {package} found nothing: is deb.debian.org reachable? "
                f"(private apt config in {self.directory})"
            )
        return version

    def download(self, package: str, version: str, into: Path, log: Path) -> Path:
        """Download the source package into ``into``; returns its ``.dsc``."""
        self._prepare()
        run_logged(
            ["apt-get", *self.options(), "source", "--download-only", f"{package}={version}"],
            step=f"download the source package {package} {version}",
            log=log,
            cwd=into,
        )
        dscs = sorted(into.glob("*.dsc"))
        if not dscs:
            raise BuildError(f"no .dsc downloaded into {into}; full log: {log}")
        return dscs[0]


def run_logged(
    cmd: list[str],
    *,
    step: str,
    log: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> None:
    """Run one step with its output appended to ``log``; fail with the step's name and tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"\n### {step}\n$ {' '.join(cmd)}\n")
        out.flush()
        code = subprocess.run(
            cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False
        ).returncode
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise BuildError(f"{step} failed with exit code {code}; full log: {log}\n{tail}")
