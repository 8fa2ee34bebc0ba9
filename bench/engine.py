"""One part of the engine benchmark: tools side by side on one data set and one kind of repository.

A part is a data set (the mixed one, or the many small files), a place for the repositories
(local directories, or prefixes of a bucket on the run's S3 server) and whether the data changes
between the two backups (v1 -> v2: an incremental; no change: an unchanged re-run). Every part
runs the same procedure, on a fresh file system of its own (``freshfs.py``):

1. one working copy of the data set's v1 is made (``cp -a``);
2. in every round, each tool initialises a new repository and backs up the working copy in full;
3. the working copy is changed in place to v2 (files rewritten, added and deleted; unchanged
   files keep their inode and times, as on a real volume), and checked against v2's manifest
   (skipped for an unchanged re-run);
4. in every round, each tool makes its second backup into that round's repository (so every
   round starts from the state its full backup left: repository and caches);
5. in every round, each tool restores that snapshot into a new directory; the restore is checked
   file by file against the manifest, and a mismatch fails the run.

Tools alternate within each round, so a busy moment of the machine falls on one round of one
tool rather than decides a ratio; the report gives each tool's median round and every round.
Before every timed step the page cache is dropped (when permitted: we are root here). For each
command the wall time, CPU time and peak memory of the tool's processes are recorded
(``measure.py``), the repository's size after it, and on S3 the requests and bytes the server
counted for it (``traffic.py``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dataset
import report
import treecheck
from freshfs import FileSystem
from measure import Command, CommandFailed, disk_usage, drop_caches, run_measured
from tools import TOOLS, S3Location, Tool, ToolUnavailable
from traffic import Counter

__all__ = ["Bench", "ObjectStore", "Part", "apply_v2", "host", "log"]

_START = time.monotonic()


def log(message: str) -> None:
    print(f"bench [{time.monotonic() - _START:5.0f} s]: {message}", file=sys.stderr, flush=True)


def host() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "hostname": platform.node(),
    }


@dataclass(frozen=True)
class Part:
    """What one part of the run measures."""

    name: str  # engine | s3 | smallfiles-local | smallfiles-s3
    title: str
    data: dataset.DataSet
    on_s3: bool
    changes: bool  # v1 -> v2 between the backups; False: the second backup is an unchanged re-run
    tools: list[str]


@dataclass(frozen=True)
class ObjectStore:
    """The part's S3 bucket, a client to size repositories and the server's counter."""

    location: S3Location
    client: Any  # a boto3 S3 client
    counter: Counter


def apply_v2(data: dataset.DataSet, source: Path) -> None:
    """Change the working copy from v1 to v2 in place, as an application would.

    Modified files are rewritten through the existing inode (mtime and ctime change, the inode
    stays); unchanged files are not touched at all.
    """
    changes = data.manifest.changes
    for path in changes.deleted:
        (source / path).unlink()
    for path in [*changes.modified, *changes.added]:
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data.path("v2") / path, source / path)


class Bench:
    """One part's run: its work directory, the tools (one instance per round) and results."""

    def __init__(
        self,
        args: argparse.Namespace,
        part: Part,
        fs: FileSystem,
        store: ObjectStore | None = None,
    ) -> None:
        self.args = args
        self.part = part
        self.data = part.data
        self.work = Path(fs.path)
        self.store = store
        self.source = self.work / "source"
        self.tools: dict[str, list[Tool]] = {}  # name -> one instance per round
        self.failed: dict[str, str] = {}  # tool -> the command that failed, and why
        self.restored: list[Path] = []  # verified restores, deleted once all tools restored
        self.mismatches: dict[str, str] = {}  # tool -> how its restore differs from the source
        m = part.data.manifest
        self.results = report.Results(
            part=part.name,
            title=part.title,
            second_backup="incremental" if part.changes else "unchanged re-run",
            filesystem=fs,
            started=datetime.now(UTC),
            host=host(),
            dataset=report.DataSetInfo(
                scale=m.scale,
                seed=m.seed,
                generator_version=m.generator_version,
                v1_bytes=m.v1.total_bytes,
                v1_files=len(m.v1.files),
                v2_bytes=m.v2.total_bytes,
                v2_files=len(m.v2.files),
                edited_bytes=m.changes.edited_bytes,
            ),
            cache_dropped=True,
            tools=[],
        )

    def select_tools(self, explicit: bool) -> None:
        s3 = self.store.location if self.store else None
        for name in self.part.tools:
            rounds = [
                TOOLS[name](self.work / name / f"round-{n + 1}", s3)
                for n in range(self.args.rounds)
            ]
            try:
                version = rounds[0].version()
            except ToolUnavailable as e:
                if explicit:
                    raise
                log(f"{name} skipped: {e}")
                self.results.skipped[name] = str(e)
                continue
            self.tools[name] = rounds
            self.results.tools.append(
                report.ToolRun(name=name, version=version, settings=rounds[0].settings)
            )

    def _repo_size(self, tool: Tool) -> tuple[int, int]:
        """(sum of file or object sizes, allocated bytes) of the tool's repository."""
        if self.store is None:
            return disk_usage(tool.repo)
        total = 0
        pages = self.store.client.get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=self.store.location.bucket, Prefix=tool.prefix + "/"):
            total += sum(int(o["Size"]) for o in page.get("Contents", []))
        return total, total

    def _command(self, tool: Tool, step: str, target: Path) -> Command:
        if step == "init":
            return tool.init()
        if step == "full":
            return tool.full(self.source)
        if step == "incremental":
            return tool.incremental(self.source)
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        return tool.restore(target)

    def _run(self, tool: Tool, step: str, round_no: int = 0) -> None:
        if tool.name in self.failed:
            return
        basis = {
            "full": self.results.dataset.v1_bytes,
            "incremental": self.results.dataset.v2_bytes,
            "restore": self.results.dataset.v2_bytes,
        }.get(step)
        target = self.work / "restore" / f"{tool.name}-{round_no}"
        command = self._command(tool, step, target)
        dropped = True
        if basis is not None:  # a timed step
            dropped = drop_caches() if self.args.drop_caches else False
        self.results.cache_dropped &= dropped
        before = self.store.counter.read() if self.store else None
        try:
            log_prefix = self.work / "logs" / f"{tool.name}-{step}-{round_no}"
            measured = run_measured(command, log_prefix, 3600)
            summary = tool.record(step, measured.stdout)
        except (CommandFailed, RuntimeError) as e:
            log(f"{tool.name} {step} FAILED: {e}")
            self.failed[tool.name] = f"{step} failed: {e}"
            return
        traffic = self.store.counter.read() - before if self.store and before else None
        apparent, allocated = self._repo_size(tool)
        result = report.Step(
            seconds=measured.seconds,
            mb_per_s=basis / 1e6 / measured.seconds if basis is not None else None,
            user_seconds=measured.user_seconds,
            system_seconds=measured.system_seconds,
            peak_rss_bytes=measured.peak_rss_bytes,
            processes=measured.processes,
            repo_bytes=apparent,
            repo_allocated_bytes=allocated,
            # The S3 server's CPU is the tool's doing; it is reported with the requests.
            others_cpu_seconds=max(
                measured.others_cpu_seconds - (traffic.server_cpu_seconds if traffic else 0.0),
                0.0,
            ),
            cache_dropped=dropped,
            summary=summary,
            traffic=traffic,
        )
        run = next(r for r in self.results.tools if r.name == tool.name)
        if step in report.TIMED:
            run.rounds.setdefault(step, []).append(result)
            run.steps[step] = report.median_round(run.rounds[step])
        else:
            run.steps[step] = result
        rate = f", {result.mb_per_s:.1f} MB/s" if result.mb_per_s is not None else ""
        requests = f", {traffic.describe()}" if traffic is not None else ""
        log(
            f"{self.part.name}: {tool.name} {step} (round {round_no + 1}): "
            f"{result.seconds:.2f} s{rate}, peak memory {result.peak_rss_bytes / 1e6:.0f} MB, "
            f"repo {apparent / 1e6:.1f} MB{requests}"
        )
        if step == "restore":
            self._verify(tool, target, run)

    def _verify(self, tool: Tool, target: Path, run: report.ToolRun) -> None:
        try:
            root = treecheck.locate(target, self.source, self.data.manifest.v2)
            treecheck.verify(root, self.data.manifest.v2)
        except treecheck.RestoreMismatch as e:  # fails the run, after the other tools
            log(f"{tool.name} restore FAILED: {e}")
            self.mismatches[tool.name] = str(e)
            return
        run.restore_verified = tool.name not in self.mismatches  # every round so far
        log(f"{tool.name} restore verified: every file equals the source")
        # Deleted only after every tool restored: freeing many inodes right before the
        # next tool's restore would hand it the file system's allocator cost.
        self.restored.append(target)

    def _each_round(self, *steps: str) -> None:
        for n in range(self.args.rounds):
            for rounds in self.tools.values():
                for step in steps:
                    self._run(rounds[n], step, n)

    def run(self) -> None:
        """Every timed step in rounds, every tool once per round."""
        log(f"{self.part.name}: copying v1 to the working copy {self.source}")
        subprocess.run(["cp", "-a", f"{self.data.path('v1')}/.", str(self.source)], check=True)
        self._each_round("init", "full")
        if self.part.changes:
            log(f"{self.part.name}: changing the working copy to v2")
            apply_v2(self.data, self.source)
            treecheck.verify(self.source, self.data.manifest.v2)
        self._each_round("incremental")
        self._each_round("restore")
        for target in self.restored:
            shutil.rmtree(target, ignore_errors=True)

    def finish(self) -> report.Results:
        results = self.results
        results.finished = datetime.now(UTC)
        for name, why in self.failed.items():
            results.notes.append(f"{name} FAILED, its figures are incomplete: {why}")
        for name, why in self.mismatches.items():
            results.notes.append(f"{name}: RESTORE MISMATCH, its figures are invalid: {why}")
        if results.filesystem and results.filesystem.kind != "ext4 image":
            results.notes.append(f"File system: {results.filesystem.describe()}.")
        results.targets = report.evaluate_targets(results)
        if not results.cache_dropped:
            results.notes.append(
                "The page cache was not dropped before every timed step"
                + (" (--no-drop-caches)" if not self.args.drop_caches else " (needs root)")
                + ": tools may have read from RAM."
            )
        busy = report.disturbed_steps(results)
        if busy:
            results.notes.append(
                "Other processes competed for the CPU during "
                + ", ".join(busy)
                + ": those figures are noisy (slower than on an idle machine)."
            )
        return results
