"""The three backup tools under test, each reduced to the same four commands.

Every tool runs with its own defaults, so each is measured the way a user would run it:

- restic 0.14: repository format v2 (its default, named explicitly with
  ``--repository-version 2`` so the run does not depend on it: v1 cannot compress) with
  ``--compression auto`` (its default), the incremental backup with ``--parent`` set to the full
  backup's snapshot;
- borg 1.2: ``borg init -e repokey-blake2`` (authenticated encryption, as restic and Safehold
  always use), default lz4 compression, the incremental backup as a second archive (borg's files
  cache finds the unchanged files);
- Safehold: ``safehold backup --type full``, then ``--type incremental``.

A tool's repository is a local directory, or with an :class:`S3Location` a prefix of a bucket
on the benchmark's S3 server (restic's ``s3:`` repository, Safehold's ``s3://`` location; borg
has no object-store backend and is left out there).

Every tool keeps its caches (restic's cache directory, borg's files and chunks caches, whatever
Safehold keeps) in a directory of its own inside the benchmark's work directory, so no run sees
another run's state. Passwords are fixed benchmark values, passed through the environment.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from measure import Command

__all__ = ["TOOLS", "Borg", "Restic", "S3Location", "Safehold", "Tool", "ToolUnavailable"]

PASSWORD = "bench-password-not-secret"


class ToolUnavailable(RuntimeError):
    """The tool is not installed or does not work yet; the message says what is missing."""


@dataclass(frozen=True)
class S3Location:
    """A bucket of an S3 server, and the credentials that may write it."""

    endpoint: str  # http://127.0.0.1:PORT
    bucket: str
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"


class Tool(ABC):
    """One tool with its repository, cache directory and the state between its commands."""

    name: ClassVar[str]
    settings: ClassVar[str]  # the choices made for it, as printed in the report

    def __init__(self, workdir: Path, s3: S3Location | None = None) -> None:
        self.workdir = workdir
        self.repo = workdir / "repo"
        self.home = workdir / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.s3 = s3
        #: The repository's prefix in the bucket (with ``s3``): unique per work directory.
        self.prefix = "-".join(workdir.parts[-2:])

    def base_env(self) -> dict[str, str]:
        return {
            "XDG_CACHE_HOME": str(self.home / "cache"),
            "XDG_CONFIG_HOME": str(self.home / "config"),
        }

    @abstractmethod
    def version(self) -> str:
        """The version string, or ToolUnavailable when the tool cannot run."""

    @abstractmethod
    def init(self) -> Command: ...

    @abstractmethod
    def full(self, source: Path) -> Command: ...

    @abstractmethod
    def incremental(self, source: Path) -> Command: ...

    @abstractmethod
    def restore(self, target: Path) -> Command:
        """Restore the snapshot of the incremental backup into ``target``."""

    def record(self, step: str, stdout: str) -> dict[str, Any] | None:
        """Remember what later commands need from ``stdout``; return the tool's own summary."""
        return None


def _version(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        raise ToolUnavailable(f"{argv[0]} is not installed (e2e/install-deps installs it)")
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ToolUnavailable(f"{' '.join(argv)} failed: {_last_line(done.stderr)}")
    return done.stdout.strip().splitlines()[0]


def _last_line(text: str) -> str:
    """The gist of an error output (for a traceback, the exception), for a one-line reason."""
    lines = text.strip().splitlines()
    return lines[-1][:300] if lines else "(no output)"


def _last_json(stdout: str) -> dict[str, Any] | None:
    """The last stdout line that is a JSON object (the tools' summary convention)."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


class Restic(Tool):
    name = "restic"
    settings = "repository v2, compression auto (default), incremental with --parent"

    def __init__(self, workdir: Path, s3: S3Location | None = None) -> None:
        super().__init__(workdir, s3)
        self.snapshots: dict[str, str] = {}

    def env(self) -> dict[str, str]:
        env = {
            **self.base_env(),
            "RESTIC_REPOSITORY": str(self.repo),
            "RESTIC_PASSWORD": PASSWORD,
            "RESTIC_CACHE_DIR": str(self.home / "restic-cache"),
        }
        if self.s3 is not None:
            s3 = self.s3
            env["RESTIC_REPOSITORY"] = f"s3:{s3.endpoint}/{s3.bucket}/{self.prefix}"
            env["AWS_ACCESS_KEY_ID"] = s3.access_key_id
            env["AWS_SECRET_ACCESS_KEY"] = s3.secret_access_key
            env["AWS_DEFAULT_REGION"] = s3.region
        return env

    def version(self) -> str:
        return _version(["restic", "version"])

    def init(self) -> Command:
        return Command(["restic", "init", "--repository-version", "2"], self.env())

    def _backup(self, source: Path, *extra: str) -> Command:
        argv = ["restic", "backup", "--json", "--quiet", "--host", "bench", *extra, str(source)]
        return Command(argv, self.env())

    def full(self, source: Path) -> Command:
        return self._backup(source)

    def incremental(self, source: Path) -> Command:
        return self._backup(source, "--parent", self.snapshots["full"])

    def restore(self, target: Path) -> Command:
        argv = ["restic", "restore", self.snapshots["incremental"], "--target", str(target)]
        return Command(argv, self.env())

    def record(self, step: str, stdout: str) -> dict[str, Any] | None:
        summary = _last_json(stdout)
        if step in ("full", "incremental"):
            if summary is None or "snapshot_id" not in summary:
                raise RuntimeError(f"restic backup printed no snapshot id: {stdout[-300:]!r}")
            self.snapshots[step] = str(summary["snapshot_id"])
        return summary


class Borg(Tool):
    name = "borg"
    settings = "borg init -e repokey-blake2, default lz4 compression, incremental = 2nd archive"

    def env(self) -> dict[str, str]:
        return {
            **self.base_env(),
            "BORG_REPO": str(self.repo),
            "BORG_PASSPHRASE": PASSWORD,
            "BORG_BASE_DIR": str(self.home),
        }

    def version(self) -> str:
        if self.s3 is not None:
            raise ToolUnavailable("borg has no object-store backend")
        return _version(["borg", "--version"])

    def init(self) -> Command:
        return Command(["borg", "init", "-e", "repokey-blake2"], self.env())

    def full(self, source: Path) -> Command:
        return Command(["borg", "create", "::v1", str(source)], self.env())

    def incremental(self, source: Path) -> Command:
        return Command(["borg", "create", "::v2", str(source)], self.env())

    def restore(self, target: Path) -> Command:
        target.mkdir(parents=True, exist_ok=True)
        return Command(["borg", "extract", "::v2"], self.env(), cwd=target)


def _compile_package() -> None:
    """Write the ``.pyc`` files of the checkout's Safehold, as installing a wheel does: a
    shell with ``PYTHONDONTWRITEBYTECODE`` writes none, and every timed command would then
    compile the modules it imports (0.07-0.09 s), or those whose ``.pyc`` is stale."""
    import compileall

    import safehold

    compileall.compile_dir(str(Path(safehold.__file__).parent), quiet=1)


class Safehold(Tool):
    name = "safehold"
    settings = "defaults; --type full, then --type incremental; --json --quiet (summary only)"

    def __init__(self, workdir: Path, s3: S3Location | None = None) -> None:
        super().__init__(workdir, s3)
        # The CLI of the checkout's own environment, next to the interpreter running this.
        self.exe = str(Path(sys.executable).parent / "safehold")

    def env(self) -> dict[str, str]:
        env = {
            **self.base_env(),
            "SAFEHOLD_REPOSITORY": self.repo.as_uri(),
            "SAFEHOLD_PASSWORD": PASSWORD,
        }
        if self.s3 is not None:
            options = self.home / "s3-options"  # one file per option, as a mounted Secret
            options.mkdir(exist_ok=True)
            for key, value in (
                ("endpoint", self.s3.endpoint),
                ("region", self.s3.region),
                ("access_key_id", self.s3.access_key_id),
                ("secret_access_key", self.s3.secret_access_key),
            ):
                (options / key).write_text(value)
            env["SAFEHOLD_REPOSITORY"] = f"s3://{self.s3.bucket}/{self.prefix}"
            env["SAFEHOLD_OPTIONS_DIR"] = str(options)
        return env

    def version(self) -> str:
        if not Path(self.exe).exists():
            raise ToolUnavailable(f"{self.exe} does not exist (pip install -e . installs it)")
        done = subprocess.run(
            [self.exe, "backup", "--help"], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            why = _last_line(done.stderr or done.stdout)
            raise ToolUnavailable(f"`safehold backup --help` failed: {why}")
        _compile_package()
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).parent,
        ).stdout.strip()
        from importlib.metadata import version

        return f"safehold {version('safehold')} (checkout {rev or 'unknown'})"

    def init(self) -> Command:
        return Command([self.exe, "repo", "init"], self.env())

    def _backup(self, source: Path, kind: str) -> Command:
        argv = [self.exe, "backup", "--json", "--quiet", "--type", kind, str(source)]
        return Command(argv, self.env())

    def full(self, source: Path) -> Command:
        return self._backup(source, "full")

    def incremental(self, source: Path) -> Command:
        return self._backup(source, "incremental")

    def restore(self, target: Path) -> Command:
        argv = [self.exe, "restore", "--json", "--quiet", "latest", str(target)]
        return Command(argv, self.env())

    def record(self, step: str, stdout: str) -> dict[str, Any] | None:
        return _last_json(stdout)


TOOLS: dict[str, type[Tool]] = {tool.name: tool for tool in (Restic, Borg, Safehold)}
