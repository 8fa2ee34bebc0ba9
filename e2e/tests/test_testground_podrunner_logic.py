"""The pod runner's pure parts: environment resolution, volumes as files, status, mount script."""

from __future__ import annotations

import base64
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from testground import debsrc
from testground.podrunner import sandbox, status
from testground.podrunner.env import ConfigError, container_env, expand
from testground.podrunner.volumes import Mount, container_mounts, prepare_volumes

POD: dict[str, Any] = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "x"}},
    "spec": {"serviceAccountName": "sa"},
}
OBJECTS: dict[tuple[str, str], dict[str, Any]] = {
    ("secrets", "creds"): {"data": {"user": base64.b64encode(b"alice").decode()}},
    ("configmaps", "settings"): {"data": {"mode": "fast", "level": "3"}},
}


def fetch(kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    assert namespace == "ns"
    return OBJECTS.get((kind, name))


def test_testground_env_resolves_literals_references_and_sources() -> None:
    spec = {
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        "env": [
            {"name": "USER", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "user"}}},
            {"name": "GREETING", "value": "hello $(USER) in $(POD_NS) $$(USER) $(UNSET)"},
            {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        ],
    }
    env = container_env(POD, spec, {"PATH": "/bin"}, fetch)
    assert env == {
        "PATH": "/bin",
        "CFG_mode": "fast",
        "CFG_level": "3",
        "USER": "alice",
        # POD_NS is defined after GREETING, so it stays unexpanded, as on a kubelet
        "GREETING": "hello alice in $(POD_NS) $(USER) $(UNSET)",
        "POD_NS": "ns",
        "APP": "x",
    }


def test_testground_env_names_the_missing_secret_key() -> None:
    spec = {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "pw"}}}]}
    with pytest.raises(ConfigError, match=r'couldn\'t find key pw in secret "creds" \(env X\)'):
        container_env(POD, spec, {}, fetch)
    missing = {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]}
    with pytest.raises(ConfigError, match='secret "nope" not found'):
        container_env(POD, missing, {}, fetch)
    optional = {
        "env": [
            {
                "name": "X",
                "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}},
            }
        ]
    }
    assert container_env(POD, optional, {}, fetch) == {}


def test_testground_expand_keeps_unknown_references() -> None:
    assert expand("$(A)-$(B)-$$(A)-$", {"A": "1"}) == "1-$(B)-$(A)-$"


def test_testground_volumes_become_files_with_their_modes(tmp_path: Path) -> None:
    pod = {
        **POD,
        "spec": {
            "volumes": [
                {"name": "s", "secret": {"secretName": "creds", "defaultMode": 0o400}},
                {
                    "name": "c",
                    "configMap": {"name": "settings", "items": [{"key": "mode", "path": "sub/m"}]},
                },
                {
                    "name": "d",
                    "downwardAPI": {
                        "items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]
                    },
                },
                {"name": "e", "emptyDir": {}},
            ]
        },
    }

    def no_claims(ns: str, name: str) -> Path:
        raise AssertionError("no claims here")

    def no_tokens(ns: str, sa: str, aud: str | None, seconds: int) -> str:
        raise AssertionError("no tokens here")

    vols = prepare_volumes(pod, tmp_path, fetch, no_claims, no_tokens)
    assert (vols["s"] / "user").read_bytes() == b"alice"
    assert (vols["s"] / "user").stat().st_mode & 0o777 == 0o400
    assert (vols["c"] / "sub" / "m").read_text() == "fast"
    assert not (vols["c"] / "level").exists()
    assert (vols["d"] / "name").read_text() == "p"
    assert vols["e"].is_dir()
    spec = {
        "name": "x",
        "volumeMounts": [
            {"name": "e", "mountPath": "/work", "subPath": "a/b"},
            {"name": "s", "mountPath": "/secrets", "readOnly": True},
        ],
    }
    assert container_mounts(pod, spec, vols, {}) == [
        Mount(vols["e"] / "a" / "b", "/work", False),
        Mount(vols["s"], "/secrets", True),
    ]


def test_testground_volume_paths_cannot_escape(tmp_path: Path) -> None:
    pod = {
        **POD,
        "spec": {
            "volumes": [
                {
                    "name": "c",
                    "configMap": {
                        "name": "settings",
                        "items": [{"key": "mode", "path": "../escape"}],
                    },
                }
            ]
        },
    }
    with pytest.raises(ConfigError, match=r"must not contain '\.\.'"):
        prepare_volumes(pod, tmp_path, fetch, lambda n, c: tmp_path, lambda *a: "")


def test_testground_terminated_state_reads_like_the_kubelets() -> None:
    ok = status.terminated(0, "t0", "t1", "id")["terminated"]
    assert (ok["exitCode"], ok["reason"]) == (0, "Completed")
    killed = status.terminated(-9, "t0", "t1", "id", "bye")["terminated"]
    assert (killed["exitCode"], killed["reason"], killed["message"]) == (137, "Error", "bye")
    conds = status.conditions(initialized=True, ready=False, done=True, since="t")
    ready = next(c for c in conds if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "PodCompleted")


def test_testground_sandbox_mounts_privately_and_read_only(tmp_path: Path) -> None:
    """The mount script really bind-mounts (read-only when asked) in a private namespace."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("inside")
    target = tmp_path / "mnt" / "deep"
    launch = sandbox.Launch(
        argv=["sh", "-c", "cat f; echo x > g || echo refused; pwd"],
        env={"PATH": os.environ["PATH"]},
        working_dir=str(target),
        mounts=[Mount(src, str(target), True)],
        log=tmp_path / "log",
    )
    proc = sandbox.start(launch)
    assert proc.wait(timeout=30) == 0
    out = launch.log.read_text()
    assert out.startswith("inside")
    assert "refused" in out
    assert str(target) in out
    assert not (target / "f").exists()  # the mount was private to the container
    assert sandbox.missing_roots([str(tmp_path / "x" / "y")]) == {tmp_path / "x"}


def test_testground_build_step_failure_names_the_step_and_log(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    with pytest.raises(debsrc.BuildError) as err:
        debsrc.run_logged(
            ["sh", "-c", "echo compiling; echo 'undefined: reflect2.Type' >&2; exit 2"],
            step="make WHAT='cmd/kube-apiserver'",
            log=log,
        )
    message = str(err.value)
    assert "make WHAT='cmd/kube-apiserver' failed with exit code 2" in message
    assert str(log) in message
    assert "undefined: reflect2.Type" in message  # the log's tail says what went wrong


def test_testground_sandbox_volume_over_a_parent_keeps_other_sources(tmp_path: Path) -> None:
    """A volume at a parent (an emptyDir at /tmp) must not hide sources living under it (the
    pod's files under /tmp): every source is staged before any target is mounted."""
    parent = tmp_path / "shadowed"
    parent.mkdir()
    (parent / "message").write_text("still readable")
    empty = tmp_path / "empty"
    empty.mkdir()
    launch = sandbox.Launch(
        argv=["sh", "-c", f"cat {tmp_path}/out/message; echo; ls -A {parent} | wc -l"],
        env={"PATH": os.environ["PATH"]},
        working_dir="",
        mounts=[
            Mount(empty, str(parent), False),
            Mount(parent / "message", str(tmp_path / "out" / "message"), True),
        ],
        log=tmp_path / "logs" / "c-0.log",
    )
    proc = sandbox.start(launch)
    assert proc.wait(timeout=30) == 0, launch.log.read_text()
    assert launch.log.read_text().split() == ["still", "readable", "0"]


def test_testground_sandbox_volume_over_the_environment_keeps_it_visible(tmp_path: Path) -> None:
    """An emptyDir at /tmp must not hide the Python environment or the checkout when they live
    under /tmp (a CI clone there): `keep_visible` binds them back over the volume, read-only."""
    checkout = tmp_path / "checkout"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    tool = checkout / ".venv" / "bin" / "tool"
    tool.write_text("#!/bin/sh\necho tool ran\n")
    tool.chmod(0o755)
    empty = tmp_path / "empty"
    empty.mkdir()
    launch = sandbox.Launch(
        argv=[
            "sh",
            "-c",
            f"{tool}; echo entries=$(ls -A {tmp_path} | wc -l); "
            f"touch {checkout}/.venv/x 2>/dev/null || echo read-only",
        ],
        env={"PATH": os.environ["PATH"]},
        working_dir="",
        mounts=[Mount(empty, str(tmp_path), False)],
        log=tmp_path.parent / f"{tmp_path.name}-logs" / "c-0.log",
        keep_visible=(checkout / ".venv", tmp_path / "elsewhere"),
    )
    proc = sandbox.start(launch)
    assert proc.wait(timeout=30) == 0, launch.log.read_text()
    # The tool runs; the volume shows only the re-bound checkout path; the binding is read-only.
    assert launch.log.read_text().splitlines() == ["tool ran", "entries=1", "read-only"]


@pytest.mark.parametrize(
    ("context", "reads"),
    [
        ({}, True),  # no security context: the runner's own rights
        ({"capabilities": {"drop": ["ALL"]}, "allowPrivilegeEscalation": False}, False),
        ({"capabilities": {"drop": ["ALL"], "add": ["DAC_OVERRIDE"]}}, True),
        ({"runAsUser": 999, "runAsGroup": 998, "capabilities": {"drop": ["ALL"]}}, True),
        ({"runAsUser": 1000, "runAsGroup": 1000, "capabilities": {"drop": ["ALL"]}}, False),
    ],
)
def test_testground_sandbox_follows_the_containers_user_and_capabilities(
    tmp_path: Path, context: dict[str, Any], reads: bool
) -> None:
    """A container that drops ALL capabilities cannot read another user's private file, as
    on a real node; one that adds DAC_OVERRIDE back can, and so can one run as its owner."""
    # in a directory any user may enter (the test's own is root's alone)
    base = Path(tempfile.mkdtemp(prefix="testground-sandbox-"))
    base.chmod(0o755)
    private = base / "private"
    private.mkdir(mode=0o700)
    (private / "f").write_text("secret")
    os.chmod(private / "f", 0o600)
    os.chown(private / "f", 999, 998)
    os.chown(private, 999, 998)
    launch = sandbox.Launch(
        argv=[
            "sh",
            "-c",
            f"cat {private}/f || echo refused; grep NoNewPrivs /proc/self/status; id -u",
        ],
        env={"PATH": os.environ["PATH"]},
        working_dir="",
        mounts=[],
        log=tmp_path / "logs" / "c-0.log",
    )
    launch = sandbox.limited(launch, {"securityContext": context})
    try:
        proc = sandbox.start(launch)
        assert proc.wait(timeout=30) == 0, launch.log.read_text()
    finally:
        shutil.rmtree(base)
    out = launch.log.read_text()
    assert ("secret" in out) is reads, out
    assert ("refused" in out) is not reads, out
    flag = "1" if context.get("allowPrivilegeEscalation") is False else "0"
    assert out.split()[-2:] == [flag, str(context.get("runAsUser", 0))], out


def test_testground_sandbox_runs_the_runners_python_for_any_user(tmp_path: Path) -> None:
    """A container of another user runs the Python the runner runs, as an image's user runs
    the image's: here pyenv's, under /root (mode 0700), which uid 999 could not otherwise
    reach (it ran the system's older Python instead, without tarfile's extraction filters)."""
    probe = "import sys, tarfile; print(sys.version.split()[0], hasattr(tarfile, 'data_filter'))"
    launch = sandbox.Launch(
        argv=[sys.executable, "-c", probe],
        env={"PATH": os.environ["PATH"]},
        working_dir="",
        mounts=[],
        log=tmp_path / "logs" / "c-0.log",
        keep_visible=(Path(sys.prefix),),
    )
    launch = sandbox.limited(launch, {"securityContext": {"runAsUser": 999, "runAsGroup": 998}})
    proc = sandbox.start(launch)
    assert proc.wait(timeout=30) == 0, launch.log.read_text()
    assert launch.log.read_text().split() == [sys.version.split()[0], "True"]


def test_testground_node_follows_node_selectors_and_required_affinity() -> None:
    from testground.podrunner.node import UNMATCHED, unschedulable

    node = {"metadata": {"name": "testground", "labels": {"disk": "ssd", "zone": "a"}}}

    def pod(**spec: Any) -> dict[str, Any]:
        return {"spec": spec}

    def affinity(*terms: dict[str, Any]) -> dict[str, Any]:
        required = {"nodeSelectorTerms": list(terms)}
        return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}

    name_in = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}
    assert unschedulable(pod(), node) is None
    assert unschedulable(pod(nodeSelector={"disk": "ssd"}), node) is None
    assert unschedulable(pod(nodeSelector={"disk": "hdd"}), node) == UNMATCHED
    assert unschedulable(pod(affinity=affinity(name_in)), node) == UNMATCHED
    zone = {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}
    assert unschedulable(pod(affinity=affinity(name_in, zone)), node) is None  # any term
    gpu = {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}
    assert unschedulable(pod(affinity=affinity(gpu)), node) == UNMATCHED
