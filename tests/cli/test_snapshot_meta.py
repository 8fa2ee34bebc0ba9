"""``--meta KEY=VALUE`` on every command that writes snapshots, as a Job runs them.

What a restore into a fresh cluster needs (the claim's size and StorageClass, what kind of
source it was) is in the snapshots themselves; ``safehold snapshots --json`` shows it.
``backup`` adds nothing by itself; ``dump`` and ``export-resources`` say what they are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testground.databases import DatabaseServer, load_sample_data
from testground.kube import Cluster, Namespace

PASSWORD = "meta cli password"

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SAFEHOLD_", "PG", "MYSQL"))},
        "SAFEHOLD_REPOSITORY": (tmp_path / "repo").as_uri(),
        "SAFEHOLD_PASSWORD": PASSWORD,
    }


@pytest.fixture
def run(env: dict[str, str]) -> Run:
    def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "safehold", *args],
            env={**env, **extra_env},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    assert run("repo", "init").returncode == 0
    return run


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.txt").write_text("alpha\n" * 100)
    return root


def _summary(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return doc


def _meta_by_source(run: Run) -> dict[str, dict[str, str]]:
    done = run("snapshots", "--json")
    assert done.returncode == 0, done.stderr
    return {s["source"]: s["meta"] for s in _summary(done)["snapshots"]}


def test_backup_stores_exactly_the_meta_it_is_given(run: Run, src: Path) -> None:
    labels = json.dumps({"app": "web", "tier": "db"})
    done = run(
        "backup",
        str(src),
        "--source",
        "shop/nightly/web-data",
        "--meta",
        "source.kind=volume",
        "--meta",
        "claim.size=10Gi",
        "--meta",
        "claim.storageClassName=fast-ssd",
        "--meta",
        "claim.accessModes=ReadWriteOnce,ReadOnlyMany",
        "--meta",
        "claim.volumeMode=Filesystem",
        "--meta",
        f"claim.labels={labels}",
        "--meta",
        "note=a=b",  # only the first '=' separates
        "--json",
    )
    assert done.returncode == 0, done.stderr
    plain = run("backup", str(src), "--source", "plain", "--json")
    assert plain.returncode == 0, plain.stderr
    meta = _meta_by_source(run)
    assert meta["plain"] == {}
    assert meta["shop/nightly/web-data"] == {
        "source.kind": "volume",
        "claim.size": "10Gi",
        "claim.storageClassName": "fast-ssd",
        "claim.accessModes": "ReadWriteOnce,ReadOnlyMany",
        "claim.volumeMode": "Filesystem",
        "claim.labels": labels,
        "note": "a=b",
    }
    assert json.loads(meta["shop/nightly/web-data"]["claim.labels"]) == {"app": "web", "tier": "db"}


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        (["claim.size"], "argument --meta: takes KEY=VALUE, got 'claim.size'"),
        (["=10Gi"], "argument --meta: meta key '' is not allowed"),
        (["bad key=1"], "argument --meta: meta key 'bad key' is not allowed"),
        (["claim.labels=" + "x" * 1025], "argument --meta: meta value of 'claim.labels' has 1025"),
        ([f"k{i}=v" for i in range(33)], "--meta: meta has 33 entries; at most 32"),
    ],
)
def test_a_bad_meta_is_a_usage_error_naming_the_option(
    run: Run, src: Path, meta: list[str], message: str
) -> None:
    args = [a for m in meta for a in ("--meta", m)]
    done = run("backup", str(src), "--source", "web", *args, "--json")
    assert done.returncode == 2
    assert message in done.stderr
    assert _meta_by_source(run) == {}  # nothing was written


def test_dump_gives_every_snapshot_its_database_meta(
    run: Run, tmp_path: Path, postgres_server: DatabaseServer
) -> None:
    server = postgres_server
    db = f"meta_{tmp_path.name[-8:].replace('-', '_')}"
    load_sample_data(server, db, rows=100)
    password = tmp_path / "db-password"
    password.write_text(server.password)
    conn = ["--db-host", server.host, "--db-port", str(server.port), "--db-user", server.user]
    conn += ["--db-password-file", str(password)]
    done = run(
        "dump",
        "postgresql",
        *conn,
        "--source",
        "shop/nightly/orders",
        "--meta",
        "team=shop",
        "--meta",
        "source.kind=ignored",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    meta = _meta_by_source(run)
    assert meta[f"shop/nightly/orders/db/{db}"] == {
        "team": "shop",
        "source.kind": "database",  # the command's own wins over --meta
        "database.engine": "postgresql",
        "database.name": db,
        "database.tools": "postgresql 15",  # whose pg_dump made it: the server's own
    }
    assert meta["shop/nightly/orders/globals"] == {
        "team": "shop",
        "source.kind": "database",
        "database.engine": "postgresql",
        "database.name": "globals",
        "database.tools": "postgresql 15",
    }
    bad = run("dump", "postgresql", *conn, "--source", "x", "--meta", "nokv", "--json")
    assert bad.returncode == 2
    assert "argument --meta" in bad.stderr


def test_export_resources_marks_its_snapshot_as_cluster_resources(
    run: Run, cluster: Cluster, namespace: Namespace
) -> None:
    kube = {"KUBECONFIG": str(cluster.kubeconfig)}
    done = run(
        "export-resources",
        "-n",
        str(namespace),
        "--source",
        "shop/nightly/resources",
        "--meta",
        "cluster=a",
        "--json",
        **kube,
    )
    assert done.returncode == 0, done.stderr
    assert _meta_by_source(run)["shop/nightly/resources"] == {
        "cluster": "a",
        "source.kind": "clusterResources",
    }
    bad = run("export-resources", "-n", str(namespace), "--meta", "a b=c", **kube)
    assert bad.returncode == 2
    assert "argument --meta" in bad.stderr
