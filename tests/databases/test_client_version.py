"""Which PostgreSQL version's tools serve a server, and that the image and the test ground
carry the versions the choice needs.

The image installs the tools of several major versions under ``/usr/lib/postgresql/<major>/bin``
(the Dockerfile's ``POSTGRES_CLIENTS``); the test ground installs two the same way, Debian's 15
and 18 (``testground.pgbuild``), so that the database tests run each server's own tools.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from safehold.engine.databases.client import pick_postgres_tools, postgres_tool_dirs
from testground import pgbuild

DOCKERFILE = (Path(__file__).parents[2] / "Dockerfile").read_text()
INSTALLED = {15: "/t/15/bin", 18: "/t/18/bin"}


@pytest.mark.parametrize(
    ("server", "tools"),
    [
        (15, 15),  # its own
        (18, 18),
        (16, 18),  # not installed: the oldest newer one
        (9, 15),
        (19, 18),  # newer than all: the newest, which refuses it with both versions
        (None, 18),  # unknown (the server could not be asked): the newest
    ],
)
def test_a_server_gets_its_own_version_else_the_oldest_newer_one(
    server: int | None, tools: int
) -> None:
    assert pick_postgres_tools(server, INSTALLED) == tools


def test_nothing_installed_means_the_tools_on_path() -> None:
    assert pick_postgres_tools(15, {}) is None


def test_installed_versions_are_the_numbered_directories_with_a_bin(tmp_path: Path) -> None:
    for name in ("15/bin", "18/bin", "17", "common/bin"):
        (tmp_path / name).mkdir(parents=True)
    assert postgres_tool_dirs(str(tmp_path)) == {
        15: str(tmp_path / "15" / "bin"),
        18: str(tmp_path / "18" / "bin"),
    }
    assert postgres_tool_dirs(str(tmp_path / "missing")) == {}


def test_the_image_and_the_test_ground_carry_the_versions_tested() -> None:
    (clients,) = re.findall(r'^ARG POSTGRES_CLIENTS="([\d ]+)"$', DOCKERFILE, re.M)
    versions = [int(v) for v in clients.split()]
    assert max(versions) == int(pgbuild.MAJOR)  # the newest the image has is tested
    assert 15 in versions  # and so is Debian bookworm's
    assert "postgresql-client-$v" in DOCKERFILE
    assert set(postgres_tool_dirs("/usr/lib/postgresql")) >= {15, int(pgbuild.MAJOR)}
