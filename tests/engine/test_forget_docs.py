"""Run the ``console`` sessions of docs/retention.md (its forget section) and docs/prune.md
with the runner of testground/console_docs.py (its docstring gives the session syntax)."""

from __future__ import annotations

from pathlib import Path

import pytest

from testground.console_docs import run_session, session_env, sessions

FORGET = sessions("retention.md", "## The `safehold forget` command")


def test_the_forget_section_has_sessions() -> None:
    assert len(FORGET) >= 2


@pytest.mark.parametrize("block", FORGET)
def test_forget_docs(block: str, tmp_path: Path) -> None:
    # The sessions of one page build on each other: run the earlier ones first.
    index = [p.values[0] for p in FORGET].index(block)  # type: ignore[attr-defined]
    env = session_env(tmp_path)
    for earlier in FORGET[:index]:
        run_session(earlier.values[0], tmp_path, env)  # type: ignore[attr-defined]
    run_session(block, tmp_path, env)


PRUNE = sessions("prune.md")


@pytest.mark.parametrize("block", PRUNE)
def test_prune_docs(block: str, tmp_path: Path) -> None:
    index = [p.values[0] for p in PRUNE].index(block)  # type: ignore[attr-defined]
    env = session_env(tmp_path)
    for earlier in PRUNE[:index]:
        run_session(earlier.values[0], tmp_path, env)  # type: ignore[attr-defined]
    run_session(block, tmp_path, env)
