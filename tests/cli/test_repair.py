"""A repository that heals (issue 14), through the real command: damage a pack (bytes
flipped in the middle), delete a pack, delete an index object, truncate a snapshot object.
Each time ``verify`` reports it (exit code 4, naming the object) and says which repairs
to run; running exactly those (``repair index``, a backup, ``repair snapshots``) and a new
backup leaves a repository that ``verify --read-data`` finds clean and whose new snapshot
restores byte for byte. On a real file repository, and on the test ground's S3, GCS and
Azure servers (one or two kinds of damage each).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from safehold.repo.layout import DATA, INDEX, SNAPSHOTS
from safehold.storage import Storage, open_storage

PASSWORD = "repair test password"
DAMAGED = 4

Run = Callable[..., subprocess.CompletedProcess[str]]


class Location:
    """A repository location: its URL, storage options, and the command run against it."""

    def __init__(self, url: str, options: dict[str, str]) -> None:
        self.url = url
        self.options = options

    def storage(self) -> Storage:
        return open_storage(self.url, self.options)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")},
            "SAFEHOLD_REPOSITORY": self.url,
            "SAFEHOLD_PASSWORD": PASSWORD,
        }
        opts = [f"--option={k}={v}" for k, v in self.options.items()]
        done = subprocess.run(
            [sys.executable, "-m", "safehold", *args, *opts],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done


def summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


def make_source(root: Path) -> Path:
    src = root / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    for i in range(6):
        (src / "sub" / f"file-{i}.bin").write_bytes(os.urandom(300_000 + i * 1000))
    (src / "big.bin").write_bytes(os.urandom(1_500_000))
    (src / "notes.txt").write_text("the notes\n" * 2000)
    (src / "sub" / "deeper" / "leaf.txt").write_text("leaf\n")
    return src


def files_of(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def backup(loc: Location, src: Path, *extra: str) -> dict[str, Any]:
    done = loc.run("backup", str(src), "--source", "vol", "--json", *extra)
    assert done.returncode == 0, done.stderr
    return summary(done)


def biggest(storage: Storage, prefix: str) -> tuple[str, int]:
    info = max(storage.list(prefix), key=lambda i: (i.size, i.name))
    return info.name, info.size


# ------------------------------------------------------------------ the damage
def flip_pack(storage: Storage) -> str:
    name, _ = biggest(storage, DATA)
    data = bytearray(storage.get(name))
    for at in range(len(data) // 2, len(data) // 2 + 8):
        data[at] ^= 0x5A
    storage.put(name, bytes(data))
    return name


def delete_pack(storage: Storage) -> str:
    name, _ = biggest(storage, DATA)
    storage.delete(name)
    return name


def delete_index(storage: Storage) -> str:
    name, _ = biggest(storage, INDEX)
    storage.delete(name)
    return name


def truncate_snapshot(storage: Storage) -> str:
    name = next(iter(storage.list(SNAPSHOTS))).name
    data = storage.get(name)
    storage.put(name, data[: len(data) // 2])
    return name


DAMAGE: dict[str, Callable[[Storage], str]] = {
    "flip-pack": flip_pack,
    "delete-pack": delete_pack,
    "delete-index": delete_index,
    "truncate-snapshot": truncate_snapshot,
}


def heal(loc: Location, tmp_path: Path, damage: str) -> None:
    """The whole story of one damage: verify -> the repairs it names -> backup -> verify
    clean -> the new snapshot restores byte for byte."""
    src = make_source(tmp_path)
    assert loc.run("repo", "init", "--pack-size", "1", "--json").returncode == 0
    first = backup(loc, src)
    (src / "notes.txt").write_text("changed notes\n" * 2000)
    backup(loc, src)
    name = DAMAGE[damage](loc.storage())

    args = ["verify", "--json"] + (["--read-data"] if damage == "flip-pack" else [])
    found = loc.run(*args)
    assert found.returncode == DAMAGED, found.stdout + found.stderr
    doc = summary(found)
    assert doc["ok"] is False
    assert doc["exit_code"] == DAMAGED
    # it names what: the damaged object itself, or the paths that lost their data
    named = name in found.stderr or any(d["paths"] for d in doc["damaged"].values())
    assert named, found.stderr
    assert doc["repair"], doc
    assert doc["repair_hint"]
    assert doc["repair_hint"] in found.stderr
    assert doc["repair"][-1] == "safehold repair snapshots --forget" or doc["repair"] == [
        "safehold repair index --read-data"
    ]

    backed_up = False
    for step in doc["repair"]:
        if step == "safehold backup":
            backup(loc, src)
            backed_up = True
            continue
        words = step.split()[1:]
        dry = loc.run(*words, "--dry-run", "--json")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert summary(dry)["dry_run"] is True
        done = loc.run(*words, "--json")
        assert done.returncode == 0, done.stdout + done.stderr
    if not backed_up:
        backup(loc, src)
    latest = backup(loc, src, "--type", "full")

    clean = loc.run("verify", "--read-data", "--json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert summary(clean)["repair"] == []
    out = tmp_path / "restored"
    restored = loc.run("restore", latest["snapshot"], str(out), "--json")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert files_of(out / "src") == files_of(src)
    # the repairs are done: running them again changes nothing
    again = summary(loc.run("repair", "index", "--json"))
    assert again["changed"] is False, again
    assert summary(loc.run("repair", "snapshots", "--json"))["damaged_snapshots"] == 0
    assert first["snapshot"]  # (the first snapshot may have been repaired or forgotten)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_verify_repair_backup_verify_restore_on_a_file_repository(
    damage: str, tmp_path: Path
) -> None:
    heal(Location((tmp_path / "repo").as_uri(), {}), tmp_path, damage)


@pytest.mark.parametrize(
    ("provider", "damage"),
    [
        ("s3_store", "flip-pack"),
        ("s3_store", "delete-index"),
        ("gcs_store", "delete-pack"),
        ("azure_store", "truncate-snapshot"),
    ],
)
def test_verify_repair_backup_verify_restore_on_an_object_store(
    provider: str, damage: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = request.getfixturevalue(provider)
    bucket = f"repair-{uuid.uuid4().hex[:12]}"
    store.make_bucket(bucket)
    heal(Location(store.url(bucket, "repo"), dict(store.options)), tmp_path, damage)


def test_data_the_source_no_longer_has_is_left_out_of_a_repaired_copy(tmp_path: Path) -> None:
    """A file whose data is lost and gone from the source too: ``repair snapshots`` writes a
    copy without it (tagged ``repaired``, naming the original and the lost path), which
    restores the rest byte for byte; ``--forget`` then removes the damaged original."""
    from safehold.repo import Repository

    loc = Location((tmp_path / "repo").as_uri(), {})
    assert loc.run("repo", "init", "--pack-size", "1", "--json").returncode == 0
    src = tmp_path / "other"
    src.mkdir()
    (src / "kept.txt").write_text("kept\n")
    assert loc.run("backup", str(src), "--source", "other").returncode == 0
    (src / "gone.bin").write_bytes(os.urandom(2_500_000))  # several chunks and packs
    done = loc.run("backup", str(src), "--source", "other", "--json")
    original = summary(done)["snapshot"]
    kept = {"kept.txt": b"kept\n"}
    (src / "gone.bin").unlink()
    # the pack of gone.bin's first chunk: the first this backup wrote (kept.txt's chunk
    # is stored already), so it holds only gone.bin's data
    repo = Repository.open(open_storage(loc.url), PASSWORD)
    snap = repo.find_snapshot(original)
    top = repo.load_tree(repo.load_tree(snap.tree)[0]["subtree"])
    chunk = next(n for n in top if n["name"] == "gone.bin")["content"][0]
    where = repo.index.lookup(bytes.fromhex(chunk))
    assert where is not None
    loc.storage().delete(f"{DATA}{where.pack[:2]}/{where.pack}")

    found = loc.run("verify", "--json")
    assert found.returncode == DAMAGED
    doc = summary(found)
    assert doc["damaged"][original]["paths"] == ["other/gone.bin"]
    assert doc["repair"] == [
        "safehold repair index",
        "safehold backup",
        "safehold repair snapshots --forget",
    ]
    assert loc.run("repair", "index").returncode == 0
    assert loc.run("backup", str(src), "--source", "other").returncode == 0
    dry = loc.run("repair", "snapshots", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    item = summary(dry)["items"][0]
    assert item["snapshot"] == original
    assert [p["path"] for p in item["paths"]] == ["other/gone.bin"]
    text = loc.run("repair", "snapshots", "--dry-run").stdout
    assert "  file other/gone.bin: chunk" in text
    assert "would write a repaired copy" in text
    done = loc.run("repair", "snapshots", "--json")
    assert done.returncode == 0, done.stderr
    copy_id = summary(done)["items"][0]["repaired"]
    # the original is kept without --forget, so verify still names it
    assert loc.run("verify").returncode == DAMAGED
    listed = summary(loc.run("snapshots", "--json"))["snapshots"]
    copy = next(s for s in listed if s["id"] == copy_id)
    assert "repaired" in copy["tags"]
    assert copy["meta"]["repair.original"] == original
    assert "other/gone.bin" in copy["meta"]["repair.lost"]
    assert copy["files"] == 1  # the summary no longer counts the file left out
    out = tmp_path / "out"
    assert loc.run("restore", copy_id, str(out)).returncode == 0
    assert files_of(out / "other") == kept
    # a rerun finds the copy it wrote, and --forget removes the original
    rerun = summary(loc.run("repair", "snapshots", "--forget", "--json"))
    assert rerun["items"][0]["repaired"] == copy_id
    assert rerun["items"][0]["forgotten"] is True
    assert loc.run("verify", "--read-data").returncode == 0
    ids = {s["id"] for s in summary(loc.run("snapshots", "--json"))["snapshots"]}
    assert original not in ids
    assert copy_id in ids


def test_repair_snapshots_waits_for_repair_index(tmp_path: Path) -> None:
    """With the index naming a pack that is gone, repair snapshots refuses (exit code 4)
    and says to run repair index first: it would take data for lost that is not."""
    loc = Location((tmp_path / "repo").as_uri(), {})
    src = make_source(tmp_path)
    assert loc.run("repo", "init", "--pack-size", "1").returncode == 0
    backup(loc, src)
    delete_pack(loc.storage())
    done = loc.run("repair", "snapshots", "--json")
    assert done.returncode == DAMAGED
    assert "repair index" in summary(done)["error"]
