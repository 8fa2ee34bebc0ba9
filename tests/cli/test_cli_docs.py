"""Run the ``console`` sessions of docs/cli.md ("The CLI in five minutes") as written, with
the runner of the forget and prune pages (tests/engine/test_forget_docs.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest


def _runner() -> ModuleType:
    path = Path(__file__).parents[1] / "engine" / "test_forget_docs.py"
    spec = importlib.util.spec_from_file_location("_safehold_cli_docs_runner", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RUNNER = _runner()
SESSIONS: list[object] = RUNNER._sessions("cli.md")


def test_the_cli_page_has_a_session() -> None:
    assert SESSIONS


@pytest.mark.parametrize("block", SESSIONS)
def test_cli_docs(block: str, tmp_path: Path) -> None:
    env = RUNNER.session_env(tmp_path)
    env.pop("SAFEHOLD_REPOSITORY")  # the page gives -r ./repo itself
    RUNNER.run_session(block, tmp_path, env)
