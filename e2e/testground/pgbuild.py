"""PostgreSQL 18 for the test ground, built from Debian's ``postgresql-18`` source package.

Safehold's image carries the client tools of every supported PostgreSQL major version under
``/usr/lib/postgresql/<major>/bin`` and runs each server's own (see the Dockerfile and
``safehold.engine.databases.client``). The test ground holds two such versions, Debian
bookworm's 15 and 18, servers and tools, so that the tests prove the choice and run against
both servers.

No registry the test machines reach ships PostgreSQL 18 for bookworm (trixie's 17 needs a newer
C library), so it is built from the source package in Debian's unstable suite: upstream's
tarball, configured with what the tests use (no ICU, readline or LLVM), in about 2.5 minutes
on 2 cores. The build is cached under ``$SAFEHOLD_CACHE/postgresql-18-<Debian version>/``
(with its ``build.log``) and copied to ``/usr/lib/postgresql/18``, where Debian's and the
PostgreSQL project's packages put it; there the ``postgres`` user can run the server (the
cache is under root's home when the tests run as root). A PostgreSQL 18 already installed
there by a package is used as it is.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

from testground.debsrc import BuildError, SourceList, cache_root, run_logged

__all__ = ["INSTALL", "MAJOR", "install", "server_bin"]

MAJOR = "18"
PACKAGE = f"postgresql-{MAJOR}"
INSTALL = Path("/usr/lib/postgresql") / MAJOR
# written next to a tree this module installed, with the Debian source version it came from
MARKER = ".safehold-build"
# unstable and testing: apt takes the newer; once both have moved on to a newer PostgreSQL,
# a machine without this build cached cannot make it, and MAJOR moves on with them
SID = SourceList(
    "apt-src-sid",
    "deb-src http://deb.debian.org/debian sid main\n"
    "deb-src http://deb.debian.org/debian forky main\n",
)
CONFIGURE = ["--without-icu", "--without-readline", "--without-llvm", "--with-openssl"]
TOOLS = ("bison", "flex", "make", "gcc", "tar")


def server_bin(version: str) -> Path:
    """Where PostgreSQL ``version``'s programs are (Debian's layout)."""
    return Path("/usr/lib/postgresql") / version / "bin"


def _cached() -> Path | None:
    """A finished build in the cache (its DESTDIR root), whichever version it is."""
    done = sorted(cache_root().glob(f"{PACKAGE}-*/root{INSTALL}/bin/postgres"))
    return done[-1].parents[len(INSTALL.parts)] if done else None


def install(*, echo: bool = True) -> Path:
    """PostgreSQL 18's ``bin`` directory, built and installed first when it is missing."""
    if (INSTALL / "bin" / "postgres").is_file():
        return INSTALL / "bin"
    cache_root().mkdir(parents=True, exist_ok=True)
    with (cache_root() / f"{PACKAGE}-build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        root = _cached() or _build(SID.version(PACKAGE), echo=echo)
        if not (INSTALL / "bin" / "postgres").is_file():
            _copy(root, version=root.parent.name.removeprefix(f"{PACKAGE}-"))
    return INSTALL / "bin"


def _build(version: str, *, echo: bool) -> Path:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise BuildError(f"{', '.join(missing)} not installed: run e2e/install-deps")
    home = cache_root() / f"{PACKAGE}-{version}"
    shutil.rmtree(home, ignore_errors=True)
    work = home / "src"
    work.mkdir(parents=True)
    log = home / "build.log"
    log.write_text(f"building {PACKAGE} {version} (Debian source, upstream tarball) in {home}\n")
    if echo:
        print(f"install-deps: building PostgreSQL {version} (minutes; log: {log})", flush=True)
    SID.download(PACKAGE, version, work, log)
    (tarball,) = work.glob(f"{PACKAGE}_*.orig.tar.*")
    run_logged(["tar", "xf", tarball.name], step="unpack the tarball", log=log, cwd=work)
    (tree,) = (d for d in work.iterdir() if d.is_dir())
    run_logged(
        ["./configure", f"--prefix={INSTALL}", *CONFIGURE],
        step="configure",
        log=log,
        cwd=tree,
    )
    jobs = str((os.cpu_count() or 1) + 1)
    run_logged(["make", "-j", jobs], step="make", log=log, cwd=tree)
    root = home / "root"
    run_logged(["make", "install", f"DESTDIR={root}"], step="make install", log=log, cwd=tree)
    (root / INSTALL.relative_to("/") / MARKER).write_text(version + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return root


def _copy(root: Path, *, version: str) -> None:
    """Copy the DESTDIR tree to ``INSTALL`` whole: into a sibling first, then renamed."""
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    staging = INSTALL.with_name(f".{MAJOR}.{os.getpid()}")
    source = root / INSTALL.relative_to("/")
    for cmd in (
        [*sudo, "mkdir", "-p", str(INSTALL.parent)],
        [*sudo, "cp", "-a", str(source), str(staging)],
        [*sudo, "mv", "-T", str(staging), str(INSTALL)],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BuildError(f"installing PostgreSQL {version}: {' '.join(cmd)}: {done.stderr}")


if __name__ == "__main__":
    try:
        install()
    except BuildError as exc:
        print(f"install-deps: {exc}", file=sys.stderr)
        sys.exit(1)
