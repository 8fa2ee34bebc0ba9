"""Run the ``console`` sessions of docs/repair.md with the runner of the forget and prune
pages (tests/engine/test_forget_docs.py): every command must exit 0 and print what the
page says, so the repair examples cannot drift from the commands."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest


def _runner() -> ModuleType:
    path = Path(__file__).with_name("test_forget_docs.py")
    spec = importlib.util.spec_from_file_location("_safehold_docs_runner", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RUNNER = _runner()
REPAIR: list[object] = RUNNER._sessions("repair.md")


def test_the_repair_page_has_sessions() -> None:
    assert len(REPAIR) >= 2


@pytest.mark.parametrize("block", REPAIR)
def test_repair_docs(block: str, tmp_path: Path) -> None:
    # The sessions of the page build on each other: run the earlier ones first.
    index = [p.values[0] for p in REPAIR].index(block)  # type: ignore[attr-defined]
    env = RUNNER.session_env(tmp_path)
    for earlier in REPAIR[:index]:
        RUNNER.run_session(earlier.values[0], tmp_path, env)  # type: ignore[attr-defined]
    RUNNER.run_session(block, tmp_path, env)
