"""Lets the tests import bench/ modules (bench/ is a directory of scripts, not a package), and
generates one small data set that every test of the benchmark shares."""

import sys
from pathlib import Path

import pytest

_BENCH = str(Path(__file__).resolve().parents[2] / "bench")
if _BENCH not in sys.path:
    sys.path.insert(0, _BENCH)

import dataset  # noqa: E402  (needs the path above)

SCALE = 0.01  # about 10 MB: big enough for every kind of file, cheap enough for `make test`


@pytest.fixture(scope="session")
def data(tmp_path_factory: pytest.TempPathFactory) -> dataset.DataSet:
    return dataset.generate(tmp_path_factory.mktemp("data") / "set", SCALE, seed=7)
