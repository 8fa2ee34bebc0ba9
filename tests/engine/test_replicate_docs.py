"""Run every ``replication-example`` block of docs/replication.md with bash, so the docs
cannot drift: each block runs in a fresh directory with ``safehold`` on the PATH,
``$PRIMARY`` and ``$SITE`` empty filesystem locations, and ``$S3_SITE`` an empty bucket on
the local SeaweedFS, whose endpoint and keys are in the ``AWS_*`` environment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "replication.md"
BLOCK = re.compile(r"^```sh replication-example\n(.*?)^```", re.DOTALL | re.MULTILINE)


def examples() -> list[Any]:
    text = DOC.read_text(encoding="utf-8")
    return [
        pytest.param(m.group(1), id=f"replication.md:{text.count(chr(10), 0, m.start()) + 1}")
        for m in BLOCK.finditer(text)
    ]


def test_the_docs_have_examples() -> None:
    text = "\n".join(p.values[0] for p in examples())
    for needle in ("--to", "--newest", "--source", "--dry-run", '--repo "$SITE"', "S3_SITE"):
        assert needle in text


@pytest.mark.parametrize("script", examples())
def test_replication_example(script: str, tmp_path: Path, s3_store: Any) -> None:
    bucket = f"doc-{uuid.uuid4().hex[:12]}"
    s3_store.make_bucket(bucket)
    opts = s3_store.options
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "SAFEHOLD_PASSWORD": "docs example password",
        "PRIMARY": (tmp_path / "primary").as_uri(),
        "SITE": (tmp_path / "site").as_uri(),
        "S3_SITE": s3_store.url(bucket, "site"),
        "AWS_ENDPOINT_URL_S3": opts["endpoint"],
        "AWS_ACCESS_KEY_ID": opts["access_key_id"],
        "AWS_SECRET_ACCESS_KEY": opts["secret_access_key"],
        "AWS_REGION": opts.get("region", "us-east-1"),
    }
    env.pop("SAFEHOLD_REPOSITORY", None)
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
