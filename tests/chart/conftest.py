"""Fixtures for the chart tests: the helm binary and ``render``, which runs ``helm template``.

helm is the real one that ``e2e/install-deps`` installs (found like charts/render_manifest.py
finds it), so these tests check what users get, including helm's own schema validation.
"""

from __future__ import annotations

import importlib.util
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "safehold"
DEPLOY = REPO / "deploy" / "safehold.yaml"


def _load_render_manifest() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "render_manifest", REPO / "charts" / "render_manifest.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_manifest = _load_render_manifest()


class Render(Protocol):
    """``render(values)`` -> the rendered objects; ``render.fails(values)`` -> helm's error."""

    def __call__(
        self, values: dict[str, Any] | None = None, *, release: str = "safehold"
    ) -> list[dict[str, Any]]: ...

    def fails(self, values: dict[str, Any]) -> str: ...


@pytest.fixture(scope="session")
def helm() -> str:
    """The path of the helm binary."""
    found: str = render_manifest.find_helm()
    return found


def run_helm(
    helm: str, *args: str, values: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run helm with ``values`` passed as a values file on stdin (``-f -``)."""
    argv = [helm, *args]
    if values is not None:
        argv += ["-f", "-"]
    return subprocess.run(
        argv,
        input=yaml.safe_dump(values) if values is not None else None,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


class _Renderer:
    def __init__(self, helm: str) -> None:
        self.helm = helm

    def _template(
        self, values: dict[str, Any] | None, release: str
    ) -> subprocess.CompletedProcess[str]:
        return run_helm(
            self.helm, "template", release, str(CHART), "--namespace", "safehold-system",
            values=values,
        )  # fmt: skip

    def __call__(
        self, values: dict[str, Any] | None = None, *, release: str = "safehold"
    ) -> list[dict[str, Any]]:
        result = self._template(values, release)
        assert result.returncode == 0, f"helm template failed: {result.stderr}"
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    def fails(self, values: dict[str, Any]) -> str:
        result = self._template(values, "safehold")
        assert result.returncode != 0, f"helm template accepted {values}"
        return result.stderr


@pytest.fixture(scope="session")
def render(helm: str) -> Render:
    """Render the chart with some values (merged over the defaults, as ``-f`` does)."""
    return _Renderer(helm)


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The objects of one kind."""
    return [o for o in objects if o["kind"] == kind]


Finder = Callable[[list[dict[str, Any]], str], list[dict[str, Any]]]


@pytest.fixture(scope="session")
def of_kind() -> Finder:
    """``of_kind(objects, kind)``: the objects of one kind (tests cannot import conftest)."""
    return by_kind
