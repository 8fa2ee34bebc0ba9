"""The ``console`` sessions of the docs, run as written (docs/retention.md, prune.md,
repair.md, cli.md).

A session is a fenced ``console`` block: lines starting with ``$ `` are commands (run by
bash in a fresh directory, ``safehold`` being this checkout's CLI and the repository
``./repo``), and the lines after a command are its expected stdout, where ``<id>``
stands for a hex id, ``<size>`` for a size such as ``1.2 MiB``, ``<n>`` for a number,
``<any>`` inside a line for any text, and a line that is just ``<any>`` for any number
of lines. Every command must exit 0 and print what the page says.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

__all__ = ["run_session", "session_env", "sessions"]

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"^```console\n(.*?)^```", re.DOTALL | re.MULTILINE)
PREAMBLE = 'safehold() { "$SAFEHOLD_TEST_PYTHON" -m safehold "$@"; }\n'
TOKENS = {
    "<id>": r"[0-9a-f]{8,64}",
    "<size>": r"[0-9.]+ (?:B|KiB|MiB|GiB)",
    "<n>": r"[0-9]+",
    "<any>": r".*",
}


def sessions(name: str, section: str | None = None) -> list[Any]:
    text = (DOCS / name).read_text(encoding="utf-8")
    if section is not None:
        start = text.index(section)
        end = text.find("\n## ", start + len(section))
        text = text[: end if end > 0 else len(text)]
    else:
        start = 0
    found = []
    for match in BLOCK.finditer(text, start):
        line = text.count("\n", 0, match.start()) + 1
        found.append(pytest.param(match.group(1), id=f"{name}:{line}"))
    return found


def _pattern(line: str) -> re.Pattern[str]:
    parts = re.split(r"(<id>|<size>|<n>|<any>)", line)
    return re.compile("".join(TOKENS.get(p, re.escape(p)) for p in parts))


def _matches(expected: list[str], got: list[str]) -> bool:
    if not expected:
        return not got
    head, rest = expected[0], expected[1:]
    if head == "<any>":
        return any(_matches(rest, got[i:]) for i in range(len(got) + 1))
    return bool(got) and bool(_pattern(head).fullmatch(got[0])) and _matches(rest, got[1:])


def run_session(block: str, workdir: Path, env: dict[str, str]) -> None:
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    for command, expected in steps:
        done = subprocess.run(
            ["bash", "-c", PREAMBLE + command],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"$ {command}\n{done.stdout}{done.stderr}"
        got = [line.rstrip() for line in done.stdout.splitlines()]
        assert _matches(expected, got), (
            f"$ {command}\nexpected:\n" + "\n".join(expected) + "\ngot:\n" + "\n".join(got)
        )


def session_env(workdir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SAFEHOLD_TEST_PYTHON": sys.executable,
        "SAFEHOLD_REPOSITORY": (workdir / "repo").as_uri(),
        "SAFEHOLD_PASSWORD": "docs example password",
    }
