"""Build kube-apiserver and kube-controller-manager from Debian's ``kubernetes`` source package.

No registry reachable from the test machines ships these binaries, but Debian bookworm's source
package is the full upstream tree with its vendored dependencies. The build is slow (about 6.5
minutes on 2 cores), so its output is cached outside the checkout under
``$SAFEHOLD_CACHE/kubernetes-<debian source version>/``, next to a ``build.log``; later runs only
check that the two binaries are there.

The source comes through a private apt configuration (``testground.debsrc``); the machine's own
apt sources are left untouched.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from testground.debsrc import BuildError, SourceList, cache_root, run_logged

__all__ = [
    "BINARIES",
    "Binaries",
    "BuildError",
    "build",
    "cache_root",
    "cached_binaries",
    "source_version",
]

BINARIES = ("kube-apiserver", "kube-controller-manager")
# Go 1.19 miscompiles the vendored reflect2 (the apiserver segfaults on the first
# custom-resource validation); Debian's packaged copy is fixed.
REFLECT2_DEBIAN = Path("/usr/share/gocode/src/github.com/modern-go/reflect2")
# What `kubectl version` and the discovery endpoint report.
KUBE_GIT_VERSION = "v1.20.2"
BOOKWORM = SourceList(
    "apt-src",
    "deb-src http://deb.debian.org/debian bookworm main\n"
    "deb-src http://deb.debian.org/debian-security bookworm-security main\n",
)


@dataclass(frozen=True)
class Binaries:
    """Where the cached control-plane binaries are."""

    directory: Path

    @property
    def apiserver(self) -> Path:
        return self.directory / "kube-apiserver"

    @property
    def controller_manager(self) -> Path:
        return self.directory / "kube-controller-manager"

    @property
    def log(self) -> Path:
        return self.directory / "build.log"


def source_version(*, refresh: bool = False) -> str:
    """The Debian source version of ``kubernetes`` (e.g. ``1.20.5+really1.20.2-1``).

    A version already built is reused without touching the network, so warm starts never wait
    for apt.
    """
    if not refresh:
        built = sorted(cache_root().glob("kubernetes-*/kube-controller-manager"))
        if built:
            return built[-1].parent.name.removeprefix("kubernetes-")
    return BOOKWORM.version("kubernetes", refresh=refresh)


def cached_binaries(version: str | None = None) -> Binaries | None:
    """The cached binaries for ``version`` (default: any built version), or None."""
    ver = version or source_version()
    bins = Binaries(cache_root() / f"kubernetes-{ver}")
    if all((bins.directory / name).is_file() for name in BINARIES):
        return bins
    return None


def build(*, force: bool = False, echo: bool = True) -> Binaries:
    """Return the cached binaries, building them first when they are missing.

    Steps, each logged to ``build.log``: download the source package, unpack it, swap in
    Debian's reflect2, ``make WHAT=...`` with CGO disabled, copy the binaries into the cache.
    A lock file serializes concurrent callers: the second one waits and then reuses the result.
    """
    version = source_version(refresh=force)
    if not force:
        found = cached_binaries(version)
        if found is not None:
            return found
    cache_root().mkdir(parents=True, exist_ok=True)
    with (cache_root() / "kubernetes-build.lock").open("w") as lock:
        if echo and _locked(lock):
            print("cluster: another process is building; waiting for it", flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force:
            found = cached_binaries(version)
            if found is not None:
                return found
        return _build_locked(version, echo=echo)


def _locked(lock: IO[str]) -> bool:
    """Whether another process holds the build lock right now."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(lock, fcntl.LOCK_UN)
    return False


def _build_locked(version: str, *, echo: bool) -> Binaries:
    for tool in ("go", "make", "rsync", "dpkg-source"):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} is not installed: run e2e/install-deps")
    if not REFLECT2_DEBIAN.is_dir():
        raise BuildError(
            f"{REFLECT2_DEBIAN} is missing: install golang-github-modern-go-reflect2-dev "
            "(e2e/install-deps does)"
        )
    bins = Binaries(cache_root() / f"kubernetes-{version}")
    bins.directory.mkdir(parents=True, exist_ok=True)
    log = bins.log
    log.write_text(f"building kubernetes {version} (Debian source) into {bins.directory}\n")
    if echo:
        print(f"cluster: building kube-apiserver and kube-controller-manager {version}", flush=True)
        print(f"cluster: this takes several minutes; log: {log}", flush=True)
    work = cache_root() / f"kubernetes-src-{version}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    dsc = BOOKWORM.download("kubernetes", version, work, log)
    tree = work / "tree"
    run_logged(
        ["dpkg-source", "--no-check", "-x", dsc.name, str(tree)],
        step="unpack the source package",
        log=log,
        cwd=work,
    )
    vendored = tree / "vendor" / "github.com" / "modern-go" / "reflect2"
    shutil.rmtree(vendored, ignore_errors=True)
    shutil.copytree(REFLECT2_DEBIAN, vendored, symlinks=False)
    version_file = work / "version.env"
    version_file.write_text(
        f"KUBE_GIT_VERSION='{KUBE_GIT_VERSION}'\n"
        "KUBE_GIT_MAJOR='1'\nKUBE_GIT_MINOR='20'\n"
        "KUBE_GIT_TREE_STATE='clean'\nKUBE_GIT_COMMIT=''\n"
    )
    env = dict(os.environ)
    env.update(
        {
            "CGO_ENABLED": "0",
            "KUBE_GIT_VERSION_FILE": str(version_file),
            "GOFLAGS": "-mod=vendor",
            "GO111MODULE": "on",
            "GOPATH": str(work / "gopath"),
            # (hack/lib/golang.sh sets GOCACHE under _output itself: every build is cold)
            "GOPROXY": "off",
            "KUBE_VERBOSE": "1",
        }
    )
    run_logged(
        ["make", "WHAT=cmd/kube-apiserver cmd/kube-controller-manager"],
        step="make WHAT='cmd/kube-apiserver cmd/kube-controller-manager'",
        log=log,
        cwd=tree,
        env=env,
    )
    outputs = sorted((tree / "_output").glob("**/bin/kube-apiserver"))
    if not outputs:
        raise BuildError(f"make succeeded but no kube-apiserver under {tree / '_output'}: {log}")
    for name in BINARIES:
        target = bins.directory / name
        tmp = target.with_suffix(".tmp")
        shutil.copy2(outputs[0].parent / name, tmp)
        tmp.chmod(0o755)
        tmp.replace(target)
    shutil.rmtree(work, ignore_errors=True)
    with log.open("a") as out:
        out.write("\n### done\n")
    return bins


if __name__ == "__main__":
    try:
        built = build(force="--force" in sys.argv)
    except BuildError as exc:
        print(f"cluster build: {exc}", file=sys.stderr)
        sys.exit(1)
    print(built.directory)
