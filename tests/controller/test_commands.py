"""Every command line controller/commands.py can build parses with the real CLI parser,
to the options the operator meant (the Job contract's input side)."""

from __future__ import annotations

from argparse import Namespace

import pytest

from safehold.api import BackupLocation
from safehold.cli.main import build_parser
from safehold.controller import commands
from safehold.controller.commands import (
    DatabaseConnection,
    HookOptions,
    KeepRules,
    ResourceSelection,
)
from safehold.controller.jobs import JobRequest
from safehold.controller.repository import with_repository, with_site


def parse(args: list[str]) -> Namespace:
    return build_parser().parse_args(args)


CONNECTION = DatabaseConnection(
    engine="postgresql", host="pg.db.svc", port=5433, user_file="/c/username", password_file="/c/pw"
)
HOOKS = HookOptions(pre=["sync"], post=["echo -done"], timeout_seconds=30, on_error="continue")


@pytest.mark.parametrize("verify", [False, True])
@pytest.mark.parametrize("hooks", [None, HOOKS])
def test_backup(verify: bool, hooks: HookOptions | None) -> None:
    args = commands.backup(
        "/data/volume",
        source="ns/pol/data",
        host="ns",
        type="incremental",
        run="r1",
        tags=["team=a"],
        include=["db/**", "-odd"],
        exclude=["*.tmp"],
        verify=verify,
        hooks=commands.hook_options(hooks),
        meta={"policy.name": "pol", "claim.size": "", "source.name": "data"},
    )
    got = parse(args)
    assert (got.command, got.paths, got.source, got.host, got.type) == (
        "backup", ["/data/volume"], "ns/pol/data", "ns", "incremental"
    )  # fmt: skip
    assert got.tag == ["run=r1", "team=a"]
    assert (got.include, got.exclude, got.verify) == (["db/**", "-odd"], ["*.tmp"], verify)
    assert got.meta == [("policy.name", "pol"), ("source.name", "data")]
    if hooks is None:
        assert (got.pre_hook, got.post_hook) == ([], [])
    else:
        assert (got.pre_hook, got.post_hook) == (["sync"], ["echo -done"])
        assert (got.hook_timeout, got.hook_on_error) == (30.0, "continue")


def test_run_hooks() -> None:
    got = parse(commands.run_hooks("/handover", commands.hook_options(HOOKS)))
    assert (got.command, got.handover, got.pre_hook, got.post_hook) == (
        "run-hooks", "/handover", ["sync"], ["echo -done"]
    )  # fmt: skip
    assert commands.hook_options(HookOptions()) == []


@pytest.mark.parametrize("port", [None, 5433])
def test_dump(port: int | None) -> None:
    connection = DatabaseConnection("mysql", "db", port, "/c/u", "/c/p")
    got = parse(
        commands.dump(
            connection,
            source="ns/pol/db",
            host="ns",
            databases=["a", "b"],
            run="r1",
            meta={"k": "v"},
        )
    )
    assert (got.command, got.engine, got.db_host, got.db_port) == ("dump", "mysql", "db", port)
    assert got.host == "ns"  # the snapshots' host; --db-host is the server's
    assert (got.db_user_file, got.db_password_file) == ("/c/u", "/c/p")
    assert (got.source, got.database, got.tag, got.meta) == (
        "ns/pol/db", ["a", "b"], ["run=r1"], [("k", "v")]
    )  # fmt: skip


@pytest.mark.parametrize("run", [None, "r1"])
@pytest.mark.parametrize("existing", ["skip", "overwrite", "fail"])
def test_restore_db(run: str | None, existing: commands.Existing) -> None:
    got = parse(commands.restore_db(CONNECTION, source="ns/pol/db", run=run, existing=existing))
    assert (got.command, got.engine, got.db_host, got.db_port) == (
        "restore-db", "postgresql", "pg.db.svc", 5433
    )  # fmt: skip
    assert (got.source, got.tag, got.existing) == (
        "ns/pol/db", [f"run={run}"] if run else [], existing
    )  # fmt: skip


SELECTION = ResourceSelection(
    namespaces=["a", "b"],
    exclude_namespaces=["kube-system"],
    include_resources=["deployments"],
    exclude_resources=["events"],
    selector="app=web,tier in (x,y)",
)


@pytest.mark.parametrize("selection", [ResourceSelection(), SELECTION])
def test_export_resources(selection: ResourceSelection) -> None:
    got = parse(
        commands.export_resources(
            selection,
            source="ns/pol/resources",
            host="ns",
            cluster_scoped=True,
            include_secrets=False,
            type="full",
            run="r1",
            tags=["x=y"],
        )
    )
    assert (got.command, got.source, got.host, got.type, got.tag) == (
        "export-resources", "ns/pol/resources", "ns", "full", ["run=r1", "x=y"]
    )  # fmt: skip
    assert (got.cluster_scoped, got.include_secrets) == (True, False)
    assert got.namespace == list(selection.namespaces)
    assert got.exclude_namespace == list(selection.exclude_namespaces)
    assert got.selector == selection.selector


@pytest.mark.parametrize("dry_run", [False, True])
def test_apply_resources(dry_run: bool) -> None:
    got = parse(
        commands.apply_resources(
            "abc123",
            SELECTION,
            only_namespaces=["a", "c"],
            names=["web"],
            namespace_mapping={"a": "c"},
            existing="update",
            dry_run=dry_run,
        )
    )
    assert (got.command, got.snapshot, got.only_namespace) == (
        "apply-resources",
        "abc123",
        ["a", "c"],
    )
    assert (got.name, got.map_namespace, got.existing, got.dry_run) == (
        ["web"], ["a=c"], "update", dry_run
    )  # fmt: skip
    assert (got.exclude_namespace, got.include_resources) == (["kube-system"], ["deployments"])


@pytest.mark.parametrize("verify", [False, True])
def test_restore(verify: bool) -> None:
    got = parse(
        commands.restore("abc123", "/restore", include=["volume/**/x", "volume/a"], verify=verify)
    )
    assert (got.command, got.snapshot, got.target) == ("restore", "abc123", "/restore")
    assert got.include == ["volume/**/x", "volume/a"]
    assert got.verify is verify


@pytest.mark.parametrize("scratch", [None, CONNECTION])
def test_restore_db_check(scratch: DatabaseConnection | None) -> None:
    got = parse(
        commands.restore_db_check("postgresql", source="ns/pol/db", run="r1", scratch=scratch)
    )
    assert (got.command, got.engine, got.check, got.scratch) == (
        "restore-db", "postgresql", True, scratch is not None
    )  # fmt: skip
    assert (got.source, got.tag) == ("ns/pol/db", ["run=r1"])
    if scratch is not None:
        assert (got.db_host, got.db_port, got.db_password_file) == (
            "pg.db.svc",
            5433,
            scratch.password_file,
        )


@pytest.mark.parametrize("before", [None, "2026-01-01T00:00:00+00:00"])
def test_snapshots(before: str | None) -> None:
    got = parse(commands.snapshots("ns/pol/", before=before))
    assert (got.command, got.source_prefix, got.latest) == ("snapshots", ["ns/pol/"], True)
    assert (got.before is None) == (before is None)


def test_forget_and_prune() -> None:
    keep = KeepRules(last=3, daily=7, within="12h", tags=["keep"])
    args = commands.forget("ns/pol/", keep, time_zone="Europe/Berlin")
    got = parse(args + commands.prune_options(2.5))
    assert (got.command, got.source_prefix, got.time_zone) == (
        "forget",
        ["ns/pol/"],
        "Europe/Berlin",
    )
    assert (got.keep_last, got.keep_daily, got.keep_weekly, got.keep_tag) == (3, 7, 0, ["keep"])
    assert (got.prune, got.lock_wait) == (True, 2.5)
    assert parse(args).prune is False


def test_replicate() -> None:
    # the site (--to ...) is added by safehold.controller.repository.with_site
    got = parse([*commands.replicate("ns/pol/"), "--to", "file:///site"])
    assert (got.command, got.source_prefix, got.only_newer) == ("replicate", ["ns/pol/"], True)
    got = parse([*commands.replicate_source("ns/pol/db/pg/wal"), "--to", "file:///site"])
    assert (got.source, got.source_prefix, got.only_newer) == (["ns/pol/db/pg/wal"], [], True)


@pytest.mark.parametrize("subset", [None, (4, 10)])
def test_verify(subset: tuple[int, int] | None) -> None:
    got = parse(commands.verify(subset))
    assert got.command == "verify"
    assert got.read_data_subset == subset


@pytest.mark.parametrize(
    ("create", "allow_empty", "lock"),
    [
        (True, False, None),
        (True, False, ("governance", 30)),
        (False, False, None),
        (False, True, None),
    ],
)
def test_repo_check(create: bool, allow_empty: bool, lock: tuple[str, int] | None) -> None:
    got = parse(commands.repo_check(create=create, allow_empty=allow_empty, lock=lock))
    assert (got.command, got.repo_command) == ("repo", "init" if create else "info")
    if create:
        assert got.if_absent is True
        assert (got.object_lock_mode, got.object_lock_days) == (lock or (None, 0))
    else:
        assert got.allow_empty is allow_empty


@pytest.mark.parametrize(
    ("upload", "download"), [(512, 2048), (None, 100), (64, None), (None, None)]
)
def test_limit_options(upload: int | None, download: int | None) -> None:
    got = parse([*commands.verify(), *commands.limit_options(upload, download)])
    assert limits(got) == (upload, download)
    if upload is None and download is None:
        assert commands.limit_options(upload, download) == []


def limits(got: Namespace) -> tuple[int | None, int | None]:
    """The parsed limits (the common options are absent from the namespace when not given)."""
    return getattr(got, "limit_upload", None), getattr(got, "limit_download", None)


def _location(name: str, role: str = "primary", **bandwidth: int) -> BackupLocation:
    return BackupLocation.model_validate(
        {
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {
                "provider": "s3",
                "bucket": name,
                "role": role,
                "repositoryPasswordSecretRef": {"name": f"{name}-pw"},
                **({"bandwidth": bandwidth} if bandwidth else {}),
            },
        }
    )


def _request(args: list[str]) -> JobRequest:
    return JobRequest(name="j", namespace="ns", component="c", args=args, labels={}, owner=None)


@pytest.mark.parametrize(
    "args",
    [
        commands.backup("/data", source="ns/p/data", host="ns", type="full", run="r"),
        commands.restore("abc", "/target"),
        commands.forget("ns/p/", KeepRules(last=1), time_zone="UTC") + commands.prune_options(1),
        commands.verify((1, 4)),
        commands.restore_db_check("postgresql", source="ns/p/db", run="r"),
        commands.repo_check(create=True),
    ],
    ids=["backup", "restore", "retention", "verify", "test-restore", "location-check"],
)
def test_every_job_of_a_location_carries_its_bandwidth_limits(args: list[str]) -> None:
    """Every Job that opens a location's repository does it through ``with_repository``,
    which passes the location's ``spec.bandwidth``; unlimited, no option at all."""
    limited = with_repository(_request(args), _location("a", uploadKiBps=300, downloadKiBps=900))
    assert limits(parse(list(limited.args))) == (300, 900)
    reads = parse(list(with_repository(_request(args), _location("b", downloadKiBps=5)).args))
    assert limits(reads) == (None, 5)
    free = with_repository(_request(args), _location("c"))
    assert not any(a.startswith("--limit-") for a in free.args)


@pytest.mark.parametrize(
    ("primary", "site", "expected"),
    [
        ({"uploadKiBps": 100, "downloadKiBps": 200}, {"uploadKiBps": 300}, (300, 200)),
        ({"uploadKiBps": 100, "downloadKiBps": 200}, {}, (None, 200)),
        ({}, {"uploadKiBps": 300, "downloadKiBps": 400}, (300, None)),
        ({"uploadKiBps": 100}, {"downloadKiBps": 400}, (None, None)),
    ],
)
def test_a_replication_reads_at_the_primarys_limit_and_writes_at_the_sites(
    primary: dict[str, int], site: dict[str, int], expected: tuple[int | None, int | None]
) -> None:
    request = _request(commands.replicate("ns/p/"))
    job = with_site(
        with_repository(request, _location("a", **primary)),
        _location("dr", "recovery-site", **site),
    )
    got = parse(list(job.args))
    assert limits(got) == expected
    assert got.to == "s3://dr"
    assert job.args[:4] == ["replicate", "--source-prefix", "ns/p/", "--only-newer"]
