"""`make bench`: Safehold's backup engine against restic (and borg), on the same data, in one run.

The engine benchmark has parts, each on a fresh file system made for it (``freshfs.py``), each
with the procedure of ``engine.py`` (tools alternating, medians of three rounds, every restore
verified against the data set's manifest):

- ``engine``: the mixed data set (``dataset.py``, ~1 GiB at scale 1) on local repositories,
  restic, borg and Safehold: full, incremental, restore;
- ``s3``: the same with restic's and Safehold's repositories on one local S3 server (SeaweedFS),
  at ``--scale`` unless ``--s3-scale`` says otherwise, with the requests and bytes the server
  counted per command (``traffic.py``);
- ``smallfiles``: 100,000 files of 0 to 2 KiB in 100 directories (``smallset.py``): full,
  unchanged re-run and restore, on a local repository and on S3, restic against Safehold.

The report (``report.py``) has a section per part and one table of the targets of issue 19.
Results go to ``bench/results/`` as JSON and Markdown. After the engine benchmark, the other
benchmarks (``storage.py``, ``prune.py``, ``replicate.py``) run unless ``--only`` names one.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))

import dataset
import freshfs
import report
import smallset
from engine import Bench, ObjectStore, Part, log
from tools import TOOLS, S3Location, ToolUnavailable
from traffic import start_counted_s3

__all__ = ["main"]

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
_WORK_MARK = ".safehold-bench-work"
#: The parts of the engine benchmark, in the order they run (``--only smallfiles`` runs both
#: small-files parts).
PARTS = ("engine", "s3", "smallfiles")
_PAIR = ("restic", "safehold")  # the small-files parts compare these two


def _allocated(manifest: dataset.VersionManifest) -> int:
    """Bytes the version takes on ext4 (4 KiB blocks, one inode's worth for an empty file)."""
    return sum(max(-(-e.size // 4096), 1) * 4096 for e in manifest.files.values())


def image_size(data: dataset.DataSet, tools: int, rounds: int) -> tuple[int, int]:
    """The fresh file system's size and inodes for a part: the working copy, every round's
    repository (at most the data, uncompressed) and every round's restore, which are all kept
    until the part ends; inodes for the files and directories of all those copies, with a
    fifth more and 50,000 for repositories, caches and the S3 server's files."""
    m = data.manifest
    v1, v2 = _allocated(m.v1), _allocated(m.v2)
    repos = tools * rounds * (m.v1.total_bytes + m.changes.edited_bytes)
    entries = max(len(m.v1.files), len(m.v2.files))
    entries += len({str(Path(p).parent) for p in m.v2.files})
    inodes = int((1 + tools * rounds) * entries * 1.2) + 50_000
    return freshfs.image_bytes(max(v1, v2), tools * rounds * v2, repos), inodes


def _parts(args: argparse.Namespace) -> list[Part]:
    wanted = [args.only] if args.only in PARTS else list(PARTS)
    chosen = args.tools.split(",") if args.tools else list(TOOLS)
    # restic against Safehold, where borg cannot go (S3: it says so) or would only add time.
    pair = [n for n in chosen if n in _PAIR]
    parts: list[Part] = []
    if "engine" in wanted:
        data = dataset.ensure(args.scale, args.seed)
        parts.append(
            Part("engine", "Mixed data set, local repositories", data, False, True, chosen)
        )
    if "s3" in wanted:
        scale = args.s3_scale or args.scale
        data = dataset.ensure(scale, args.seed)
        parts.append(Part("s3", "Mixed data set, repositories on S3", data, True, True, chosen))
    if "smallfiles" in wanted:
        data = smallset.ensure(args.smallfiles_scale or args.scale, args.seed)
        for on_s3, where in ((False, "a local repository"), (True, "S3")):
            name = "smallfiles-s3" if on_s3 else "smallfiles-local"
            title = f"Many small files, {where}"
            parts.append(Part(name, title, data, on_s3, False, chosen if on_s3 else pair))
    return parts


def _object_store(fs: freshfs.FileSystem) -> tuple[Any, ObjectStore]:
    """Start the part's S3 server (its data on the part's file system) with one bucket."""
    store, counter = start_counted_s3(Path(fs.path) / "s3-server")
    store.make_bucket("bench")
    options = store.options
    location = S3Location(
        endpoint=store.endpoint,
        bucket="bench",
        access_key_id=options["access_key_id"],
        secret_access_key=options["secret_access_key"],
        region=options["region"],
    )
    return store, ObjectStore(location=location, client=store.s3_client(), counter=counter)


def run_part(args: argparse.Namespace, part: Part, work: Path) -> tuple[report.Results, bool]:
    """Run one part on its own fresh file system; (its results, whether it failed)."""
    size, inodes = image_size(part.data, len(part.tools), args.rounds)
    with freshfs.fresh(work / part.name, size, inodes, args.fs) as fs:
        log(f"{part.name}: working on {fs.describe()}")
        server, store = _object_store(fs) if part.on_s3 else (None, None)
        try:
            bench = Bench(args, part, fs, store)
            bench.select_tools(explicit=bool(args.tools) and not part.on_s3)
            bench.run()
            results = bench.finish()
        finally:
            if server is not None:
                server.stop()
        if args.keep and (Path(fs.path) / "logs").is_dir():
            kept = work / f"{part.name}-logs"
            shutil.copytree(Path(fs.path) / "logs", kept, dirs_exist_ok=True)
            log(f"kept the tools' logs in {kept}")
    for name, why in {**bench.failed, **bench.mismatches}.items():
        log(f"FAILED: {name}: {why}")
    return results, bool(bench.failed or bench.mismatches)


def _write(parts: list[report.Results], directory: Path) -> Path:
    """Every part as JSON (``<part>-<time>-scale-<s>.json``, ``latest-<part>.json``; the first
    part also as ``latest.json``) and the whole report as Markdown (``latest.md``)."""
    directory.mkdir(parents=True, exist_ok=True)
    for n, results in enumerate(parts):
        stem = f"{results.part}-{results.started:%Y%m%dT%H%M%SZ}-scale-{results.dataset.scale:g}"
        (directory / f"{stem}.json").write_text(results.model_dump_json(indent=2))
        shutil.copyfile(directory / f"{stem}.json", directory / f"latest-{results.part}.json")
        if n == 0:
            shutil.copyfile(directory / f"{stem}.json", directory / "latest.json")
    first = parts[0]
    md_path = directory / f"engine-{first.started:%Y%m%dT%H%M%SZ}-scale-{first.dataset.scale:g}.md"
    md_path.write_text(report.run_markdown(parts))
    shutil.copyfile(md_path, directory / "latest.md")
    return md_path


def _prepare_workdir(work: Path) -> bool:
    """Empty the work directory (only a benchmark's: it bears the mark), unmounting file
    systems a killed run left behind; False when it is someone else's directory."""
    if work.exists() and any(work.iterdir()) and not (work / _WORK_MARK).exists():
        log(f"--workdir {work} is not empty and not a benchmark's: choose an empty directory")
        return False
    for mountpoint in sorted(freshfs.mounted_under(work), reverse=True):
        log(f"unmounting {mountpoint}, left behind by an earlier run")
        freshfs.unmount(mountpoint)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / _WORK_MARK).touch()  # lets the next run wipe this directory safely
    return True


def run_engine(args: argparse.Namespace) -> int:
    chosen = args.tools.split(",") if args.tools else list(TOOLS)
    unknown = [n for n in chosen if n not in TOOLS]
    if unknown:
        log(f"unknown tool(s) {', '.join(unknown)} in --tools; choose from {', '.join(TOOLS)}")
        return 2
    work: Path = args.workdir or dataset.cache_root().parent / "bench-work"
    if not _prepare_workdir(work):
        return 2
    log(f"data sets at scale {args.scale:g}, seed {args.seed} (generated once, then cached)")
    done: list[report.Results] = []
    failed = False
    try:
        for part in _parts(args):
            results, part_failed = run_part(args, part, work)
            done.append(results)
            failed |= part_failed
    except ToolUnavailable as e:
        log(f"--tools asks for a tool that cannot run: {e}")
        return 2
    finally:
        if done:
            md_path = _write(done, args.results_dir)
            print(report.run_markdown(done))
            log(f"results: {md_path} and latest-<part>.json beside it")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so file systems are unmounted and servers stopped on SIGTERM


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
    log(f"running {script.name} {extra}")
    return subprocess.run(argv, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--scale", type=float, default=1.0, help="data set size, 1.0 = ~1 GiB")
    parser.add_argument("--seed", type=int, default=dataset.DEFAULT_SEED)
    parser.add_argument(
        "--tools", help=f"comma-separated subset of {','.join(TOOLS)} (default: all that run)"
    )
    parser.add_argument(
        "--only", choices=(*PARTS, *SCRIPTS, *ON_REQUEST), help="run one benchmark (part) only"
    )
    parser.add_argument("--s3-scale", type=float, help="the S3 part's scale (default: --scale)")
    parser.add_argument(
        "--smallfiles-scale", type=float, help="the small-files parts' scale (default: --scale)"
    )
    parser.add_argument(
        "--fs", type=Path, help="work in this directory instead of a fresh file system per part"
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
    signal.signal(signal.SIGTERM, _interrupt)
    code = 0
    if args.only in (None, *PARTS):
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
