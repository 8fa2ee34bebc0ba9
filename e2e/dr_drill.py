#!/usr/bin/env python3
"""The disaster-recovery drill that ``make dr-drill`` runs: docs/disaster-recovery.md, end to end.

Cluster A backs up a claim, a PostgreSQL database and the namespace's ConfigMaps to a primary
on S3 (SeaweedFS) and replicates them to two recovery sites, GCS (fake-gcs-server) and Azure
(Azurite). Then the disaster: A's control plane is stopped for good, every object of the
primary bucket is deleted and the database dropped. Cluster B, started beside A in its own
directory, gets only the chart, the Secrets and the YAML a GitOps repository holds; then
RestoreRequests bring the ConfigMaps, the claim and the database back from a site, and the
drill compares bytes, rows, the claim's size and the ConfigMaps' data with what A had. It
prints the recovery point (RPO: the age of the newest snapshot at each site when the disaster
struck) and the recovery time (RTO: from the first ``kubectl apply`` in B until everything is
restored), restores the claim once more from the Azure site, and finally runs the runbook's
command-line blocks against the sites with no cluster at all.

Every YAML and shell block comes from docs/disaster-recovery.md (the blocks marked
``dr-example:NAME``), with only its ``<PLACEHOLDERS>`` filled in, so the runbook and the drill
cannot drift apart. Everything is stopped at the end, also on failure; each failed check
exits non-zero, naming what differed. ``e2e/tests/test_dr_drill.py`` runs the same function.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from quickstart import claim_path, find_helm, install_operator, tree_digest
from testground import controlplane
from testground.databases import (
    DatabaseServer,
    drop_database,
    load_sample_data,
    start_postgres,
    table_contents,
)
from testground.kube import Cluster
from testground.objectstores import RunningStore, start_store

__all__ = [
    "DOC",
    "NAMESPACE",
    "POLICY",
    "SUCCESS",
    "DrillFailed",
    "DrillResult",
    "dr_block",
    "dr_yaml",
    "main",
    "run_drill",
]

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "disaster-recovery.md"
NAMESPACE = "shop"
POLICY = "nightly"
RUN = "nightly-manual"
CLAIM_SIZE = "2Gi"  # as in the doc's claim: a re-created claim must not fall back to 1Gi
DATABASE = "orders"
DB_ROWS = 20_000
#: The last line of a successful drill (the test looks for it).
SUCCESS = "dr-drill: disaster recovery succeeded"
BUCKETS = {"s3": "shop-primary", "gcs": "shop-dr-gcs", "azure": "shop-dr-azure"}
SITES = ("site-gcs", "site-azure")
_BLOCK = re.compile(r"^ *```(\w+) dr-example:([\w-]+)\n(.*?)\n *```", re.DOTALL | re.MULTILINE)
_FINAL = ("Succeeded", "PartiallyFailed", "Failed")


class DrillFailed(AssertionError):
    """A check of the drill failed; the message says what was expected and what was seen."""


# ------------------------------------------------------------------ docs/disaster-recovery.md


def dr_block(name: str) -> str:
    """The text of the block marked ``dr-example:NAME`` in docs/disaster-recovery.md.

    Blocks inside a numbered list are indented; the indentation is removed.
    """
    blocks: dict[str, str] = {}
    for m in _BLOCK.finditer(DOC.read_text()):
        lines = m.group(0).splitlines()
        indent = len(lines[0]) - len(lines[0].lstrip(" "))
        blocks[m.group(2)] = "\n".join(line[indent:] for line in lines[1:-1])
    if name not in blocks:
        raise KeyError(f"{DOC.name} has no block marked dr-example:{name} (has {sorted(blocks)})")
    return blocks[name] + "\n"


def dr_yaml(name: str, **placeholders: str) -> list[dict[str, Any]]:
    """A YAML block of the runbook, placeholders filled in, as a list of objects.

    Values are written as JSON strings (valid YAML), so a password with quotes or
    backslashes stays one scalar; ``DB_PORT`` stays a number. A placeholder left unfilled
    is an error, so a new one in the runbook cannot slip through untested.
    """
    text = dr_block(name)
    for key, value in placeholders.items():
        text = text.replace(f"<{key}>", value if value.isdigit() else json.dumps(value))
    left = re.findall(r"<[A-Z0-9_]+>", text)
    if left:
        raise ValueError(f"dr-example:{name}: placeholders not filled in: {left}")
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]


# ------------------------------------------------------------------ reporting


@dataclass
class DrillResult:
    """What the drill measured."""

    rpo_seconds: dict[str, float] = field(default_factory=dict)  # per site
    rto_seconds: float = 0.0  # first kubectl apply in B -> everything restored and checked
    b_seconds: float = 0.0  # helm install in B -> everything restored
    backup_seconds: float = 0.0  # BackupRun created -> Complete
    replication_seconds: float = 0.0  # BackupRun Complete -> every site Succeeded
    azure_restore_seconds: float = 0.0
    failover_seconds: float = 0.0  # failover applied -> a run at site-gcs replicated to Azure
    total_seconds: float = 0.0
    bytes_transferred: dict[str, int] = field(default_factory=dict)  # per site
    claim: tuple[int, int, str] = (0, 0, "")  # files, bytes, sha256 of A's claim
    rows: int = 0  # rows of the database's tables
    cli_output: str = ""
    steps: list[tuple[str, float]] = field(default_factory=list)

    def table(self) -> str:
        """The figures as the Markdown rows of docs/disaster-recovery.md's "Measured"."""
        rows = [
            ("backup (BackupRun created to Complete)", f"{self.backup_seconds:.0f} s"),
            ("replication to both sites after the run", f"{self.replication_seconds:.0f} s"),
            *(
                (f"RPO at {site} (age of its newest snapshot at the disaster)", f"{s:.0f} s")
                for site, s in sorted(self.rpo_seconds.items())
            ),
            (
                "RTO (first `kubectl apply` in B to everything restored)",
                f"{self.rto_seconds:.0f} s",
            ),
            (
                "B: chart install, then everything restored",
                f"{self.b_seconds:.0f} s",
            ),
            ("restore of the claim from the Azure site", f"{self.azure_restore_seconds:.0f} s"),
            (
                "failover: site-gcs primary, an incremental run there, replicated to Azure",
                f"{self.failover_seconds:.0f} s",
            ),
            ("the whole drill", f"{self.total_seconds:.0f} s"),
        ]
        return "\n".join(f"| {k} | {v} |" for k, v in rows)


class Drill:
    """Steps with elapsed time, and checks that fail the drill with a message."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self.start = time.monotonic()
        self.result = DrillResult()
        self._count = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def step(self, title: str) -> None:
        self._count += 1
        self.result.steps.append((title, self.elapsed()))
        self.echo(f"\n\033[1m==> [{self.elapsed():6.1f}s] {self._count}. {title}\033[0m")

    def say(self, text: str) -> None:
        self.echo(f"    {text}")

    def check(self, ok: object, what: str) -> None:
        if not ok:
            raise DrillFailed(what)
        self.echo(f"    \033[32mok\033[0m {what.split(': ')[0]}")


# ------------------------------------------------------------------ cluster helpers


def _create_namespace(cluster: Cluster, name: str) -> None:
    """``kubectl create namespace`` and wait until pods may be admitted (token Secret < 1.24)."""
    cluster.kubectl("create", "namespace", name)

    def ready() -> bool:
        sa = cluster.get("serviceaccount", "default", name)
        return sa is not None and (bool(sa.get("secrets")) or cluster.server_minor >= 24)

    cluster.wait_for(ready, timeout=60, what=f"the default service account of {name}")


def _wait(cluster: Cluster, what: str, condition: str, timeout: int) -> dict[str, Any]:
    """``kubectl wait --for=condition=...`` as the runbook says; returns the object."""
    cluster.kubectl(
        "wait",
        f"--for=condition={condition}",
        what,
        "-n",
        NAMESPACE,
        f"--timeout={timeout}s",
        timeout=timeout + 10,
    )
    kind, name = what.split("/", 1)
    obj = cluster.get(kind, name, NAMESPACE)
    assert obj is not None
    return obj


def _status(obj: dict[str, Any] | None) -> dict[str, Any]:
    return dict((obj or {}).get("status") or {})


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in _status(obj).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return {}


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _configmaps(cluster: Cluster) -> dict[str, dict[str, str]]:
    out = cluster.kubectl("get", "configmaps", "-n", NAMESPACE, "-l", "app=shop", "-o", "json")
    return {c["metadata"]["name"]: c.get("data") or {} for c in json.loads(out.stdout)["items"]}


def _restore(
    drill: Drill, cluster: Cluster, block: str, sources: list[str], timeout: int = 300
) -> dict[str, Any]:
    """Apply a RestoreRequest block, wait for it, check it succeeded from the repository."""
    [request] = dr_yaml(block)
    name = request["metadata"]["name"]
    cluster.apply(request, NAMESPACE)
    done = _wait(cluster, f"restorerequest/{name}", "Complete", timeout)
    status = _status(done)
    drill.check(
        status.get("phase") == "Succeeded",
        f"RestoreRequest {name} succeeded: {json.dumps(status, indent=1)}",
    )
    drill.check(
        not status.get("backupRun"),
        f"{name} was resolved from the repository, not from a BackupRun: "
        f"status.backupRun={status.get('backupRun')!r}",
    )
    restored = {r["source"]: r for r in status.get("restored") or []}
    drill.check(
        sorted(restored) == sorted(sources),
        f"{name} restored the sources {sources}: {sorted(restored)}",
    )
    for source, item in sorted(restored.items()):
        drill.check(
            item.get("phase") == "Succeeded" and len(item.get("snapshotId") or "") == 64,
            f"{name} restored {source} (Succeeded, with its snapshotId): {item}",
        )
        drill.say(
            f"{source}: snapshot {item['snapshotId'][:12]} -> {item.get('target')} "
            f"({item.get('files')} files/objects, {item.get('bytes') or 0:,} bytes)"
        )
    return done


def _claim_size(cluster: Cluster, claim: str) -> str:
    pvc = cluster.get("pvc", claim, NAMESPACE) or {}
    return str(pvc.get("spec", {}).get("resources", {}).get("requests", {}).get("storage"))


def _wait_replicated(cluster: Cluster, run: str, sites: tuple[str, ...]) -> dict[str, Any]:
    """Wait until ``status.replication`` of the run shows Succeeded for every site."""

    def replicated() -> dict[str, Any] | None:
        current = cluster.get("backuprun", run, NAMESPACE)
        state = {r.get("location"): r for r in _status(current).get("replication") or []}
        failed = [r for r in state.values() if r.get("phase") == "Failed" and r.get("error")]
        if failed and all(int(r.get("attempts") or 0) >= 5 for r in failed):
            raise DrillFailed(f"replication failed for good: {json.dumps(failed, indent=1)}")
        if all(state.get(s, {}).get("phase") == "Succeeded" for s in sites):
            return current
        return None

    try:
        return cluster.wait_for(
            replicated,
            timeout=420,
            interval=1.0,
            what=f"status.replication of backuprun/{run} to be Succeeded for {' and '.join(sites)}",
        )
    except AssertionError as exc:
        if isinstance(exc, DrillFailed):
            raise
        current = _status(cluster.get("backuprun", run, NAMESPACE))
        raise DrillFailed(
            f"the snapshots of {run} did not reach {' and '.join(sites)} ({exc}); "
            f"status.replication={json.dumps(current.get('replication'), indent=1)}, "
            f"conditions={json.dumps(current.get('conditions'), indent=1)}"
        ) from None


def _empty_bucket(store: RunningStore, bucket: str) -> int:
    """Delete every object (and every version of it) in an S3 bucket; how many were deleted."""
    import boto3
    from botocore.config import Config

    s3 = boto3.client(
        "s3",
        endpoint_url=store.endpoint,
        region_name=store.options["region"],
        aws_access_key_id=store.options["access_key_id"],
        aws_secret_access_key=store.options["secret_access_key"],
        config=Config(s3={"addressing_style": "path"}),
    )
    deleted = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for version in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            s3.delete_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
            deleted += 1
    for listing in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in listing.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
            deleted += 1
    left = s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0)
    if left:
        raise DrillFailed(f"the primary bucket {bucket} still holds {left} objects")
    return deleted


# ------------------------------------------------------------------ the drill


@dataclass
class _World:
    """What the drill started: stores, database, clusters."""

    workdir: Path
    stores: dict[str, RunningStore] = field(default_factory=dict)
    db: DatabaseServer | None = None
    clusters: dict[str, Cluster] = field(default_factory=dict)

    def placeholders(self, password: str) -> dict[str, str]:
        s3, gcs, az = self.stores["s3"], self.stores["gcs"], self.stores["azure"]
        assert self.db is not None
        return {
            "S3_ENDPOINT": s3.endpoint,
            "PRIMARY_BUCKET": BUCKETS["s3"],
            "GCS_ENDPOINT": gcs.endpoint,
            "GCS_BUCKET": BUCKETS["gcs"],
            "AZURE_ENDPOINT": az.options["endpoint"],
            "AZURE_CONTAINER": BUCKETS["azure"],
            "AWS_ACCESS_KEY_ID": s3.options["access_key_id"],
            "AWS_SECRET_ACCESS_KEY": s3.options["secret_access_key"],
            "GCS_SERVICE_ACCOUNT_JSON": "{}",  # replaced below: the emulator takes no key
            "AZURE_STORAGE_ACCOUNT": az.options["account_name"],
            "AZURE_STORAGE_KEY": az.options["account_key"],
            "REPOSITORY_PASSWORD": password,
            "DB_HOST": self.db.host,
            "DB_PORT": str(self.db.port),
            "DB_USER": self.db.user,
            "DB_PASSWORD": self.db.password,
        }

    def secrets(self, password: str) -> list[dict[str, Any]]:
        """The runbook's Secrets; the GCS one with fake-gcs-server's options instead of a key."""
        objects = dr_yaml("secrets", **self.placeholders(password))
        for obj in objects:
            if obj["metadata"]["name"] == "site-gcs-storage":
                obj["stringData"] = {"GOOGLE_CLOUD_PROJECT": "test", "anonymous": "true"}
        return objects


@contextlib.contextmanager
def _world(workdir: Path, drill: Drill) -> Iterator[_World]:
    """Start nothing yet; stop everything that was started, whatever happens."""
    world = _World(workdir)
    try:
        yield world
    finally:
        drill.step("tear down: both control planes, the object stores, PostgreSQL")
        stops: list[tuple[str, Callable[[], object]]] = [
            *(
                (f"cluster {n.upper()}", lambda n=n: controlplane.down(workdir / f"cluster-{n}"))
                for n in ("a", "b")
            ),
            *((f"{p} store", s.stop) for p, s in world.stores.items()),
            *((("postgresql", world.db.stop),) if world.db is not None else ()),
        ]
        interrupted: BaseException | None = None
        for what, stop in stops:
            try:  # a second Ctrl-C must not leave the rest running
                stop()
            except BaseException as exc:  # noqa: BLE001
                interrupted = interrupted or (exc if isinstance(exc, KeyboardInterrupt) else None)
                drill.say(f"stopping {what} failed: {exc!r}")
        if interrupted is not None:
            raise interrupted


def _start_cluster(world: _World, drill: Drill, name: str) -> Cluster:
    state = controlplane.up(world.workdir / f"cluster-{name}", crds=REPO / "crds")
    cluster = Cluster(state.kubeconfig, state)
    world.clusters[name] = cluster
    drill.say(
        f"cluster {name.upper()}: {state.server} in {state.ready_seconds:.1f}s, "
        f"KUBECONFIG={state.kubeconfig}"
    )
    return cluster


def _install(drill: Drill, cluster: Cluster, helm_bin: str) -> None:
    cluster.kubectl("create", "namespace", "safehold-system")
    metrics_port, _ = install_operator(helm_bin, cluster, "safehold", "safehold-system")
    drill.say(f"operator running (chart {REPO / 'charts' / 'safehold'}), metrics :{metrics_port}")


def _apply_gitops(
    drill: Drill, cluster: Cluster, world: _World, password: str, *, suspend: bool
) -> None:
    """The Secrets and the YAML from Git: locations, RBAC, the policy."""
    values = world.placeholders(password)
    cluster.apply(world.secrets(password), NAMESPACE)
    cluster.apply(dr_yaml("locations", **values), NAMESPACE)
    cluster.apply(dr_yaml("rbac"), NAMESPACE)
    [policy] = dr_yaml("policy", **values)
    if suspend:
        policy["spec"]["suspend"] = True
    cluster.apply(policy, NAMESPACE)
    drill.say(
        f"applied Secrets, BackupLocations primary, {', '.join(SITES)}, RBAC, "
        f"BackupPolicy {POLICY} (suspend: {str(suspend).lower()})"
    )


def _wait_locations(drill: Drill, cluster: Cluster, names: tuple[str, ...]) -> None:
    for name in names:
        loc = _wait(cluster, f"backuplocation/{name}", "Available", 180)
        status = _status(loc)
        drill.say(
            f"backuplocation/{name}: Available, repository "
            f"{str(status.get('repositoryId'))[:12]}, {status.get('snapshotCount', 0)} "
            f"snapshots"
        )


def _cluster_a(
    drill: Drill, world: _World, a: Cluster, helm_bin: str, password: str
) -> dict[str, Any]:
    """Steps in A up to the replicated run; returns what B must get back."""
    db = world.db
    assert db is not None
    drill.step("cluster A: install the operator with the chart")
    _install(drill, a, helm_bin)

    drill.step("cluster A: Secrets, locations, RBAC and the application; the policy from Git")
    _create_namespace(a, NAMESPACE)
    values = world.placeholders(password)
    a.apply(world.secrets(password), NAMESPACE)
    a.apply(dr_yaml("locations", **values), NAMESPACE)
    a.apply(dr_yaml("rbac"), NAMESPACE)
    _wait_locations(drill, a, ("primary", *SITES))
    a.apply(dr_yaml("app"), NAMESPACE)
    pod = a.wait_for(
        lambda: (lambda p: p if _status(p).get("phase") in ("Succeeded", "Failed") else None)(
            a.get("pod", "writer", NAMESPACE)
        ),
        timeout=120,
        what="the writer pod to finish",
    )
    drill.say(a.pod_logs(NAMESPACE, "writer").strip().splitlines()[-1])
    drill.check(_status(pod).get("phase") == "Succeeded", f"the writer pod succeeded: {pod}")
    original = tree_digest(claim_path(a, NAMESPACE, "data"))
    drill.result.claim = original
    drill.say(
        f"claim data ({_claim_size(a, 'data')}): {original[0]} files, {original[1]:,} "
        f"bytes, sha256 {original[2][:16]}"
    )
    configmaps = _configmaps(a)
    drill.check(
        sorted(configmaps) == ["shop-features", "shop-settings"],
        f"the application's ConfigMaps exist: {sorted(configmaps)}",
    )
    [policy] = dr_yaml("policy", **values)
    a.apply(policy, NAMESPACE)
    a.wait_condition("backuppolicy", POLICY, "Ready", NAMESPACE, timeout=60)
    drill.say(f"backuppolicy/{POLICY}: Ready")

    drill.step("cluster A: a BackupRun by hand; kubectl wait --for=condition=Complete")
    started = time.monotonic()
    a.apply(dr_yaml("backup-now"), NAMESPACE)
    run = _wait(a, f"backuprun/{RUN}", "Complete", 300)
    drill.result.backup_seconds = time.monotonic() - started
    status = _status(run)
    drill.check(
        status.get("phase") == "Succeeded", f"the run succeeded: {json.dumps(status, indent=1)}"
    )
    sources = {s["name"]: s for s in status.get("sources") or []}
    drill.check(
        sorted(sources) == ["data", "orders", "resources"],
        f"the run has the three sources: {sorted(sources)}",
    )
    for name, src in sorted(sources.items()):
        drill.check(src.get("phase") == "Succeeded", f"source {name} succeeded: {src}")
        drill.say(
            f"{name} ({src.get('kind')}): snapshot {str(src.get('snapshotId'))[:12]}, "
            f"{src.get('files')} files/objects, {src.get('bytesRead') or 0:,} bytes read"
        )
    drill.check(
        sources["data"].get("files") == original[0],
        f"the volume's snapshot has the claim's {original[0]} files: {sources['data']}",
    )

    drill.step("cluster A: wait for the replication to both recovery sites")
    started = time.monotonic()

    run = _wait_replicated(a, RUN, SITES)
    drill.result.replication_seconds = time.monotonic() - started
    status = _status(run)
    for entry in status.get("replication") or []:
        drill.result.bytes_transferred[entry["location"]] = int(entry.get("bytesTransferred") or 0)
        drill.say(
            f"{entry['location']}: {entry['phase']}, {entry.get('bytesTransferred') or 0:,} "
            f"bytes, completed {entry.get('completionTime')}"
        )
    run = a.wait_condition("backuprun", RUN, "Replicated", NAMESPACE, timeout=60)
    drill.check(
        _condition(run, "Replicated").get("status") == "True",
        "the run's Replicated condition is True",
    )
    policy_status = _status(
        a.wait_for(
            lambda: (
                lambda p: (
                    p
                    if len(_status(p).get("replication") or []) == len(SITES)
                    and all(r.get("phase") == "Succeeded" for r in _status(p)["replication"])
                    else None
                )
            )(a.get("backuppolicy", POLICY, NAMESPACE)),
            timeout=60,
            what=f"backuppolicy/{POLICY} status.replication per site",
        )
    )
    newest: dict[str, datetime] = {}
    for site in policy_status["replication"]:
        when = site.get("newestSnapshotTime")
        if when:
            newest[site["location"]] = _time(when)
        drill.say(
            f"policy status, {site['location']}: {site['phase']}, newest snapshot "
            f"{when}, last success {site.get('lastSuccessTime')}"
        )
    if set(newest) != set(SITES):  # older status: the run's start bounds the snapshots' times
        started_at = _time(status.get("startTime") or status["completionTime"])
        newest = {s: newest.get(s, started_at) for s in SITES}
    return {
        "claim": original,
        "configmaps": configmaps,
        "tables": table_contents(db, DATABASE),
        "newest": newest,
        "claim_size": _claim_size(a, "data"),
        "snapshots": {name: src.get("snapshotId") for name, src in sources.items()},
    }


def _cluster_b(
    drill: Drill, world: _World, b: Cluster, helm_bin: str, password: str, before: dict[str, Any]
) -> None:
    db = world.db
    assert db is not None
    b_started = time.monotonic()
    drill.step("cluster B: install the operator with the chart")
    _install(drill, b, helm_bin)

    drill.step("cluster B: only the Secrets and the YAML from Git (policy suspended)")
    rto_start = time.monotonic()
    _create_namespace(b, NAMESPACE)
    _apply_gitops(drill, b, world, password, suspend=True)
    _wait_locations(drill, b, SITES)
    for site in SITES:
        loc = b.get("backuplocation", site, NAMESPACE)
        held = {s.get("source"): s for s in _status(loc).get("sources") or []}
        drill.say(
            f"{site} holds: "
            + ", ".join(
                f"{k} ({v.get('snapshots')} snapshots, newest {v.get('newestTime')})"
                for k, v in sorted(held.items())
            )
            if held
            else f"{site}: no per-source status"
        )
        drill.check(
            {"shop/nightly/data", "shop/nightly/orders/db/orders", "shop/nightly/resources"}
            <= set(held),
            f"{site}'s status shows the policy's snapshots without a restore: {sorted(held)}",
        )

    drill.step("cluster B: restore the configuration (ConfigMaps) from site-gcs")
    _restore(drill, b, "restore-config", ["resources"])
    restored_cms = _configmaps(b)
    drill.check(
        restored_cms == before["configmaps"],
        f"the ConfigMaps are back with A's data: {restored_cms} != {before['configmaps']}",
    )

    drill.step("cluster B: restore the claim and the database from site-gcs")
    _restore(drill, b, "restore-data", ["data", "orders"], timeout=600)
    size = _claim_size(b, "data")
    drill.check(
        size == before["claim_size"],
        f"the re-created claim requests A's size {before['claim_size']}: {size}",
    )
    restored = tree_digest(claim_path(b, NAMESPACE, "data"))
    drill.check(
        restored == before["claim"],
        f"the claim's files are byte for byte A's: {restored} != {before['claim']}",
    )
    tables = table_contents(db, DATABASE)
    drill.check(
        tables == before["tables"],
        f"every table of {DATABASE} row for row: {sorted(tables)} vs {sorted(before['tables'])}",
    )
    drill.result.rto_seconds = time.monotonic() - rto_start
    drill.result.b_seconds = time.monotonic() - b_started
    drill.say(
        f"\033[1mRTO {drill.result.rto_seconds:.1f}s\033[0m from the first kubectl apply "
        f"in B ({drill.result.b_seconds:.1f}s including the chart install)"
    )

    runs = b.kubectl("get", "backupruns", "-n", NAMESPACE, "-o", "name").stdout.split()
    drill.check(not runs, f"the suspended policy made no BackupRun in B: {runs}")
    primary = b.wait_for(
        lambda: (lambda p: p if _condition(p or {}, "Available") else None)(
            b.get("backuplocation", "primary", NAMESPACE)
        ),
        timeout=120,
        what="B's check of the emptied primary",
    )
    state = _status(primary)
    drill.say(
        f"the emptied primary in B: {state.get('phase')}, {state.get('snapshotCount', 0)} "
        f"snapshots, repository {str(state.get('repositoryId'))[:12]} "
        f"({_condition(primary, 'Available').get('message')})"
    )

    drill.step("cluster B: restore the claim from site-azure into another claim")
    started = time.monotonic()
    _restore(drill, b, "restore-azure", ["data"])
    drill.result.azure_restore_seconds = time.monotonic() - started
    size = _claim_size(b, "data-from-azure")
    drill.check(
        size == before["claim_size"],
        f"data-from-azure requests A's size {before['claim_size']}: {size}",
    )
    copy = tree_digest(claim_path(b, NAMESPACE, "data-from-azure"))
    drill.check(
        copy == before["claim"],
        f"data-from-azure's files are byte for byte A's: {copy} != {before['claim']}",
    )


def _failover(
    drill: Drill, world: _World, b: Cluster, password: str, before: dict[str, Any]
) -> None:
    drill.step("failover in B: site-gcs becomes the primary; a run backs up there, incrementally")
    started = time.monotonic()
    b.apply(dr_yaml("failover", **world.placeholders(password)), NAMESPACE)

    def current(kind: str, name: str, condition: str) -> dict[str, Any] | None:
        obj = b.get(kind, name, NAMESPACE) or {}
        fresh = _status(obj).get("observedGeneration") == obj.get("metadata", {}).get("generation")
        return obj if fresh and _condition(obj, condition).get("status") == "True" else None

    location = b.wait_for(
        lambda: current("backuplocation", "site-gcs", "Available"),
        timeout=120,
        what="site-gcs to be checked again as a primary",
    )
    drill.say(f"site-gcs: {_condition(location, 'Available').get('message')}")
    b.wait_for(
        lambda: current("backuppolicy", POLICY, "Ready"),
        timeout=60,
        what=f"backuppolicy/{POLICY} to be Ready with its new location",
    )
    [run] = dr_yaml("backup-after-failover")
    name = run["metadata"]["name"]
    b.apply(run, NAMESPACE)
    done = _wait(b, f"backuprun/{name}", "Complete", 300)
    status = _status(done)
    drill.check(
        status.get("phase") == "Succeeded" and status.get("location") == "site-gcs",
        f"the run after the failover succeeded at site-gcs: {json.dumps(status, indent=1)}",
    )
    data = next(s for s in status["sources"] if s["name"] == "data")
    drill.say(
        f"data: {data.get('type')} snapshot {str(data.get('snapshotId'))[:12]}, parent "
        f"{str(data.get('parentSnapshotId'))[:12]}, {data.get('bytesRead') or 0:,} bytes read, "
        f"{data.get('bytesStored') or 0:,} stored"
    )
    drill.check(
        data.get("type") == "incremental"
        and data.get("parentSnapshotId") == before["snapshots"]["data"],
        "the volume's backup is incremental on the snapshot made in A: "
        f"{data.get('type')}, parent {data.get('parentSnapshotId')} (A's: "
        f"{before['snapshots']['data']})",
    )
    drill.check(
        int(data.get("bytesStored") or 0) < 1024 * 1024,
        f"unchanged data is not stored again (< 1 MiB stored): {data.get('bytesStored')}",
    )
    replicated = _status(_wait_replicated(b, name, ("site-azure",)))
    [entry] = [r for r in replicated["replication"] if r["location"] == "site-azure"]
    drill.say(f"replicated to site-azure: {entry.get('bytesTransferred') or 0:,} bytes")
    drill.result.failover_seconds = time.monotonic() - started


def _run_cli_block(name: str, cwd: Path, env: dict[str, str]) -> str:
    """Run a shell block of the runbook with bash in ``cwd``; its output, or raise."""
    bin_dir = str(Path(sys.executable).parent)
    import safehold  # the code under test (a worktree's too), not the editable install's

    full = {
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": os.environ.get("HOME", "/root"),
        "PYTHONPATH": str(Path(safehold.__file__).parents[1]),
        **env,
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", dr_block(name)],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise DrillFailed(
            f"dr-example:{name} exited {done.returncode}:\n{done.stdout[-3000:]}\n"
            f"{done.stderr[-3000:]}"
        )
    return done.stdout


def _site_env(world: _World, provider: str, escrow: Path, workdir: Path) -> dict[str, str]:
    """``$SITE_REPO`` and ``$SITE_OPTIONS`` (a directory of option files) for a site."""
    store = world.stores[provider]
    options = dict(store.options)
    if provider == "azure":
        options = {
            "endpoint": options["endpoint"],
            "AZURE_STORAGE_ACCOUNT": options["account_name"],
            "AZURE_STORAGE_KEY": options["account_key"],
        }
    directory = workdir / f"{provider}-options"
    directory.mkdir(mode=0o700)
    for key, value in options.items():
        (directory / key).write_text(value)
    db = world.db
    assert db is not None
    password_file = workdir / "db-password"
    password_file.write_text(db.password)
    return {
        "SITE_REPO": store.url(BUCKETS[provider], "shop"),
        "SITE_OPTIONS": str(directory),
        "ESCROW": str(escrow),
        "DB_HOST": db.host,
        "DB_PORT": str(db.port),
        "DB_USER": db.user,
        "DB_PASSWORD_FILE": str(password_file),
    }


def _no_cluster(drill: Drill, world: _World, password: str, before: dict[str, Any]) -> None:
    db = world.db
    assert db is not None
    drill.step("no cluster at all: the CLI blocks of the runbook against site-gcs")
    cli_dir = world.workdir / "cli"
    cli_dir.mkdir()
    escrow = cli_dir / "escrowed-password"
    escrow.write_text(password + "\n")
    escrow.chmod(0o600)
    env = _site_env(world, "gcs", escrow, cli_dir)
    listing = _run_cli_block("cli-list", cli_dir, env)
    drill.say(listing.strip().replace("\n", "\n    "))
    for source in ("shop/nightly/data", "shop/nightly/orders/db/orders", "shop/nightly/resources"):
        drill.check(source in listing, f"the site lists {source}")
    output = _run_cli_block("cli-restore", cli_dir, env)
    drill.result.cli_output = listing + output
    restored = tree_digest(cli_dir / "restored-data" / "volume")
    drill.check(
        restored == before["claim"],
        f"the CLI's restore of the volume is byte for byte A's claim: {restored}",
    )
    manifests = cli_dir / "restored-manifests" / "resources" / "namespaces" / NAMESPACE
    found = sorted(p.stem for p in (manifests / "core" / "ConfigMap").glob("*.yaml"))
    drill.check(
        {"shop-features", "shop-settings"} <= set(found),
        f"the CLI's restore of the manifests has the ConfigMaps: {found}",
    )
    copy = table_contents(db, "orders_from_cli")
    drill.check(copy == before["tables"], "restore-db --rename-to orders_from_cli: every row")
    drop_database(db, "orders_from_cli")

    drill.step("leaked password: rotate the repository key at site-azure (runbook block)")
    azure_dir = world.workdir / "cli-azure"
    azure_dir.mkdir()
    env = _site_env(world, "azure", escrow, azure_dir)
    rotated = _run_cli_block("cli-rotate", azure_dir, env)
    drill.check(
        "shop/nightly/data" in rotated,
        "after the rotation the new password lists the site's snapshots, the old one "
        f"is refused (exit 12): {rotated}",
    )


def run_drill(workdir: Path, echo: Callable[[str], None] = print) -> DrillResult:
    """The whole drill in ``workdir``; raises :class:`DrillFailed` at the first failed check."""
    drill = Drill(echo)
    password = "dr-" + os.urandom(18).hex()
    helm_bin = find_helm()
    with _world(workdir, drill) as world:
        drill.step(
            "object stores: SeaweedFS (primary, S3), fake-gcs-server and Azurite (sites);"
            " PostgreSQL"
        )
        for provider in ("s3", "gcs", "azure"):
            store = start_store(provider, workdir / "stores")
            world.stores[provider] = store
            store.make_bucket(BUCKETS[provider])
            drill.say(f"{provider}: {store.url(BUCKETS[provider])} on {store.endpoint}")
        world.db = start_postgres()
        load_sample_data(world.db, DATABASE, rows=DB_ROWS)
        tables = table_contents(world.db, DATABASE)
        drill.result.rows = sum(
            len(v.splitlines()) for k, v in tables.items() if not k.startswith("(")
        )
        drill.say(
            f"postgresql on {world.db.host}:{world.db.port}: database {DATABASE}, "
            f"{drill.result.rows:,} rows in {len([k for k in tables if k[0] != '('])} "
            "tables"
        )

        drill.step("two control planes side by side: A and B")
        a = _start_cluster(world, drill, "a")
        b = _start_cluster(world, drill, "b")

        before = _cluster_a(drill, world, a, helm_bin, password)

        drill.step(
            "the disaster: cluster A stops for good, the primary bucket is emptied, "
            "the database dropped"
        )
        disaster = datetime.now(UTC)
        for site, newest in sorted(before["newest"].items()):
            drill.result.rpo_seconds[site] = (disaster - newest).total_seconds()
            drill.say(
                f"\033[1mRPO at {site}: {drill.result.rpo_seconds[site]:.1f}s\033[0m "
                f"(newest snapshot there {newest.isoformat()})"
            )
        controlplane.down(workdir / "cluster-a")
        drill.check(
            not any(a.local.running().values()) if a.local else True,
            "cluster A's processes are all stopped",
        )
        deleted = _empty_bucket(world.stores["s3"], BUCKETS["s3"])
        drill.say(f"deleted {deleted} objects from s3://{BUCKETS['s3']}")
        drop_database(world.db, DATABASE)
        gone = world.db.sql(f"SELECT count(*) FROM pg_database WHERE datname = '{DATABASE}'")  # noqa: S608
        drill.check(gone.strip() == "0", f"database {DATABASE} is gone: {gone}")

        _cluster_b(drill, world, b, helm_bin, password, before)
        _failover(drill, world, b, password, before)
        _no_cluster(drill, world, password, before)
        drill.result.total_seconds = drill.elapsed()
    return drill.result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--dir", type=Path, help="work directory (default: a new temporary one, removed after)"
    )
    args = parser.parse_args(argv)
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="safehold-dr-drill-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = run_drill(workdir)
    except controlplane.StartError as exc:
        print(f"\033[31mdr-drill: {exc}\033[0m", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a drill reports whatever failed, and exits 1
        print(f"\n\033[31mdr-drill FAILED: {type(exc).__name__}: {exc}\033[0m", file=sys.stderr)
        print(f"(work directory, with both clusters' logs: {workdir})", file=sys.stderr)
        return 1
    print("\nMeasured (docs/disaster-recovery.md, section 8):\n")
    print("| measured | figure |\n|---|---|")
    print(result.table())
    print(f"\n\033[32m{SUCCESS} in {result.total_seconds:.0f}s\033[0m", flush=True)
    if args.dir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
