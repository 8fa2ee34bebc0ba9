"""Replication throughput between local object-store servers, streamed and server side.

Starts SeaweedFS (S3) and fake-gcs-server (GCS) on free loopback ports, as the tests do
(plus Azurite with ``--targets`` including ``azure``), backs up ``--mib`` MiB of random data
(incompressible, so the bytes moved equal the bytes backed up) into a repository in a
SeaweedFS bucket, then replicates it to each target and reports MiB/s of pack data:

* ``gcs``: S3 -> GCS, two servers, every object streamed through this process and hashed;
* ``s3-same``: S3 bucket -> another bucket of the same SeaweedFS: server-side CopyObject,
  each object read back from the site and hashed;
* ``azure``: S3 -> Azurite, streamed.

Every site is then opened and verified (structure), and a second run over it must copy
nothing. Prints a table; with ``--json`` also writes the figures there. Run it on its own as
``.venv/bin/python bench/replicate.py``. The figures measure the loopback emulators on this
machine as much as Safehold.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))

from safehold.engine import BackupOptions, backup_paths, verify_repository
from safehold.engine.replicate import ReplicateOptions, replicate
from safehold.repo import Config, Repository
from safehold.storage import Storage, open_storage
from testground.objectstores import RunningStore, start_store

__all__ = ["main"]

MIB = 1024 * 1024
PASSWORD = "bench replicate"
TARGETS = ("gcs", "s3-same", "azure")


@dataclass
class Figure:
    target: str
    mode: str
    jobs: int
    packs: int
    mib: float
    seconds: float
    mib_s: float


def _make_data(root: Path, mib: int) -> None:
    root.mkdir(parents=True)
    for i in range(max(1, mib // 8)):
        (root / f"part-{i:04d}.bin").write_bytes(os.urandom(min(8, mib) * MIB))


def _store(provider: str, workdir: Path, stores: dict[str, RunningStore]) -> RunningStore:
    if provider not in stores:
        stores[provider] = start_store(provider, workdir / provider)
    return stores[provider]


def _site(target: str, workdir: Path, stores: dict[str, RunningStore]) -> Storage:
    provider = {"gcs": "gcs", "s3-same": "s3", "azure": "azure"}[target]
    store = _store(provider, workdir, stores)
    bucket = f"site-{target}"
    store.make_bucket(bucket)
    return open_storage(store.url(bucket, "replica"), store.options)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--mib", type=int, default=256, help="data backed up (default 256)")
    parser.add_argument("--targets", default="gcs,s3-same", help=f"comma-sep. of {TARGETS}")
    parser.add_argument("--jobs", type=int, default=4, help="parallel transfers (default 4)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target(s) {', '.join(sorted(unknown))}; use {', '.join(TARGETS)}")

    figures: list[Figure] = []
    stores: dict[str, RunningStore] = {}
    with tempfile.TemporaryDirectory(prefix="safehold-bench-replicate-") as tmp:
        work = Path(tmp)
        try:
            s3 = _store("s3", work, stores)
            s3.make_bucket("primary")
            primary = Repository.init(
                open_storage(s3.url("primary", "repo"), s3.options), PASSWORD, Config.new()
            )
            _make_data(work / "data", args.mib)
            backup_paths(primary, [str(work / "data")], BackupOptions(source="bench"))
            pack_bytes = sum(info.size for info in primary.storage.list("data/"))
            print(
                f"replicate bench: primary on SeaweedFS, {pack_bytes / MIB:.0f} MiB of packs",
                file=sys.stderr,
                flush=True,
            )
            for target in targets:
                site = _site(target, work, stores)
                options = ReplicateOptions(jobs=args.jobs)
                start = time.perf_counter()
                result = replicate(primary, site, PASSWORD, options)
                seconds = time.perf_counter() - start
                data = result.counts["data"]
                if data.copied_bytes != pack_bytes:
                    raise SystemExit(f"{target}: copied {data.copied_bytes} of {pack_bytes} bytes")
                again = replicate(primary, site, PASSWORD, options)
                if again.total().copied_bytes:
                    raise SystemExit(f"{target}: a second run copied data again")
                if not verify_repository(Repository.open(site, PASSWORD)).ok:
                    raise SystemExit(f"{target}: the site does not verify")
                mode = "server-side" if data.server_side == data.copied else "streamed"
                mib = data.copied_bytes / MIB
                figures.append(
                    Figure(target, mode, args.jobs, data.copied, mib, seconds, mib / seconds)
                )
                print(
                    f"replicate bench: s3 -> {target:8} ({mode}): {mib:.0f} MiB in "
                    f"{seconds:.2f} s = {mib / seconds:.0f} MiB/s",
                    file=sys.stderr,
                    flush=True,
                )
                site.close()
        finally:
            for store in stores.values():
                store.stop()
    lines = [
        "| from | to | mode | jobs | packs | MiB | seconds | MiB/s |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for f in figures:
        lines.append(
            f"| s3 | {f.target} | {f.mode} | {f.jobs} | {f.packs} | {f.mib:.0f} | "
            f"{f.seconds:.2f} | {f.mib_s:.0f} |"
        )
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(f) for f in figures], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
