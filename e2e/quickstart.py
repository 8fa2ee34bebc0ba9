#!/usr/bin/env python3
"""A short tour of Safehold on the local filesystem: what ``make quickstart`` runs.

It creates a repository in a temporary directory, backs up generated sample data,
changes the data and backs it up again (incrementally: only changed files are
read), lists the snapshots, restores the latest one, verifies the repository by
reading back every byte, and checks that the restored files equal the originals.
Every step runs the real ``safehold`` command, exactly as a backup Job would.
"""

from __future__ import annotations

import filecmp
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def step(title: str) -> None:
    print(f"\n\033[1m==> {title}\033[0m", flush=True)


def safehold(env: dict[str, str], *args: str, json_out: bool = False) -> dict[str, Any]:
    argv = [sys.executable, "-m", "safehold", *args] + (["--json"] if json_out else [])
    print("$ safehold " + " ".join(args), flush=True)
    done = subprocess.run(argv, env=env, text=True, capture_output=json_out, check=False)
    if done.returncode != 0:
        if json_out:
            sys.stderr.write(done.stderr)
        raise SystemExit(f"safehold {args[0]} failed with exit code {done.returncode}")
    if json_out:
        summary: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return summary
    return {}


def make_sample(root: Path) -> None:
    rnd = random.Random(2026)
    (root / "photos").mkdir(parents=True)
    (root / "notes").mkdir()
    for i in range(3):
        (root / "photos" / f"img-{i}.raw").write_bytes(rnd.randbytes(4 * 1024 * 1024))
    words = [
        "backup",
        "restore",
        "snapshot",
        "volume",
        "cluster",
        "repository",
        "chunk",
        "pack",
        "index",
    ]
    for i in range(200):
        (root / "notes" / f"note-{i:03}.md").write_text(
            " ".join(rnd.choices(words, k=rnd.randint(50, 400))) + "\n"
        )
    (root / "photos" / "copy-of-img-0.raw").write_bytes(
        (root / "photos" / "img-0.raw").read_bytes()
    )
    os.symlink("photos/img-1.raw", root / "favourite")


def same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(same_tree(a / d, b / d) for d in cmp.common_dirs)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="safehold-quickstart-") as tmp:
        base = Path(tmp)
        data, repo, restored = base / "data", base / "repo", base / "restored"
        env = {
            **os.environ,
            "SAFEHOLD_REPOSITORY": repo.as_uri(),
            "SAFEHOLD_PASSWORD": "quickstart-demo-password",  # in real use: a Secret
        }
        print(f"working in {base}")

        step("1. create an encrypted repository")
        safehold(env, "repo", "init")

        step("2. back up some sample data (12 MiB of photos, 200 notes, a duplicate)")
        make_sample(data)
        first = safehold(env, "backup", str(data), "--source", "demo", json_out=True)
        print(
            f"snapshot {first['snapshot'][:12]} ({first['type']}): read "
            f"{first['bytes_read'] / 1e6:.1f} MB, stored {first['bytes_stored'] / 1e6:.1f} MB "
            "(the duplicate photo is stored once, the notes are compressed)"
        )

        step("3. change the data and back up again")
        (data / "notes" / "note-007.md").write_text("rewritten today\n")
        (data / "notes" / "new-note.md").write_text("a new note\n")
        (data / "notes" / "note-100.md").unlink()
        second = safehold(env, "backup", str(data), "--source", "demo", json_out=True)
        print(
            f"snapshot {second['snapshot'][:12]} ({second['type']} on {second['parent'][:12]}): "
            f"{second['files_new']} new, {second['files_changed']} changed, "
            f"{second['files_unmodified']} unmodified files not even read; "
            f"read {second['bytes_read']} bytes"
        )

        step("4. list the snapshots")
        safehold(env, "snapshots")

        step("5. restore the latest snapshot")
        safehold(env, "restore", "latest", str(restored), "--source", "demo")

        step("6. verify the repository, reading back every byte")
        safehold(env, "verify", "--read-data")

        step("7. compare the restored files with the originals")
        if not same_tree(data, restored / data.name):
            print("the restored files differ from the originals!")
            return 1
        print("\033[32mthe restored bytes match the originals exactly\033[0m")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
