"""deploy/safehold.yaml, the kubectl install: up to date with the chart, and complete."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from safehold.api.crdgen import crd_files

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "safehold.yaml"
SCRIPT = REPO / "charts" / "render_manifest.py"


def documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(DEPLOY.read_text()) if d]


def test_manifest_is_up_to_date_with_the_chart() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_check_mode_names_a_stale_file_and_the_fix(tmp_path: Path) -> None:
    stale = tmp_path / "safehold.yaml"
    stale.write_text(DEPLOY.read_text().replace("replicas: 2", "replicas: 1"))
    argv = [sys.executable, str(SCRIPT), "--check", "--output", str(stale)]
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 1
    assert str(stale) in result.stderr
    assert "python charts/render_manifest.py" in result.stderr
    missing = tmp_path / "missing.yaml"
    argv[-1] = str(missing)
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 1
    assert "is missing" in result.stderr
    assert not missing.exists()


def test_namespace_first_then_crds_then_the_operator() -> None:
    docs = documents()
    kinds = [d["kind"] for d in docs]
    assert kinds[0] == "Namespace"
    assert docs[0]["metadata"]["name"] == "safehold-system"
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    assert kinds[1 : 1 + len(crds)] == ["CustomResourceDefinition"] * len(crds)
    generated = [yaml.safe_load(text) for text in crd_files().values()]
    assert sorted(crds, key=lambda d: d["metadata"]["name"]) == sorted(
        generated, key=lambda d: d["metadata"]["name"]
    )
    assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "Deployment"} <= set(
        kinds
    )


def test_every_namespaced_object_lands_in_safehold_system() -> None:
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
    for doc in documents():
        if doc["kind"] in cluster_scoped:
            assert "namespace" not in doc["metadata"], doc["metadata"]["name"]
        else:
            assert doc["metadata"]["namespace"] == "safehold-system", doc["metadata"]["name"]
    binding = next(d for d in documents() if d["kind"] == "ClusterRoleBinding")
    assert binding["subjects"][0]["namespace"] == "safehold-system"
