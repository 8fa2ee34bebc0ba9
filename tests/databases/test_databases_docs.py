"""Run the ``console`` sessions of docs/databases.md ("Test restores") as written, against the
real MariaDB server, with the runner of testground/console_docs.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from testground.console_docs import run_session, session_env, sessions
from testground.databases import DatabaseServer, drop_database, load_sample_data

SESSIONS = sessions("databases.md", "## Test restores")


def test_the_databases_page_has_sessions() -> None:
    assert len(SESSIONS) == 2


@pytest.mark.parametrize("block", SESSIONS)
def test_databases_docs(block: str, mariadb_server: DatabaseServer, tmp_path: Path) -> None:
    server = mariadb_server
    load_sample_data(server, "shop", rows=2000)
    try:
        password = tmp_path / "db-password"
        password.write_text(server.password + "\n")
        env = {
            **session_env(tmp_path),
            "DB_HOST": server.host,
            "DB_PORT": str(server.port),
            "DB_USER": server.user,
            "DB_PASSWORD_FILE": str(password),
        }
        run_session(block, tmp_path, env)
    finally:
        drop_database(server, "shop")
