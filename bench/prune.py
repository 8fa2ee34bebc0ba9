"""Prune time for a repository of 100 snapshots.

Builds a repository (``file://`` in a temporary directory, or with ``--store s3`` a bucket
of a SeaweedFS started on a free loopback port, as the tests do) holding ``--snapshots``
daily snapshots (default 100) of a data set of ``--mib`` MiB in ``--files`` files of random
(incompressible) bytes, where each day replaces ``--churn`` percent of the files. Then it
runs, each as a real ``safehold`` process, timed:

* ``forget --keep-last 7 --keep-weekly 4 --keep-monthly 3`` (removes about 86 snapshots);
* ``prune --dry-run`` and ``prune`` (``--grace 0``: nothing else writes here);
* ``verify`` (structure), which must be clean.

It prints a table (and with ``--json FILE`` writes the figures): repository size before
and after, packs deleted and repacked, bytes freed, the wall time of each step and the
peak memory (max RSS) of the prune process. Run it on its own:
``.venv/bin/python bench/prune.py`` (about a minute on 2 cores with the defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))

from safehold.engine import BackupOptions, backup_paths
from safehold.repo import Config, Repository
from safehold.storage import open_storage

__all__ = ["main"]

MIB = 1024 * 1024
PASSWORD = "bench prune"


@dataclass
class Figures:
    store: str
    snapshots: int
    kept: int
    data_mib: int
    repo_mib_before: float
    repo_mib_after: float
    packs_before: int
    packs_deleted: int
    packs_repacked: int
    packs_written: int
    freed_mib: float
    backups_s: float
    forget_s: float
    prune_dry_run_s: float
    prune_s: float
    prune_max_rss_mib: float
    verify_s: float


def _cli(env: dict[str, str], *args: str) -> tuple[dict[str, Any], float, float]:
    """Run ``safehold ARGS --json``; return its summary, seconds and the child's max RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "safehold", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if done.returncode != 0:
        raise SystemExit(f"safehold {' '.join(args)} failed:\n{done.stderr}")
    summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    # ru_maxrss of children is the largest child so far: it only tells when it grew.
    return summary, seconds, max(rss, before) / 1024


def _size(repo: Repository) -> tuple[int, int]:
    packs = total = 0
    for info in repo.storage.list(""):
        total += info.size
        packs += info.name.startswith("data/")
    return packs, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--snapshots", type=int, default=100)
    parser.add_argument("--mib", type=int, default=32, help="size of the data set (default 32)")
    parser.add_argument("--files", type=int, default=64, help="files in it (default 64)")
    parser.add_argument("--churn", type=float, default=5.0, help="%% of files replaced a day")
    parser.add_argument("--store", choices=("file", "s3"), default="file")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    rnd = random.Random(7)
    store = None
    with tempfile.TemporaryDirectory(prefix="safehold-bench-prune-") as tmp:
        work = Path(tmp)
        try:
            if args.store == "s3":
                from testground.objectstores import start_store

                store = start_store("s3", work / "s3")
                store.make_bucket("prune")
                url, options = store.url("prune", "repo"), dict(store.options)
            else:
                url, options = (work / "repo").as_uri(), {}
            repo = Repository.init(open_storage(url, options), PASSWORD, Config.new())
            data = work / "data"
            data.mkdir()
            size = args.mib * MIB // args.files
            for i in range(args.files):
                (data / f"f{i:04d}").write_bytes(rnd.randbytes(size))
            first = datetime(2026, 1, 1, 2, tzinfo=UTC)
            start = time.perf_counter()
            for day in range(args.snapshots):
                if day:
                    for i in rnd.sample(
                        range(args.files), max(1, round(args.files * args.churn / 100))
                    ):
                        (data / f"f{i:04d}").write_bytes(rnd.randbytes(size))
                when = first + timedelta(days=day)
                backup_paths(repo, [str(data)], BackupOptions(source="bench", time=when))
            backups_s = time.perf_counter() - start
            packs_before, bytes_before = _size(repo)
            print(
                f"prune bench: {args.snapshots} snapshots, {bytes_before / MIB:.0f} MiB in "
                f"{packs_before} packs ({backups_s:.0f} s of backups)",
                file=sys.stderr,
                flush=True,
            )
            env = {**os.environ, "SAFEHOLD_REPOSITORY": url, "SAFEHOLD_PASSWORD": PASSWORD}
            extra = [a for k, v in options.items() for a in ("-o", f"{k}={v}")]
            forget, forget_s, _ = _cli(
                env,
                "forget",
                *extra,
                "--keep-last",
                "7",
                "--keep-weekly",
                "4",
                "--keep-monthly",
                "3",
            )
            _, dry_s, _ = _cli(env, "prune", *extra, "--dry-run", "--grace", "0")
            pruned, prune_s, rss = _cli(env, "prune", *extra, "--grace", "0")
            verify, verify_s, _ = _cli(env, "verify", *extra)
            if not verify.get("ok"):
                raise SystemExit(f"the pruned repository does not verify: {verify}")
            _, bytes_after = _size(repo)
            figures = Figures(
                store=args.store,
                snapshots=args.snapshots,
                kept=int(forget["keep"]),
                data_mib=args.mib,
                repo_mib_before=bytes_before / MIB,
                repo_mib_after=bytes_after / MIB,
                packs_before=packs_before,
                packs_deleted=int(pruned["packs_deleted"]),
                packs_repacked=int(pruned["packs_repacked"]),
                packs_written=int(pruned["packs_written"]),
                freed_mib=int(pruned["bytes_freed"]) / MIB,
                backups_s=backups_s,
                forget_s=forget_s,
                prune_dry_run_s=dry_s,
                prune_s=prune_s,
                prune_max_rss_mib=rss,
                verify_s=verify_s,
            )
        finally:
            if store is not None:
                store.stop()
    f = figures
    print(
        "| store | snapshots | kept | repo MiB before | after | packs | deleted | repacked "
        "| freed MiB | forget s | prune dry-run s | prune s | prune max RSS MiB |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        f"| {f.store} | {f.snapshots} | {f.kept} | {f.repo_mib_before:.0f} | "
        f"{f.repo_mib_after:.0f} | {f.packs_before} | {f.packs_deleted} | {f.packs_repacked} | "
        f"{f.freed_mib:.0f} | {f.forget_s:.2f} | {f.prune_dry_run_s:.2f} | {f.prune_s:.2f} | "
        f"{f.prune_max_rss_mib:.0f} |"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(figures), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
