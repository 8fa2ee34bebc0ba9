"""`make bench`: Safehold's backup engine against restic and borg, on the same data, in one run.

The procedure is the same for every tool, step by step, so no tool gets a warmer cache or a
friendlier file system state than another:

1. one working copy of the data set's v1 is made (``cp -a``);
2. each tool initialises its repository, then backs up the working copy in full;
3. the working copy is changed in place to v2 (files rewritten, added and deleted; unchanged
   files keep their inode and times, as on a real volume), and checked against v2's manifest;
4. each tool makes its incremental backup of the working copy;
5. each tool restores that snapshot; the restore is checked file by file against v2's checksums
   and a mismatch fails the run.

Steps 2, 4 and 5 run in rounds (``--rounds``, default 3): every tool once per round, each full
backup into a new repository, each incremental from a copy of the tool's state after its full
backup (repository and caches), each restore into a new directory. The report gives each
tool's median round and lists every round.

Before every timed step the page cache is dropped (when permitted: we are root here). For each
command the wall time, CPU time and peak RSS of the tool's process (``os.wait4``) are recorded,
and the repository's size after it. Results go to ``bench/results/`` as JSON and Markdown.

After the engine benchmark, ``bench/storage.py`` (the storage throughput benchmark) runs when it
exists, unless ``--only engine``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import dataset
import report
import treecheck
from measure import CommandFailed, disk_usage, drop_caches, run_measured
from tools import TOOLS, Tool, ToolUnavailable

__all__ = ["main"]

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
_WORK_MARK = ".safehold-bench-work"


_START = time.monotonic()


def _log(message: str) -> None:
    print(f"bench [{time.monotonic() - _START:5.0f} s]: {message}", file=sys.stderr, flush=True)


def _host() -> dict[str, str]:
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
    """One run of the engine benchmark: the work directory, the tools and the results so far."""

    def __init__(self, args: argparse.Namespace, data: dataset.DataSet, work: Path) -> None:
        self.args = args
        self.data = data
        self.work = work
        self.source = work / "source"
        self.tools: list[Tool] = []
        self.failed: dict[str, str] = {}  # tool -> the command that failed, and why
        self.restored: list[Path] = []  # verified restores, deleted once all tools restored
        self.mismatches: dict[str, str] = {}  # tool -> how its restore differs from the source
        m = data.manifest
        self.results = report.Results(
            started=datetime.now(UTC),
            host=_host(),
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

    def select_tools(self, names: list[str], explicit: bool) -> None:
        for name in names:
            tool = TOOLS[name](self.work / name)
            try:
                version = tool.version()
            except ToolUnavailable as e:
                if explicit:
                    raise
                _log(f"{name} skipped: {e}")
                self.results.skipped[name] = str(e)
                continue
            self.tools.append(tool)
            self.results.tools.append(
                report.ToolRun(name=name, version=version, settings=tool.settings)
            )

    def _run(self, tool: Tool, step: str, round_no: int = 0) -> None:
        if tool.name in self.failed:
            return
        basis = {
            "full": self.results.dataset.v1_bytes,
            "incremental": self.results.dataset.v2_bytes,
            "restore": self.results.dataset.v2_bytes,
        }.get(step)
        target = self.work / "restore" / f"{tool.name}-{round_no}"
        if step == "init":
            command = tool.init()
        elif step == "full":
            command = tool.full(self.source)
        elif step == "incremental":
            command = tool.incremental(self.source)
        else:
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            command = tool.restore(target)
        dropped = True
        if basis is not None:  # a timed step
            dropped = drop_caches() if self.args.drop_caches else False
        self.results.cache_dropped &= dropped
        try:
            log = self.work / "logs" / f"{tool.name}-{step}-{round_no}"
            measured = run_measured(command, log, 3600)
            summary = tool.record(step, measured.stdout)
        except (CommandFailed, RuntimeError) as e:
            _log(f"{tool.name} {step} FAILED: {e}")
            self.failed[tool.name] = f"{step} failed: {e}"
            return
        apparent, allocated = disk_usage(tool.repo)
        result = report.Step(
            seconds=measured.seconds,
            mb_per_s=basis / 1e6 / measured.seconds if basis is not None else None,
            user_seconds=measured.user_seconds,
            system_seconds=measured.system_seconds,
            peak_rss_bytes=measured.peak_rss_bytes,
            processes=measured.processes,
            repo_bytes=apparent,
            repo_allocated_bytes=allocated,
            others_cpu_seconds=measured.others_cpu_seconds,
            cache_dropped=dropped,
            summary=summary,
        )
        run = next(r for r in self.results.tools if r.name == tool.name)
        if step in report.TIMED:
            run.rounds.setdefault(step, []).append(result)
            run.steps[step] = report.median_round(run.rounds[step])
        else:
            run.steps[step] = result
        rate = f", {result.mb_per_s:.1f} MB/s" if result.mb_per_s is not None else ""
        _log(
            f"{tool.name} {step} (round {round_no + 1}): {result.seconds:.2f} s{rate}, "
            f"peak RSS {result.peak_rss_bytes / 1e6:.0f} MB, repo {apparent / 1e6:.1f} MB"
        )
        if step == "restore":
            try:
                root = treecheck.locate(target, self.source, self.data.manifest.v2)
                treecheck.verify(root, self.data.manifest.v2)
            except treecheck.RestoreMismatch as e:  # fails the run, after the other tools
                _log(f"{tool.name} restore FAILED: {e}")
                self.mismatches[tool.name] = str(e)
                return
            run.restore_verified = tool.name not in self.mismatches  # every round so far
            _log(f"{tool.name} restore verified: every file equals the source")
            # Deleted only after every tool restored: freeing 25k inodes right before the
            # next tool's restore would hand it the file system's allocator cost.
            self.restored.append(target)

    def run(self) -> None:
        """Every timed step in rounds, every tool once per round, so that a busy moment of
        the machine falls on one round of one tool rather than decides a ratio."""
        rounds = self.args.rounds
        _log(f"copying v1 to the working copy {self.source}")
        subprocess.run(["cp", "-a", f"{self.data.path('v1')}/.", str(self.source)], check=True)
        for n in range(rounds):
            for tool in self.tools:
                if n:  # a full backup into a new, empty repository each round
                    _reset(tool.workdir)
                self._run(tool, "init", n)
                self._run(tool, "full", n)
        for tool in self.tools:  # the state every incremental round starts from
            _copy_tree(tool.workdir, _after_full(tool.workdir))
        _log("changing the working copy to v2")
        apply_v2(self.data, self.source)
        treecheck.verify(self.source, self.data.manifest.v2)
        for n in range(rounds):
            for tool in self.tools:
                if n:
                    _reset(tool.workdir)
                    _copy_tree(_after_full(tool.workdir), tool.workdir)
                self._run(tool, "incremental", n)
        for n in range(rounds):
            for tool in self.tools:
                self._run(tool, "restore", n)
        for target in self.restored:
            shutil.rmtree(target, ignore_errors=True)

    def finish(self) -> report.Results:
        results = self.results
        results.finished = datetime.now(UTC)
        for name, why in self.failed.items():
            results.notes.append(f"{name} FAILED, its figures are incomplete: {why}")
        for name, why in self.mismatches.items():
            results.notes.append(f"{name}: RESTORE MISMATCH, its figures are invalid: {why}")
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


def _after_full(workdir: Path) -> Path:
    return workdir.with_name(workdir.name + "-after-full")


def _reset(workdir: Path) -> None:
    """Empty a tool's directory (repository, caches, home) for a new round."""
    shutil.rmtree(workdir)
    (workdir / "home").mkdir(parents=True)


def _copy_tree(source: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    subprocess.run(["cp", "-a", str(source), str(dest)], check=True)


def _write(results: report.Results, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"engine-{results.started:%Y%m%dT%H%M%SZ}-scale-{results.dataset.scale:g}"
    json_path, md_path = directory / f"{stem}.json", directory / f"{stem}.md"
    json_path.write_text(results.model_dump_json(indent=2))
    md_path.write_text(report.markdown(results))
    shutil.copyfile(json_path, directory / "latest.json")
    shutil.copyfile(md_path, directory / "latest.md")
    return json_path, md_path


def run_engine(args: argparse.Namespace) -> int:
    _log(f"data set at scale {args.scale:g}, seed {args.seed} (generated once, then cached)")
    data = dataset.ensure(args.scale, args.seed)
    work: Path = args.workdir or dataset.cache_root().parent / "bench-work"
    if work.exists() and any(work.iterdir()) and not (work / _WORK_MARK).exists():
        _log(f"--workdir {work} is not empty and not a benchmark's: choose an empty directory")
        return 2
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / _WORK_MARK).touch()  # lets the next run wipe this directory safely
    bench = Bench(args, data, work)
    names = args.tools.split(",") if args.tools else list(TOOLS)
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        _log(f"unknown tool(s) {', '.join(unknown)} in --tools; choose from {', '.join(TOOLS)}")
        return 2
    try:
        bench.select_tools(names, explicit=bool(args.tools))
    except ToolUnavailable as e:
        _log(f"--tools asks for a tool that cannot run: {e}")
        return 2
    bench.run()
    results = bench.finish()
    json_path, md_path = _write(results, args.results_dir)
    print(report.markdown(results))
    _log(f"results: {json_path} and {md_path}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        _log(f"kept the work directory {work}")
    for name, why in {**bench.failed, **bench.mismatches}.items():
        _log(f"FAILED: {name}: {why}")
    return 1 if bench.failed or bench.mismatches else 0


#: The other benchmarks, each a script of its own beside this one, run after the engine's.
SCRIPTS = ("storage", "prune", "replicate")
#: Benchmarks run only when ``--only`` names them: the operator's starts a test-ground cluster
#: (``make cluster``) and takes about ten minutes. Its file is not ``operator.py``, which would
#: shadow the standard library's ``operator`` for every script of this directory.
ON_REQUEST = {"operator": "operator_scale"}


def run_script(name: str, extra: str, results_dir: Path) -> int:
    """Run ``bench/NAME.py`` (all but storage also write ``results/NAME.json``)."""
    script = BENCH_DIR / f"{ON_REQUEST.get(name, name)}.py"
    argv = [sys.executable, str(script), *shlex.split(extra)]
    if name != "storage" and "--json" not in extra:
        results_dir.mkdir(parents=True, exist_ok=True)
        argv += ["--json", str(results_dir / f"{name}.json")]
    _log(f"running {script.name} {extra}")
    return subprocess.run(argv, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--scale", type=float, default=1.0, help="data set size, 1.0 = ~1 GiB")
    parser.add_argument("--seed", type=int, default=dataset.DEFAULT_SEED)
    parser.add_argument(
        "--tools", help=f"comma-separated subset of {','.join(TOOLS)} (default: all that run)"
    )
    parser.add_argument(
        "--only", choices=("engine", *SCRIPTS, *ON_REQUEST), help="run one benchmark only"
    )
    parser.add_argument("--workdir", type=Path, help="default: $SAFEHOLD_CACHE/bench-work")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--keep", action="store_true", help="keep repositories and logs")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="run every timed step this many times per tool and report the median (default 3)",
    )
    parser.add_argument(
        "--no-drop-caches",
        dest="drop_caches",
        action="store_false",
        help="do not empty the page cache before timed steps (for tests: it slows the machine)",
    )
    for name in (*SCRIPTS, *ON_REQUEST):
        parser.add_argument(f"--{name}-args", default="", help=f"arguments for bench/{name}.py")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    code = 0
    if args.only in (None, "engine"):
        code = run_engine(args)
    for name in SCRIPTS:
        if args.only in (None, name):
            extra = getattr(args, f"{name}_args")
            code = run_script(name, extra, args.results_dir) or code
    for name in ON_REQUEST:
        if args.only == name:
            code = run_script(name, getattr(args, f"{name}_args"), args.results_dir) or code
    return code


if __name__ == "__main__":
    sys.exit(main())
