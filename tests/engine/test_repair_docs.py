"""Run the ``console`` sessions of docs/repair.md with the runner of
testground/console_docs.py: every command must exit 0 and print what the page says, so the
repair examples cannot drift from the commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from testground.console_docs import run_session, session_env, sessions

REPAIR = sessions("repair.md")


def test_the_repair_page_has_sessions() -> None:
    assert len(REPAIR) >= 2


@pytest.mark.parametrize("block", REPAIR)
def test_repair_docs(block: str, tmp_path: Path) -> None:
    # The sessions of the page build on each other: run the earlier ones first.
    index = [p.values[0] for p in REPAIR].index(block)  # type: ignore[attr-defined]
    env = session_env(tmp_path)
    for earlier in REPAIR[:index]:
        run_session(earlier.values[0], tmp_path, env)  # type: ignore[attr-defined]
    run_session(block, tmp_path, env)
