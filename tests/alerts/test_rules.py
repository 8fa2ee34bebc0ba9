"""Safehold's alerts (charts/safehold/files/alerts.yaml, the one source): promtool's unit
tests of every rule, firing and not firing; the plain rules file in deploy/ is the same
rules; each alert has a severity, a summary, a description naming the object and a runbook
that exists in docs/monitoring.md. The chart's rendering is tests/chart/test_prometheus_rule.py.

promtool comes from the Debian package ``prometheus`` (e2e/install-deps); without it these
tests fail rather than skip, so CI never passes without running the rules.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "charts" / "safehold" / "files" / "alerts.yaml"
PLAIN = REPO / "deploy" / "prometheus-rules.yaml"
MONITORING = REPO / "docs" / "monitoring.md"
HERE = Path(__file__).parent
RUNBOOKS = "https://github.com/safehold/safehold/blob/main/docs/monitoring.md#"


def _rules(path: Path) -> list[dict[str, Any]]:
    doc = yaml.safe_load(path.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: run e2e/install-deps (Debian package prometheus)")
    return found


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the document's headings."""
    headings = re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run(
        [_promtool(), "check", "rules", str(SOURCE), str(PLAIN)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("tests", ["rules_test.yaml", "overdue_test.yaml"])
def test_promtool_unit_tests(tests: str, tmp_path: Path) -> None:
    """Every alert fires on its failure and stays quiet otherwise. The annotations are left
    out of the rules under test (promtool would compare their full text; their content is
    tested below), so the cases name only labels."""
    doc = yaml.safe_load(SOURCE.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(doc))
    shutil.copy(HERE / tests, tmp_path / tests)
    result = subprocess.run(
        [_promtool(), "test", "rules", tests],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    tested = {
        case["alertname"]
        for name in ("rules_test.yaml", "overdue_test.yaml")
        for test in yaml.safe_load((HERE / name).read_text())["tests"]
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert tested == {rule["alert"] for rule in _rules(SOURCE)}


def test_the_plain_rules_file_is_the_same_rules() -> None:
    assert yaml.safe_load(PLAIN.read_text()) == yaml.safe_load(SOURCE.read_text())


def test_each_alert_says_what_and_where_to_read_on() -> None:
    anchors = _anchors(MONITORING.read_text())
    for rule in _rules(SOURCE):
        name, notes = rule["alert"], rule["annotations"]
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert notes["summary"], name
        assert notes["description"], name
        assert notes["runbook_url"] == RUNBOOKS + name.lower(), name
        assert name.lower() in anchors, f"docs/monitoring.md has no section {name}"
        assert "`" in notes["description"], f"{name}: no command to run"
        if "namespace" in rule["expr"] or "safehold_" in rule["expr"]:
            assert "{{ $labels." in notes["description"], f"{name}: names no object"
