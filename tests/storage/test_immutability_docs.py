"""Run the ``console`` session of docs/immutability.md on SeaweedFS, in a lock-enabled bucket.

Same conventions as e2e/testground/console_docs.py: ``$ `` lines are commands run by
bash (``safehold`` is this checkout's CLI), the lines after each are its expected stdout,
with ``<id>``, ``<size>``, ``<n>`` and ``<any>`` as placeholders.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import boto3
from botocore.config import Config as BotoConfig

from testground.objectstores import RunningStore

DOC = Path(__file__).resolve().parents[2] / "docs" / "immutability.md"
BLOCK = re.compile(r"^```console\n(.*?)^```", re.DOTALL | re.MULTILINE)
PREAMBLE = 'safehold() { "$SAFEHOLD_TEST_PYTHON" -m safehold "$@"; }\n'
TOKENS = {
    "<id>": r"[0-9a-f]{8,64}",
    "<size>": r"[0-9.]+ (?:B|KiB|MiB|GiB)",
    "<n>": r"[0-9]+",
    "<any>": r".*",
}


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


def test_immutability_docs(s3_store: RunningStore, tmp_path: Path) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=s3_store.endpoint,
        region_name=s3_store.options["region"],
        aws_access_key_id=s3_store.options["access_key_id"],
        aws_secret_access_key=s3_store.options["secret_access_key"],
        config=BotoConfig(s3={"addressing_style": "path"}),
    )
    client.create_bucket(Bucket="backups-worm", ObjectLockEnabledForBucket=True)
    env = {
        **os.environ,
        "SAFEHOLD_TEST_PYTHON": sys.executable,
        "SAFEHOLD_REPOSITORY": "s3://backups-worm/ledger",
        "SAFEHOLD_PASSWORD": "docs example password",
        "AWS_ENDPOINT_URL_S3": s3_store.endpoint,
        "AWS_ACCESS_KEY_ID": s3_store.options["access_key_id"],
        "AWS_SECRET_ACCESS_KEY": s3_store.options["secret_access_key"],
        "AWS_REGION": s3_store.options["region"],
    }
    blocks = BLOCK.findall(DOC.read_text(encoding="utf-8"))
    assert len(blocks) == 1
    steps: list[tuple[str, list[str]]] = []
    for line in blocks[0].splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    for command, expected in steps:
        done = subprocess.run(
            ["bash", "-c", PREAMBLE + command],
            cwd=tmp_path,
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
    # The forgotten snapshot is still there, locked; its lock is governance for 30 days.
    keys = client.list_objects_v2(Bucket="backups-worm", Prefix="ledger/snapshots/")["Contents"]
    assert len(keys) == 2
    held = client.get_object_retention(Bucket="backups-worm", Key=keys[0]["Key"])
    assert held["Retention"]["Mode"] == "GOVERNANCE"
