"""The disaster-recovery drill of docs/disaster-recovery.md (``make dr-drill``), as a test.

``run_drill`` is the same function ``make dr-drill`` runs: two test-ground clusters side by
side, SeaweedFS as the primary and fake-gcs-server and Azurite as recovery sites, PostgreSQL;
cluster A backs up and replicates, then is stopped for good while the primary bucket is
emptied and the database dropped; cluster B, given only the chart, the Secrets and the
GitOps YAML, restores everything from a site; then the runbook's command-line blocks read the
sites with no cluster. Every check (bytes, rows, the claim's size, the ConfigMaps, each
request's status) is made inside the drill and fails it with what differed; this test adds
what the runbook promises about the figures and that nothing is left running.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import dr_drill
from testground import controlplane

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _children_of_workdir(workdir: Path) -> list[str]:
    """Command lines of live processes that name the drill's work directory."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(workdir) in cmdline:
            found.append(cmdline)
    return found


def test_dr_drill_restores_everything_from_the_recovery_sites(
    tmp_path: Path, testground_factory: Callable[..., Any]
) -> None:
    # testground_factory is requested (not called) so that the control plane is built after
    # collection, outside this test's timeout, when it is not cached yet
    workdir = tmp_path / "drill"
    workdir.mkdir()
    lines: list[str] = []
    result = dr_drill.run_drill(workdir, echo=lines.append)
    output = "\n".join(lines)

    # both sites held the run's snapshots when the disaster struck: the RPO is the time since
    # the backup, which the drill ran minutes before (not a day-old or missing snapshot)
    assert set(result.rpo_seconds) == {"site-gcs", "site-azure"}
    assert all(0 < rpo < 600 for rpo in result.rpo_seconds.values()), result.rpo_seconds
    assert all(n > 6_000_000 for n in result.bytes_transferred.values()), result.bytes_transferred
    # the RTO covers the applies and the restores in B, and nothing before them
    assert 0 < result.rto_seconds <= result.b_seconds < result.total_seconds
    assert result.claim[0] == 43  # the writer's 42 files and SHA256SUMS
    assert result.rows > 20_000
    assert "RTO" in output
    assert "RPO at site-gcs" in output
    # the runbook's steps, in its order
    titles = [t for t, _ in result.steps]
    order = [
        "cluster A: a BackupRun", "the disaster", "restore the configuration",
        "restore the claim and the database", "site-azure into another claim",
        "site-gcs becomes the primary", "no cluster at all", "rotate the repository key",
        "tear down",
    ]  # fmt: skip
    positions = [next(i for i, t in enumerate(titles) if key in t) for key in order]
    assert positions == sorted(positions), titles
    # the CLI blocks listed the site's snapshots by source, one of each
    for source in ("shop/nightly/data", "shop/nightly/orders/db/orders", "shop/nightly/resources"):
        assert len(re.findall(rf"{re.escape(source)}\s", result.cli_output)) == 1, source

    # torn down: both clusters' processes, the stores and the database server
    for name in ("a", "b"):
        state = controlplane.load_state(workdir / f"cluster-{name}")
        assert state is not None
        assert not any(state.running().values()), (name, state.running())
    assert _children_of_workdir(workdir) == []


def test_runbook_blocks_fill_every_placeholder(tmp_path: Path) -> None:
    """Each YAML block the drill applies parses and passes ``safehold validate``, and a
    placeholder left out is refused."""
    names = ["secrets", "locations", "rbac", "app", "policy", "backup-now",
             "restore-config", "restore-data", "restore-azure", "failover",
             "backup-after-failover"]  # fmt: skip
    values = {
        k: "1" if k == "DB_PORT" else "x"
        for k in set(re.findall(r"<([A-Z0-9_]+)>", dr_drill.DOC.read_text()))
    }
    values["S3_ENDPOINT"] = values["GCS_ENDPOINT"] = values["AZURE_ENDPOINT"] = "https://x.test"
    kinds = {n: [o["kind"] for o in dr_drill.dr_yaml(n, **values)] for n in names}
    manifests = tmp_path / "runbook.yaml"
    manifests.write_text(
        yaml.safe_dump_all([o for n in names for o in dr_drill.dr_yaml(n, **values)])
    )
    done = subprocess.run(
        [sys.executable, "-m", "safehold", "validate", str(manifests)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert kinds["locations"] == ["BackupLocation"] * 3
    assert kinds["policy"] == ["BackupPolicy"]
    assert kinds["restore-data"] == ["RestoreRequest"]
    [policy] = dr_drill.dr_yaml("policy", **values)
    assert policy["spec"]["sources"]["databases"][0]["port"] == 1  # a number, not a string
    assert [s["name"] for s in policy["spec"]["replicateTo"]] == ["site-gcs", "site-azure"]
    with pytest.raises(ValueError, match="DB_PORT"):
        dr_drill.dr_yaml("policy", **{k: v for k, v in values.items() if k != "DB_PORT"})
    # a password with YAML's special characters stays one string
    odd = "a'b\"c\\d: #e"
    [*_, db] = dr_drill.dr_yaml("secrets", **{**values, "DB_PASSWORD": odd})
    assert db["stringData"]["password"] == odd
    for cli in ("cli-list", "cli-restore", "cli-rotate"):
        assert "safehold " in dr_drill.dr_block(cli)
