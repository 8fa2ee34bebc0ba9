"""The chart's PrometheusRule: Safehold's alerts (charts/safehold/files/alerts.yaml) as they
are, rendered where the Prometheus Operator's CRD exists unless prometheusRule.enabled is
false, with extra labels."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "safehold"
CRD = "monitoring.coreos.com/v1/PrometheusRule"


def _rules(helm: str, *args: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [helm, "template", "safehold", str(CHART), "--namespace", "safehold-system", *args],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    return [d for d in docs if d["kind"] == "PrometheusRule"]


def test_rendered_where_the_crd_exists_with_the_same_rules(helm: str) -> None:
    (rule,) = _rules(helm, "--api-versions", CRD, "--set", "prometheusRule.labels.release=kps")
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["metadata"]["namespace"] == "safehold-system"


def test_not_rendered_without_the_crd_or_when_turned_off(helm: str) -> None:
    assert _rules(helm) == []
    assert _rules(helm, "--api-versions", CRD, "--set", "prometheusRule.enabled=false") == []


def _operator_down(rule: dict[str, Any]) -> str:
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    return str(next(r for r in alerts if r.get("alert") == "SafeholdOperatorDown")["expr"])


def test_operator_down_follows_a_full_name_without_safehold(helm: str) -> None:
    """The metrics Service is <fullname>-metrics, which names the scrape job: with
    fullnameOverride the alert must still find it, or absent() fires for ever."""
    (rule,) = _rules(helm, "--api-versions", CRD, "--set", "fullnameOverride=backup-op")
    assert _operator_down(rule) == (
        'up{job=~".*backup-op.*"} == 0 or absent(up{job=~".*backup-op.*"})'
    )
    (default,) = _rules(helm, "--api-versions", CRD)
    assert 'job=~".*safehold.*"' in _operator_down(default)
