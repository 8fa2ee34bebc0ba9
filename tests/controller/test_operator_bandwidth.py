"""A BackupLocation's ``spec.bandwidth`` reaches the Jobs of that location, and the real
command they run takes it: the in-process operator on the test ground (the arguments of
every kind of Job are tests/controller/test_commands.py's)."""

from __future__ import annotations

import json
from typing import Any

from testground.kube import Namespace
from testground.objectstores import RunningStore


def _limits(job: dict[str, Any]) -> tuple[str | None, str | None]:
    args: list[str] = job["spec"]["template"]["spec"]["containers"][0]["args"]
    found = [
        args[args.index(o) + 1] if o in args else None
        for o in ("--limit-upload", "--limit-download")
    ]
    return found[0], found[1]


def test_every_job_of_a_limited_location_carries_its_limits(
    namespace: Namespace, s3_store: RunningStore, operator: Any, kit: Any
) -> None:
    operator()
    data_dir = kit.make_claim(namespace, "data")
    original = kit.write_data(data_dir, seed=7, files=4)
    kit.store_location(namespace, s3_store, bandwidth={"uploadKiBps": 4096, "downloadKiBps": 8192})
    namespace.wait_condition("backuplocation", "loc", "Available", timeout=120)
    kit.policy(namespace, "pol", "loc", ["data"])
    namespace.wait_condition("backuppolicy", "pol", "Ready", timeout=60)
    kit.backup_run(namespace, "run", "pol")
    kit.kubectl_wait(namespace, "backuprun/run", "Complete")
    assert kit.get(namespace, "backuprun", "run")["status"]["phase"] == "Succeeded"
    kit.restore_request(
        namespace, "back", backupRunRef={"name": "run"}, target={"claimName": "restored"}
    )
    kit.kubectl_wait(namespace, "restorerequest/back", "Complete")
    assert kit.get(namespace, "restorerequest", "back")["status"]["phase"] == "Succeeded"
    assert kit.read_tree(kit.claim_dir(namespace, "restored")) == original

    jobs = json.loads(namespace.kubectl("get", "jobs", "-o", "json").stdout)["items"]
    components = {j["metadata"]["labels"].get("app.kubernetes.io/component") for j in jobs}
    assert len(components) >= 3, components  # the location's check, the backup, the restore
    for job in jobs:
        assert _limits(job) == ("4096", "8192"), job["metadata"]["name"]
