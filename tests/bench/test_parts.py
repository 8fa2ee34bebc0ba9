"""The pure parts of the issue-19 benchmark: the small-files data set, the server's request
counters, the fresh file system (and its fallback), and the targets they feed."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

import freshfs
import report
import smallset
from traffic import Traffic, parse_metrics

# A trimmed exposition of SeaweedFS 4.x (`weed mini -metricsPort`), as scraped in a bench run.
_METRICS = """\
# HELP SeaweedFS_s3_request_total Counter of s3 requests.
# TYPE SeaweedFS_s3_request_total counter
SeaweedFS_s3_request_total{bucket="",code="200",type="LIST"} 1
SeaweedFS_s3_request_total{bucket="",code="403",type="LIST"} 1
SeaweedFS_s3_request_total{bucket="bench",code="200",type="GET"} 2
SeaweedFS_s3_request_total{bucket="bench",code="404",type="GET"} 3
SeaweedFS_s3_request_total{bucket="bench",code="200",type="LIST"} 1
SeaweedFS_s3_request_total{bucket="bench",code="200",type="PUT"} 2
SeaweedFS_s3_request_total{bucket="bench",code="204",type="DELETE"} 1
SeaweedFS_s3_request_total{bucket="bench",code="200",type="POST"} 1.5e+01
SeaweedFS_s3_request_seconds_count{bucket="bench",type="PUT"} 2
SeaweedFS_s3_bucket_traffic_received_bytes_total{bucket="bench"} 5000
SeaweedFS_s3_bucket_traffic_received_bytes_total{bucket="other"} 10
SeaweedFS_s3_bucket_traffic_sent_bytes_total{bucket="bench"} 4096
SeaweedFS_s3_in_flight_requests{type="PUT"} 0
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.34
"""


def test_request_counts_are_summed_by_kind_over_buckets_and_codes() -> None:
    counted = parse_metrics(_METRICS)
    assert counted.requests == {"LIST": 3, "GET": 5, "PUT": 2, "DELETE": 1, "POST": 15}
    assert counted.total_requests == 26
    assert (counted.bytes_up, counted.bytes_down) == (5010, 4096)
    assert counted.server_cpu_seconds == 12.34


def test_one_commands_traffic_is_the_difference_of_two_readings() -> None:
    before = Traffic(
        requests={"GET": 5, "PUT": 2}, bytes_up=100, bytes_down=50, server_cpu_seconds=10.5
    )
    after = Traffic(
        requests={"GET": 5, "PUT": 7, "LIST": 1},
        bytes_up=900,
        bytes_down=60,
        server_cpu_seconds=12.25,
    )
    command = after - before
    assert command.requests == {"PUT": 5, "LIST": 1}  # kinds it did not use are left out
    assert (command.bytes_up, command.bytes_down) == (800, 10)
    assert command.server_cpu_seconds == 1.75
    assert command.describe() == "PUT 5, LIST 1; 0.0 MB up, 0.0 MB down; server CPU 1.75 s"
    assert parse_metrics("# nothing counted yet\n") == Traffic()


def test_the_small_files_set_has_the_stated_shape(tmp_path: Path) -> None:
    data = smallset.generate(tmp_path / "set", scale=0.002, seed=3)
    files = data.manifest.v1.files
    assert len(files) == 200 == smallset.file_count(0.002)
    assert smallset.file_count(1.0) == 100_000
    directories = {path.split("/")[0] for path in files}
    assert len(directories) == smallset.DIRECTORIES == 100
    sizes = [entry.size for entry in files.values()]
    assert min(sizes) >= 0
    assert max(sizes) <= 2048
    assert len(set(sizes)) > 150  # spread over the range, not a few fixed sizes
    for path, entry in files.items():
        assert (data.path("v1") / path).stat().st_size == entry.size
    assert data.manifest.v2 == data.manifest.v1  # the second backup is an unchanged re-run
    assert not data.manifest.changes.modified


def test_the_small_files_set_is_reproducible_and_seeded(tmp_path: Path) -> None:
    first = smallset.generate(tmp_path / "a", scale=0.002, seed=3).manifest.v1
    again = smallset.generate(tmp_path / "b", scale=0.002, seed=3).manifest.v1
    other = smallset.generate(tmp_path / "c", scale=0.002, seed=4).manifest.v1
    assert first == again
    assert first != other


def test_the_small_files_set_is_cached(tmp_path: Path) -> None:
    made = smallset.ensure(0.001, seed=3, cache=tmp_path)
    marker = made.path("v1") / "marker"
    marker.write_text("from the first call")
    assert smallset.ensure(0.001, seed=3, cache=tmp_path).root == made.root
    assert marker.exists()  # found, not generated again


def test_without_root_the_bench_falls_back_to_a_directory_and_says_so(tmp_path: Path) -> None:
    root = tmp_path / "part"
    with freshfs.fresh(root, 1 << 30, 10_000, euid=lambda: 1000) as fs:
        assert fs.kind == "directory"
        assert "NOT a fresh file system" in fs.note
        assert "not root" in fs.note
        assert "not root" in fs.describe()
        assert list(Path(fs.path).iterdir()) == []
        (Path(fs.path) / "work").write_text("x")
    assert not Path(fs.path).exists()  # removed afterwards


def test_a_given_directory_is_used_and_named(tmp_path: Path) -> None:
    with freshfs.fresh(tmp_path / "part", 1 << 30, 10_000, given=tmp_path / "mine") as fs:
        assert fs.path == str(tmp_path / "mine" / "part")
        assert "given with --fs" in fs.describe()
    assert (tmp_path / "mine").exists()
    assert not (tmp_path / "mine" / "part").exists()


def test_image_size_has_room_and_a_floor() -> None:
    assert freshfs.image_bytes(0) == 1 << 30
    assert freshfs.image_bytes(10 << 30, 2 << 30) >= 18 << 30


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_as_root_a_fresh_ext4_is_mounted_and_removed(tmp_path: Path) -> None:
    root = tmp_path / "part"
    try:
        with freshfs.fresh(root, 256 << 20, 70_000) as fs:
            # as root (CI runs as root) the bench must get its ext4: a fallback here means
            # every figure of the bench was taken on the file system the issue distrusts
            assert fs.kind == "ext4 image", fs.note
            assert Path(fs.path) in freshfs.mounted_under(root)
            assert "nodiscard" in fs.describe()
            assert "discard" not in fs.mount_options.split(",")
            (Path(fs.path) / "file").write_bytes(b"x" * 4096)
            stat = os.statvfs(fs.path)
            assert stat.f_blocks * stat.f_frsize < 300 << 20
            assert stat.f_files > 69_000  # about the inodes asked for (mkfs rounds to groups)
    finally:
        assert not freshfs.mounted_under(root)
    assert not root.exists()  # image and mount point deleted


def test_the_image_has_inodes_for_every_restore_of_many_small_files(tmp_path: Path) -> None:
    import run

    data = smallset.generate(tmp_path / "set", scale=0.01, seed=3)  # 1,000 files
    size, inodes = run.image_size(data, tools=2, rounds=3)
    assert inodes >= 7 * 1_100  # the working copy and six restores, files and directories
    assert size >= 7 * 1_000 * 4096  # every file takes at least a block


def _step(seconds: float, repo_bytes: int = 0, traffic: Traffic | None = None) -> report.Step:
    """A round of a step that took ``seconds`` (of CPU too) and left ``repo_bytes``."""
    return report.Step(
        seconds=seconds,
        mb_per_s=None,
        user_seconds=seconds,
        system_seconds=0,
        peak_rss_bytes=100,
        repo_bytes=repo_bytes,
        repo_allocated_bytes=0,
        others_cpu_seconds=0,
        cache_dropped=True,
        traffic=traffic,
    )


def test_the_spread_of_the_rounds_is_reported() -> None:
    assert report.spread([_step(2.0), _step(1.0), _step(1.5)]) == "67%"
    assert report.spread([_step(1.0)]) == ""


def test_the_repository_size_is_the_median_of_the_rounds_not_of_the_median_time() -> None:
    """Each round's repository has a chunker seed of its own, so its size after the same
    incremental differs; the round of median time would pick one of them at random."""

    def run(name: str, rounds: list[report.Step]) -> report.ToolRun:
        return report.ToolRun(
            name=name,
            version="1",
            settings="",
            steps={"incremental": report.median_round(rounds)},
            rounds={"incremental": rounds},
            restore_verified=True,
        )

    # Safehold's round of median time (1.0 s) is its largest repository, restic's its smallest
    ours = run("safehold", [_step(1.0, 181), _step(0.9, 177), _step(1.1, 176)])
    theirs = run("restic", [_step(2.0, 187), _step(1.9, 190), _step(2.1, 191)])
    assert report.median_round(ours.rounds["incremental"]).repo_bytes == 181
    assert report.repository_size(ours) == 177
    assert report.repository_size(theirs) == 190
    assert report.ratios(ours, theirs)["repository size"] == 177 / 190


def _results(part: str, requests: tuple[int, int] | None) -> report.Results:
    """Safehold twice as fast as restic everywhere, with the given backup requests each."""

    def step(seconds: float, count: int | None) -> report.Step:
        traffic = (
            None
            if count is None
            else Traffic(requests={"PUT": count}, server_cpu_seconds=seconds / 4)
        )
        return _step(seconds, 90 if seconds < 2 else 100, traffic)

    def run(name: str, seconds: float, count: int | None) -> report.ToolRun:
        steps = {s: step(seconds, count) for s in ("full", "incremental", "restore")}
        return report.ToolRun(
            name=name, version="1", settings="", steps=steps, restore_verified=True
        )

    ours, theirs = (None, None) if requests is None else requests
    return report.Results(
        part=part,
        second_backup="unchanged re-run" if part.startswith("small") else "incremental",
        started=datetime.now(UTC),
        host={},
        dataset=report.DataSetInfo(
            scale=1,
            seed=1,
            generator_version=1,
            v1_bytes=1,
            v1_files=1,
            v2_bytes=1,
            v2_files=1,
            edited_bytes=0,
        ),
        cache_dropped=True,
        tools=[run("restic", 4.4, theirs), run("safehold", 1.9, ours)],
    )


def test_the_targets_of_issue_19_depend_on_the_part() -> None:
    engine = {t.name: t for t in report.evaluate_targets(_results("engine", None))}
    assert engine["restore speed"].required == ">= 2.5x restic"
    assert engine["restore speed"].status == "NOT MET"  # 2.32x
    assert engine["full backup speed"].status == "MET"
    assert engine["repository size (after both backups)"].status == "MET"  # 0.90x
    assert "object-store requests per backup" not in engine  # local: nothing counted

    small = {t.name: t for t in report.evaluate_targets(_results("smallfiles-s3", (30, 20)))}
    assert small["restore speed"].required == ">= 2x restic"
    assert small["restore speed"].status == "MET"
    assert small["unchanged re-run speed"].status == "MET"
    assert small["object-store requests per backup"].measured == 1.5
    assert small["object-store requests per backup"].status == "NOT MET"
    both = [_results("engine", None), _results("smallfiles-s3", (10, 20))]
    for results in both:
        results.targets = report.evaluate_targets(results)
    markdown = report.run_markdown(both)
    assert "## All targets" in markdown
    assert "object-store requests per backup | <= restic | 0.50x | **MET** |" in markdown
    # The server's CPU time per step, beside its requests (a quarter of each step here).
    assert "| safehold | full | 10 | 0 | 0 | 0 | 10 | 0.0 | 0.0 | 0.47 |" in markdown
    assert "| restic | full | 20 | 0 | 0 | 0 | 20 | 0.0 | 0.0 | 1.10 |" in markdown


def test_on_s3_the_cpu_ratio_counts_the_servers_cpu_too() -> None:
    """The S3 server runs on the tools' cores: each tool's CPU plus the server's for its
    step is what a step that keeps every core busy cannot beat (docs/performance.md,
    session 28). Local parts have no server, and no such ratio."""
    s3 = _results("smallfiles-s3", (30, 20))
    ours, theirs = s3.tool("safehold"), s3.tool("restic")
    assert ours is not None
    assert theirs is not None
    measured = report.ratios(ours, theirs)
    # restic 4.4 s of CPU and the server a quarter of the step; Safehold 1.9 s and its quarter
    assert measured["full CPU time with the server's"] == pytest.approx((4.4 + 1.1) / (1.9 + 0.475))
    assert measured["restore CPU time"] == pytest.approx(4.4 / 1.9)
    s3.targets = report.evaluate_targets(s3)
    assert "| unchanged re-run CPU time with the server's | 2.32x |" in report.markdown(s3)
    local = _results("engine", None)
    ours, theirs = local.tool("safehold"), local.tool("restic")
    assert ours is not None
    assert theirs is not None
    assert not [k for k in report.ratios(ours, theirs) if "server" in k]
