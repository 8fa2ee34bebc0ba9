"""A volume source's include/exclude patterns on the test ground: the backup Job stores
only what they keep, the restore brings back exactly that, and a bad pattern fails the
source with a message that names it."""

from __future__ import annotations

from typing import Any

from testground.kube import Namespace
from testground.objectstores import RunningStore


def _source(obj: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in obj["status"]["sources"] if s["name"] == name)


def test_volume_patterns_are_applied_by_the_backup_job(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    operator()
    data_dir = kit.make_claim(namespace, "data")
    original = kit.write_data(data_dir, seed=3, files=9)  # dir0..dir2/file<i>.bin
    for rel in ("cache/a.bin", "cache/deep/b.bin", "dir1/part.tmp", "dir2/keep.conf"):
        (data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / rel).write_bytes(rel.encode())
    kit.store_location(namespace, s3_store)
    namespace.wait_condition("backuplocation", "loc", "Available", timeout=120)
    volume = {
        "claimName": "data",
        "include": ["dir1/**", "dir2", "cache/**"],
        "exclude": ["*.tmp", "cache/**"],
    }
    kit.policy(namespace, "pol", "loc", [], sources={"volumes": [volume]})
    namespace.wait_condition("backuppolicy", "pol", "Ready", timeout=60)
    kit.backup_run(namespace, "run", "pol", "full")
    kit.kubectl_wait(namespace, "backuprun/run", "Complete")
    run = kit.get(namespace, "backuprun", "run")
    assert run["status"]["phase"] == "Succeeded", run["status"]
    src = _source(run, "data")
    assert not src.get("warnings"), src
    expected = {k: v for k, v in original.items() if k.startswith(("dir1/", "dir2/"))}
    expected["dir2/keep.conf"] = b"dir2/keep.conf"
    assert src["files"] == len(expected)

    kit.restore_request(
        namespace, "back", backupRunRef={"name": "run"}, target={"claimName": "restored"}
    )
    kit.kubectl_wait(namespace, "restorerequest/back", "Complete")
    assert kit.get(namespace, "restorerequest", "back")["status"]["phase"] == "Succeeded"
    restored = kit.claim_dir(namespace, "restored")
    assert kit.read_tree(restored) == expected
    assert (restored / "cache").is_dir()  # included, its contents excluded: kept empty
    assert not (restored / "dir0").exists()

    bad = {"claimName": "data", "exclude": ["ok", "a//b"]}
    kit.policy(namespace, "bad", "loc", [], sources={"volumes": [bad]})
    namespace.wait_condition("backuppolicy", "bad", "Ready", timeout=60)
    kit.backup_run(namespace, "bad-run", "bad", "full")
    kit.kubectl_wait(namespace, "backuprun/bad-run", "Complete")
    failed = _source(kit.get(namespace, "backuprun", "bad-run"), "data")
    assert failed["phase"] == "Failed", failed
    assert "--exclude 'a//b' has an empty name" in failed["error"]["message"], failed
