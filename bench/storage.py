"""Storage throughput: put and get per backend, for 1 MiB and 64 MiB objects, on loopback.

Starts SeaweedFS (S3), fake-gcs-server (GCS) and Azurite (Azure) on free loopback ports, as the
tests do, plus a filesystem location in a temporary directory; then for each backend and size
it puts ``repeat`` distinct objects one after another and reads each back whole (one stream,
no parallel callers: the provider's own part/block parallelism is what is measured). Every
read is checked against what was written. Prints a table; with ``--json`` also writes the
figures there. Run it as ``.venv/bin/python bench/storage.py`` (``make bench`` does).

The figures measure the servers on this machine as much as Safehold: they are loopback
emulators (Azurite keeps blobs in files via Node.js, fake-gcs-server in memory), not the
clouds.
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

from safehold.storage import Storage, open_storage
from testground.objectstores import RunningStore, start_store

__all__ = ["main"]

MIB = 1024 * 1024
BACKENDS = ("filesystem", "s3", "gcs", "azure")
SIZES_MIB = (1, 64)
#: Objects per size: enough bytes per cell (>= 64 MiB) for a stable figure.
DEFAULT_REPEAT = {1: 64, 64: 3}


@dataclass
class Figure:
    backend: str
    size_mib: int
    objects: int
    put_mib_s: float
    get_mib_s: float


def measure(storage: Storage, size_mib: int, objects: int) -> tuple[float, float]:
    data = [os.urandom(size_mib * MIB) for _ in range(min(objects, 4))]
    names = [f"bench/{size_mib}m/{i:04d}" for i in range(objects)]
    start = time.perf_counter()
    for i, name in enumerate(names):
        storage.put(name, data[i % len(data)])
    put_s = time.perf_counter() - start
    start = time.perf_counter()
    for i, name in enumerate(names):
        if storage.get(name) != data[i % len(data)]:
            raise SystemExit(f"{storage.location}: {name} read back different bytes")
    get_s = time.perf_counter() - start
    for name in names:
        storage.delete(name)
    total = size_mib * objects
    return total / put_s, total / get_s


def open_backend(backend: str, workdir: Path, stores: list[RunningStore]) -> Storage:
    if backend == "filesystem":
        root = workdir / "filesystem"
        root.mkdir()
        return open_storage(root.as_uri())
    store = start_store(backend, workdir)
    stores.append(store)
    store.make_bucket("bench")
    return open_storage(store.url("bench", "repo"), store.options)


def table(figures: list[Figure]) -> str:
    lines = [
        "| backend | object size | objects | put MiB/s | get MiB/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for f in figures:
        lines.append(
            f"| {f.backend} | {f.size_mib} MiB | {f.objects} | "
            f"{f.put_mib_s:.0f} | {f.get_mib_s:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES_MIB)), help="MiB, comma-sep.")
    parser.add_argument("--repeat", type=int, help="objects per size (default: 64 x 1 MiB, 3 x 64)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backend(s) {', '.join(sorted(unknown))}; use {', '.join(BACKENDS)}")
    sizes = [int(s) for s in args.sizes.split(",") if s]

    figures: list[Figure] = []
    stores: list[RunningStore] = []
    with tempfile.TemporaryDirectory(prefix="safehold-bench-storage-") as tmp:
        try:
            for backend in backends:
                storage = open_backend(backend, Path(tmp), stores)
                for size in sizes:
                    objects = args.repeat or DEFAULT_REPEAT.get(size, max(1, 64 // size))
                    put, get = measure(storage, size, objects)
                    figures.append(Figure(backend, size, objects, put, get))
                    print(
                        f"storage bench: {backend:10} {size:3} MiB x {objects:3}: "
                        f"put {put:6.0f} MiB/s, get {get:6.0f} MiB/s",
                        file=sys.stderr,
                        flush=True,
                    )
                storage.close()
        finally:
            for store in stores:
                store.stop()
    print(table(figures))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(f) for f in figures], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
