"""How many threads the engine starts: the CPUs a pod may really use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from safehold.engine.tuning import available_cpus

AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, AFFINITY),  # no cgroup files: the affinity
        ({"cpu.max": "max 100000\n"}, AFFINITY),  # v2, no quota
        ({"cpu.max": "50000 100000\n"}, 1),  # v2, half a CPU: rounded up to one
        ({"cpu.max": "100000 100000\n"}, 1),  # v2, limits.cpu: 1
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, AFFINITY),
        ({"cpu.max": "garbage\n"}, AFFINITY),  # unreadable: no cap
    ],
)
def test_a_cgroup_cpu_quota_caps_the_threads(
    tmp_path: Path, files: dict[str, str], expected: int
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert available_cpus(str(tmp_path)) == min(expected, AFFINITY)


def test_a_quota_above_the_affinity_does_not_raise_it(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text(f"{(AFFINITY + 8) * 100000} 100000\n")
    assert available_cpus(str(tmp_path)) == AFFINITY
