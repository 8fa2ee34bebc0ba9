"""A RestoreRequest's ``spec.paths`` on the test ground: the backup's pattern language,
relative to the volume's root (a glob at any depth, an anchored path), restores only what
matches; paths that match nothing fail the source, naming the closest paths."""

from __future__ import annotations

from typing import Any

from testground.kube import Namespace
from testground.objectstores import RunningStore


def test_restore_paths_are_patterns(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    operator()
    data_dir = kit.make_claim(namespace, "data")
    original = kit.write_data(data_dir, seed=5, files=6)  # dir0..dir2/file<i>.bin
    for rel in ("dir0/a.conf", "dir1/deep/b.conf"):
        (data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / rel).write_bytes(rel.encode())
    kit.store_location(namespace, s3_store)
    kit.policy(namespace, "pol", "loc", ["data"])
    kit.backup_run(namespace, "run", "pol", "full")
    kit.kubectl_wait(namespace, "backuprun/run", "Complete")
    assert kit.get(namespace, "backuprun", "run")["status"]["phase"] == "Succeeded"

    kit.restore_request(
        namespace, "some", backupRunRef={"name": "run"}, target={"claimName": "some"},
        paths=["*.conf", "/dir2/file2.bin"],
    )  # fmt: skip
    kit.kubectl_wait(namespace, "restorerequest/some", "Complete")
    rr = kit.get(namespace, "restorerequest", "some")
    assert rr["status"]["phase"] == "Succeeded", rr["status"]
    assert kit.read_tree(kit.claim_dir(namespace, "some")) == {
        "dir0/a.conf": b"dir0/a.conf",
        "dir1/deep/b.conf": b"dir1/deep/b.conf",
        "dir2/file2.bin": original["dir2/file2.bin"],
    }

    kit.restore_request(
        namespace, "none", backupRunRef={"name": "run"}, target={"claimName": "none"},
        paths=["dir1/fiel1.bin"],
    )  # fmt: skip
    kit.kubectl_wait(namespace, "restorerequest/none", "Complete")
    item = kit.get(namespace, "restorerequest", "none")["status"]["restored"][0]
    assert item["phase"] == "Failed", item
    assert "matches nothing" in str(item), item
    assert "/volume/dir1/file1.bin" in str(item), item
