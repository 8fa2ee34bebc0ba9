"""``helm lint --strict`` passes for the default values and each supported variant."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from safehold.api.crdgen import crd_files

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "safehold"

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "service-monitor": {"serviceMonitor": {"enabled": True}},
    "grafana-dashboard": {"grafanaDashboard": {"enabled": True}},
    "no-rbac": {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "op"}},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_helm_lint_strict(helm: str, variant: str, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(VARIANTS[variant]))
    result = subprocess.run(
        [helm, "lint", "--strict", str(CHART), "-f", str(values)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_chart_crds_are_the_generated_ones() -> None:
    """Helm installs CRDs only from the chart's crds/: the same files as the repository's."""
    committed = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    assert committed == crd_files(), "run python -m safehold.api.crdgen"


def test_chart_and_app_versions_match_the_package() -> None:
    from safehold import __version__

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    assert chart["apiVersion"] == "v2"
