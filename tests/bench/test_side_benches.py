"""The benchmarks beside the engine's that ``make bench`` runs (bench/prune.py): each runs end
to end on a tiny repository, so a change to the code they drive cannot break them unseen."""

from __future__ import annotations

import json
from pathlib import Path

import prune


def test_the_prune_bench_forgets_prunes_and_verifies(tmp_path: Path) -> None:
    out = tmp_path / "prune.json"
    argv = ["--snapshots", "10", "--mib", "1", "--files", "8", "--json", str(out)]
    assert prune.main(argv) == 0  # it stops when the pruned repository does not verify
    figures = json.loads(out.read_text())
    assert figures["snapshots"] == 10
    assert 1 <= figures["kept"] < 10  # ten daily snapshots: the policy forgets some
    assert figures["packs_deleted"] + figures["packs_repacked"] > 0
    assert figures["repo_mib_after"] < figures["repo_mib_before"]
