"""Run the ``console`` sessions of docs/cli.md ("The CLI in five minutes") as written, with
the runner of testground/console_docs.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from testground.console_docs import run_session, session_env, sessions

SESSIONS = sessions("cli.md")


def test_the_cli_page_has_a_session() -> None:
    assert SESSIONS


@pytest.mark.parametrize("block", SESSIONS)
def test_cli_docs(block: str, tmp_path: Path) -> None:
    env = session_env(tmp_path)
    env.pop("SAFEHOLD_REPOSITORY")  # the page gives -r ./repo itself
    run_session(block, tmp_path, env)
