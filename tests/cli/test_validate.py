"""``safehold validate``: manifests are checked as the controller checks them, before they
reach a cluster; every example in the docs passes, and a mistake is named by its field."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Values for the placeholders the walkthrough marks (its tests fill them in the same way).
PLACEHOLDERS = {
    "S3_ENDPOINT": "http://127.0.0.1:8333",
    "BUCKET": "backups",
    "RUN": "nightly-1",
    "CLIENT_ID": "00000000-0000-0000-0000-000000000000",
    "ACCOUNT": "backupsaccount",
}


def _validate(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safehold", "validate", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _doc_examples() -> list[tuple[str, str]]:
    found = []
    for md in sorted([*REPO.glob("docs/**/*.md"), REPO / "README.md"]):
        for block in re.findall(r"```ya?ml\n(.*?)```", md.read_text(), re.DOTALL):
            if "apiVersion: safehold.io/" in block:  # (labels and annotations don't count)
                found.append((str(md.relative_to(REPO)), block))
    return found


def test_every_example_in_the_docs_is_valid(tmp_path: Path) -> None:
    examples = _doc_examples()
    assert len(examples) >= 10, "the docs show Safehold resources in YAML blocks"
    for i, (source, block) in enumerate(examples):
        for key, value in PLACEHOLDERS.items():
            block = block.replace(f"<{key}>", value)
        left = re.findall(r"<([A-Z_]+)>", block)
        assert not left, f"{source}: give placeholder(s) {left} a value in PLACEHOLDERS"
        (tmp_path / f"{i:02d}.yaml").write_text(block)
    done = _validate("--json", str(tmp_path))
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["errors"] == [], summary["errors"]
    assert done.returncode == 0
    assert summary["valid"] >= len(examples)


def test_a_misspelt_field_is_named_with_the_fields_that_exist(tmp_path: Path) -> None:
    manifest = tmp_path / "policy.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\nstringData: {password: x}\n"
        "---\n"
        "apiVersion: safehold.io/v1alpha1\nkind: BackupPolicy\nmetadata: {name: nightly}\n"
        "spec:\n  location: {name: main}\n  sources: [{volume: {claimName: data}}]\n"
        "  schedule: {slots: [{cron: '0 2 * * *'}]}\n  retension: {keepLast: 7}\n"
    )
    done = _validate(str(manifest))
    assert done.returncode == 5, done.stdout + done.stderr
    assert f"{manifest}: BackupPolicy/nightly: spec.retension: is not a known field" in done.stdout
    assert "retention" in done.stdout  # the field that was meant is listed
    assert "1 skipped" in done.stdout  # the Secret is not Safehold's to judge


def test_json_summary_lists_every_problem(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "run.yaml").write_text(
        "apiVersion: v1\nkind: List\nitems:\n"
        "- apiVersion: safehold.io/v1alpha1\n  kind: BackupRun\n  metadata: {generateName: r-}\n"
        "  spec: {policyRef: {name: nightly}}\n"
        "- apiVersion: safehold.io/v1alpha1\n  kind: BackupRun\n  metadata: {}\n"
        "  spec: {policyRef: {name: Not_A_Name}}\n"
    )
    (tmp_path / "broken.yml").write_text("a: [b\n")
    (tmp_path / "notes.txt").write_text("not a manifest: not read")
    done = _validate("--json", str(tmp_path))
    assert done.returncode == 5
    summary = json.loads(done.stdout.strip())  # --json: exactly one line
    assert (summary["documents"], summary["valid"], summary["invalid"]) == (2, 1, 2)
    fields = {(Path(e["file"]).name, e["field"]) for e in summary["errors"]}
    assert ("run.yaml", "metadata.name") in fields
    assert ("run.yaml", "spec.policyRef.name") in fields
    broken = next(e for e in summary["errors"] if e["file"].endswith("broken.yml"))
    assert broken["message"].startswith("not valid YAML (line 2")


@pytest.mark.parametrize("what", ["missing file", "stdin"])
def test_unreadable_input_is_an_error_not_a_crash(what: str, tmp_path: Path) -> None:
    if what == "stdin":
        done = _validate("-", stdin="apiVersion: safehold.io/v1alpha1\nkind: Backup\n")
        assert "'Backup' is not a Safehold kind" in done.stdout
    else:
        done = _validate(str(tmp_path / "nope.yaml"))
        assert "cannot read: No such file or directory" in done.stdout
    assert done.returncode == 5
    assert "Traceback" not in done.stderr
