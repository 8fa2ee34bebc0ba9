"""Restoring without a BackupRun, without a cluster: the snapshot metadata the backup Jobs
record, the mapping from the repository's snapshots to a restore plan (checked with the
real CLI's ``snapshots --latest --json`` output), the re-created claim, and the resolve Job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safehold.api import BackupLocation, BackupPolicy, RestoreRequest
from safehold.api.jobs import JobSettings
from safehold.api.restorerequest import ResolvedSnapshot
from safehold.api.summaries import SnapshotsSummary
from safehold.controller.commands import meta_options
from safehold.controller.jobs import JobImage, build_job, with_settings
from safehold.controller.restoreplan import claim_manifest
from safehold.controller.restoresources import (
    RestoreSource,
    parse_resolved,
    repository_origin,
    resolve_job,
    resolve_job_name,
    run_origin,
    sources_from_snapshots,
)
from safehold.controller.snapshotmeta import (
    BASE_KIND,
    WAL_KIND,
    ClaimShape,
    claim_shape,
    original_claim,
    source_meta,
    volume_meta,
)
from safehold.controller.sources.claims import VolumeClaim

PREFIX = "prod/app/"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _snap(source: str, sid: str, hour: int, tags: list[str] | None = None, **meta: str) -> Any:
    return ResolvedSnapshot(
        source=source,
        snapshot_id=sid,
        time=T0.replace(hour=hour),
        tags=tags or [],
        meta={k.replace("_", "."): v for k, v in meta.items()},
    )


def _request(**spec: Any) -> RestoreRequest:
    return RestoreRequest.model_validate(
        {
            "metadata": {"name": "dr", "namespace": "prod", "uid": "u1"},
            "spec": {"policyRef": {"name": "app"}, **spec},
        }
    )


def _claim(name: str = "data", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"app": "web", "tier": "db"}},
        "spec": {
            "accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
            "resources": {"requests": {"storage": "3Gi"}},
            "storageClassName": "fast",
            "volumeMode": "Filesystem",
            **spec,
        },
    }


# --- what the backup Jobs record ---------------------------------------------------------


def test_volume_meta_is_the_claims_shape_and_round_trips() -> None:
    meta = volume_meta(_claim())
    assert meta == {
        "source.kind": "volume",
        "claim.name": "data",
        "claim.size": "3Gi",
        "claim.storageClassName": "fast",
        "claim.accessModes": "ReadWriteOnce,ReadOnlyMany",
        "claim.volumeMode": "Filesystem",
        "claim.labels": '{"app":"web","tier":"db"}',
    }
    assert claim_shape(meta) == ClaimShape(
        name="data",
        size="3Gi",
        storage_class_name="fast",
        access_modes=("ReadWriteOnce", "ReadOnlyMany"),
        volume_mode="Filesystem",
        labels={"app": "web", "tier": "db"},
    )


def test_empty_values_and_oversized_labels_are_left_out() -> None:
    claim = {"metadata": {"name": "d", "labels": {f"k{i}": "v" * 60 for i in range(20)}}}
    meta = volume_meta(claim)
    assert meta == {"source.kind": "volume", "claim.name": "d"}
    assert meta_options({"b": "2", "a": "1", "c": ""}) == ["--meta", "a=1", "--meta", "b=2"]
    assert source_meta("app", "data") == {"policy.name": "app", "source.name": "data"}


def test_original_claim_of_a_snapshot_clone() -> None:
    policy = BackupPolicy.model_validate(
        {
            "metadata": {"name": "app", "namespace": "prod"},
            "spec": {
                "location": {"name": "loc"},
                "sources": {
                    "volumes": [
                        {"name": "db", "claimName": "pg-data"},
                        {"selector": {"matchLabels": {"app": "web"}}},
                    ]
                },
            },
        }
    )
    clone = VolumeClaim("db", "run-db-abc-clone", "spec.sources.volumes[0].claimName")
    assert original_claim(policy, clone) == "pg-data"
    selected = VolumeClaim("web-1", "run-web-1-clone", "spec.sources.volumes[1].selector")
    assert original_claim(policy, selected) == "web-1"


# --- from the repository's snapshots to sources ------------------------------------------


def test_snapshots_map_to_one_source_per_volume_database_and_resources() -> None:
    snaps = [
        _snap("prod/app/data", "v1", 1, ["run=r1"], source_kind="volume", claim_size="3Gi"),
        _snap("prod/app/data", "v2", 2, ["run=r2"], source_kind="volume", claim_size="3Gi"),
        _snap(
            "prod/app/pg/db/orders",
            "d1",
            2,
            ["run=r2", "database=orders"],
            source_kind="database",
            source_name="pg",
        ),
        _snap("prod/app/pg/globals", "g1", 3, ["run=r3", "database=globals"]),
        _snap("prod/app/resources", "m1", 2, ["run=r2"], source_kind="clusterResources"),
        _snap("prod/app-other/data", "x", 5),  # another policy with a longer name
        _snap("prod/app/weird/deep/path", "w", 5),  # no source of ours has that shape
    ]
    sources = sources_from_snapshots(PREFIX, snaps)
    by_name = {s.name: s for s in sources}
    assert sorted(by_name) == ["data", "pg", "resources"]
    assert by_name["data"].kind == "volume"
    assert by_name["data"].snapshot_id == "v2"
    assert by_name["data"].run_tag == "r2"
    assert claim_shape(by_name["data"].meta).size == "3Gi"
    # a database source: its newest dump (globals, a newer run), and that run's tag
    assert by_name["pg"].kind == "database"
    assert (by_name["pg"].snapshot_id, by_name["pg"].run_tag) == ("g1", "r3")
    assert by_name["resources"].kind == "clusterResources"
    origin = repository_origin("app", PREFIX, "site", snaps)
    assert origin.run is None
    assert "BackupLocation site" in origin.described
    assert PREFIX in origin.described


def test_a_point_in_time_source_is_one_database_source_by_its_base_backups() -> None:
    """Its base backup stands for it (a restore then says what it cannot do with it); its
    many WAL drains are no source of their own."""
    from safehold.engine.databases import physical

    assert (BASE_KIND, WAL_KIND) == (physical.BASE_KIND, physical.WAL_KIND)
    snaps = [
        _snap("prod/app/orders/pg/base", "b1", 1, ["run=r1"], source_kind=BASE_KIND,
              source_name="orders"),
        _snap("prod/app/orders/pg/wal", "w1", 2, [], source_kind=WAL_KIND, source_name="orders"),
        _snap("prod/app/orders/pg/wal", "w2", 3, [], source_kind=WAL_KIND, source_name="orders"),
    ]  # fmt: skip
    (source,) = sources_from_snapshots(PREFIX, snaps)
    assert (source.name, source.kind, source.snapshot_id) == ("orders", "database", "b1")


def test_snapshots_without_meta_are_mapped_by_their_source_names() -> None:
    snaps = [
        _snap("prod/app/data", "v1", 1),
        _snap("prod/app/pg/db/orders", "d1", 1),
        _snap("prod/app/resources", "m1", 1),
    ]
    kinds = {s.name: s.kind for s in sources_from_snapshots(PREFIX, snaps)}
    assert kinds == {"data": "volume", "pg": "database", "resources": "clusterResources"}


def test_a_runs_sources_keep_their_run() -> None:
    run = {
        "metadata": {"name": "nightly"},
        "spec": {"policyRef": {"name": "app"}},
        "status": {
            "sources": [
                {"name": "data", "kind": "volume", "snapshotId": "s1"},
                {"name": "broken", "kind": "volume"},
            ]
        },
    }
    origin = run_origin(run)
    assert (origin.policy, origin.run) == ("app", "nightly")
    assert origin.sources == [RestoreSource("data", "volume", "s1", run_tag="nightly")]


def test_the_real_cli_output_maps_to_sources(tmp_path: Path) -> None:
    """The contract with the Job, tested with the real ``safehold`` command."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")},
        "SAFEHOLD_REPOSITORY": (tmp_path / "repo").as_uri(),
        "SAFEHOLD_PASSWORD": "unit test password",
    }

    def run(*args: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "safehold", *args, "--json"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return doc

    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("x")
    run("repo", "init")
    meta = meta_options({**source_meta("app", "data"), **volume_meta(_claim())})
    for hour in (1, 2):
        run("backup", str(data), "--source", "prod/app/data", "--tag", f"run=r{hour}",
            "--time", f"2026-01-01T0{hour}:00:00Z", *meta)  # fmt: skip
    run("backup", str(data), "--source", "prod/other/data")
    doc = run(
        "snapshots", "--source-prefix", PREFIX, "--before", "2026-01-01T01:30:00Z", "--latest"
    )
    sources = sources_from_snapshots(PREFIX, parse_resolved(SnapshotsSummary.model_validate(doc)))
    assert [(s.name, s.kind, s.run_tag) for s in sources] == [("data", "volume", "r1")]
    assert claim_shape(sources[0].meta).size == "3Gi"
    assert claim_shape(sources[0].meta).labels == {"app": "web", "tier": "db"}


# --- the re-created claim ----------------------------------------------------------------


def test_a_claim_is_recreated_from_the_snapshots_meta() -> None:
    shape = claim_shape(volume_meta(_claim()))
    req = _request(storageClassMapping={"fast": "faster"})
    pvc = claim_manifest(req, "data", "data", None, shape)
    assert pvc["spec"]["resources"]["requests"]["storage"] == "3Gi"
    assert pvc["spec"]["storageClassName"] == "faster"
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce", "ReadOnlyMany"]
    assert pvc["spec"]["volumeMode"] == "Filesystem"
    assert pvc["metadata"]["labels"]["app"] == "web"
    assert pvc["metadata"]["labels"]["safehold.io/restore"] == "dr"


def test_target_wins_and_the_live_claim_before_the_meta() -> None:
    shape = claim_shape(volume_meta(_claim()))
    req = _request(target={"claimName": "copy", "size": "5Gi", "storageClassName": "slow"})
    pvc = claim_manifest(req, "copy", "data", None, shape)
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert pvc["spec"]["storageClassName"] == "slow"
    assert "app" not in pvc["metadata"]["labels"]  # a copy does not join the original's set
    live = _claim(resources={"requests": {"storage": "7Gi"}})
    pvc = claim_manifest(_request(), "data", "data", live, shape)
    assert pvc["spec"]["resources"]["requests"]["storage"] == "7Gi"
    bare = claim_manifest(_request(), "data", "data", None, ClaimShape())
    assert bare["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert bare["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "storageClassName" not in bare["spec"]


# --- the resolve Job ---------------------------------------------------------------------


def test_the_resolve_job_lists_the_policys_newest_snapshots() -> None:
    location = BackupLocation.model_validate(
        {
            "metadata": {"name": "site", "namespace": "prod"},
            "spec": {
                "provider": "s3",
                "bucket": "b",
                "credentialsSecretRef": {"name": "c"},
                "repositoryPasswordSecretRef": {"name": "p"},
            },
        }
    )
    req = _request(pointInTime="2026-01-01T01:30:00Z")
    body = {"apiVersion": "safehold.io/v1alpha1", "kind": "RestoreRequest",
            "metadata": {"name": "dr", "namespace": "prod", "uid": "u1"}}  # fmt: skip
    settings = JobSettings.model_validate(
        {"activeDeadlineSeconds": 77, "tolerations": [{"key": "dr", "operator": "Exists"}]}
    )
    request = resolve_job(JobImage("safehold:t"), body, req, location)
    job = build_job(with_settings(request, settings))
    assert job["metadata"]["name"] == resolve_job_name("dr")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:6] == [
        "snapshots", "--source-prefix", PREFIX, "--before", "2026-01-01T01:30:00+00:00", "--latest",
    ]  # fmt: skip
    assert "--repo" in args
    assert "s3://b" in args
    assert job["spec"]["activeDeadlineSeconds"] == 77
    assert job["spec"]["template"]["spec"]["tolerations"] == [{"key": "dr", "operator": "Exists"}]
    assert resolve_job_name("dr") != resolve_job_name("resolve")
