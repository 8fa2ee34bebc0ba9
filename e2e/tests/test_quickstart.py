"""``make quickstart`` as a user runs it: the whole operator demo, as a process, end to end.

The demo starts its own test-ground cluster and SeaweedFS (in a temporary directory here, so
it runs beside the session's cluster), installs the chart, backs up, restores, compares, and
tears everything down. The test checks what the user sees: exit code 0, the success line, the
time (the README promises under 3 minutes once the control plane is built), and that nothing
is left running.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from quickstart import SUCCESS
from testground import controlplane

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def test_quickstart_backs_up_restores_and_tears_down(
    tmp_path: Path, testground_factory: Callable[..., Any]
) -> None:
    # testground_factory is requested (not called) so that the control plane is built after
    # collection, outside this test's timeout, when it is not cached yet
    directory = tmp_path / "quickstart"
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(REPO / "e2e" / "quickstart.py"), "--dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO,
        check=False,
    )
    elapsed = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert SUCCESS in done.stdout, output
    assert "the restored bytes match the original claim exactly" in done.stdout
    assert "snapshot " in done.stdout
    assert "backuprun.safehold.io/quickstart" in done.stdout
    assert "Succeeded" in done.stdout
    assert f"KUBECONFIG={directory}" in done.stdout
    assert elapsed < 180, f"the quickstart took {elapsed:.0f}s"
    # torn down: no process of its cluster is left
    state = controlplane.load_state(directory)
    assert state is not None
    assert not any(state.running().values()), state.running()
