"""Application-pod hooks through the Kubernetes exec API. The test ground's pod runner has no
exec, so ``kubernetes.stream.stream`` is the boundary: a fake records each request and plays
the exec session (output, exit status, a session that never ends)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from kubernetes import client

from safehold.api.backuppolicy import Hook
from safehold.controller.exec_hooks import (
    DISABLED,
    EXEC_HOOKS_ANNOTATION,
    OUTPUT_LIMIT,
    run_hooks,
)


def _pod(
    name: str,
    phase: str = "Running",
    containers: tuple[str, ...] = ("app",),
    opt_in: str | None = "true",
) -> Any:
    annotations = {EXEC_HOOKS_ANNOTATION: opt_in} if opt_in is not None else None
    return client.V1Pod(
        metadata=client.V1ObjectMeta(
            name=name, namespace="shop", labels={"app": "shop"}, annotations=annotations
        ),
        spec=client.V1PodSpec(containers=[client.V1Container(name=c) for c in containers]),
        status=client.V1PodStatus(phase=phase),
    )


class FakeCore:
    """CoreV1Api for the calls hooks make: list pods (recorded), and the real exec method."""

    def __init__(self, pods: list[Any]) -> None:
        self.pods = pods
        self.selectors: list[str] = []
        self.connect_get_namespaced_pod_exec = client.CoreV1Api(
            client.ApiClient()
        ).connect_get_namespaced_pod_exec

    def list_namespaced_pod(self, namespace: str, label_selector: str) -> Any:
        self.selectors.append(f"{namespace}:{label_selector}")
        return client.V1PodList(items=self.pods)


@dataclass
class Session:
    """One exec session as WSClient presents it."""

    chunks: list[tuple[str, str]]  # (channel, text) delivered one per update()
    exit_code: int | None  # None: never ends
    closed: bool = False

    def is_open(self) -> bool:
        return not self.closed and (bool(self.chunks) or self.exit_code is None)

    def update(self, timeout: float) -> None:
        self.current = self.chunks.pop(0) if self.chunks else ("", "")

    def peek_stdout(self) -> bool:
        return self.current[0] == "stdout"

    def peek_stderr(self) -> bool:
        return self.current[0] == "stderr"

    def read_stdout(self) -> str:
        return self.current[1]

    def read_stderr(self) -> str:
        return self.current[1]

    def close(self) -> None:
        self.closed = True

    @property
    def returncode(self) -> int | None:
        # WSClient parses the v1.Status on the error channel the same way.
        status = (
            {"status": "Success"}
            if self.exit_code == 0
            else {"status": "Failure", "details": {"causes": [{"message": str(self.exit_code)}]}}
        )
        doc = yaml.safe_load(yaml.safe_dump(status))
        return 0 if doc["status"] == "Success" else int(doc["details"]["causes"][0]["message"])


@dataclass
class FakeStream:
    sessions: dict[str, Session]
    calls: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, func: Any, name: str, namespace: str, **kw: Any) -> Session:
        self.calls.append({"func": func.__name__, "pod": name, "namespace": namespace, **kw})
        return self.sessions[name]


class Clock:
    """Advances one second per reading, so timeouts are deterministic."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


FREEZE = Hook.model_validate(
    {
        "name": "freeze",
        "podSelector": {
            "matchLabels": {"app": "shop"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["db"]}],
        },
        "container": "db",
        "command": ["fsfreeze", "--freeze", "/var/lib/data"],
        "timeoutSeconds": 30,
    }
)


def test_request_built_and_result_recorded() -> None:
    core = FakeCore([_pod("db-0", containers=("sidecar", "db")), _pod("db-1", phase="Pending")])
    stream = FakeStream({"db-0": Session([("stdout", "frozen\n"), ("stderr", "warn\n")], 0)})
    run = run_hooks(core, "shop", [FREEZE], "pre", stream=stream, clock=Clock())
    assert core.selectors == ["shop:app=shop,tier in (db)"]
    assert stream.calls == [
        {
            "func": "connect_get_namespaced_pod_exec",
            "pod": "db-0",  # only the Running pod
            "namespace": "shop",
            "command": ["fsfreeze", "--freeze", "/var/lib/data"],
            "container": "db",
            "stdin": False,
            "stdout": True,
            "stderr": True,
            "tty": False,
            "_preload_content": False,
        }
    ]
    assert run.failed is None
    assert run.reason is None
    [result] = run.results
    assert result.to_status() == {
        "name": "freeze",
        "phase": "pre",
        "pod": "db-0",
        "container": "db",
        "exitCode": 0,
        "durationSeconds": result.duration_seconds,
        "timedOut": False,
        "output": "frozen\nwarn\n",
        "onError": "Fail",
        "error": None,
        "succeeded": True,
    }
    assert stream.sessions["db-0"].closed


def test_default_container_is_the_pods_first() -> None:
    hook = FREEZE.model_copy(update={"container": None})
    stream = FakeStream({"db-0": Session([], 0)})
    run_hooks(
        FakeCore([_pod("db-0", containers=("main", "x"))]), "shop", [hook], "pre", stream=stream
    )
    assert stream.calls[0]["container"] == "main"


def test_failing_pre_hook_with_fail_stops_the_phase_with_a_reason() -> None:
    second = FREEZE.model_copy(update={"name": "flush"})
    stream = FakeStream({"db-0": Session([("stderr", "fsfreeze: not permitted\n")], 1)})
    run = run_hooks(FakeCore([_pod("db-0")]), "shop", [FREEZE, second], "pre", stream=stream)
    assert len(stream.calls) == 1  # the second pre hook did not run
    assert run.reason == "preBackup hook freeze in pod db-0 failed: exit code 1"
    assert run.results[0].output == "fsfreeze: not permitted\n"


def test_failing_hook_with_continue_is_recorded_and_the_phase_goes_on() -> None:
    lenient = FREEZE.model_copy(update={"on_error": "Continue"})
    second = FREEZE.model_copy(update={"name": "flush"})
    stream = FakeStream({"db-0": Session([], 2)})
    run = run_hooks(FakeCore([_pod("db-0")]), "shop", [lenient, second], "pre", stream=stream)
    assert run.failed is not None
    assert run.failed.name == "flush"
    assert [(r.name, r.exit_code, r.ok) for r in run.results] == [
        ("freeze", 2, False),
        ("flush", 2, False),
    ]
    only_lenient = run_hooks(FakeCore([_pod("db-0")]), "shop", [lenient], "pre", stream=stream)
    assert only_lenient.failed is None
    assert only_lenient.results[0].to_status()["succeeded"] is False


def test_post_hooks_all_run_even_when_one_fails() -> None:
    unfreeze = FREEZE.model_copy(update={"command": ["fsfreeze", "--unfreeze", "/var/lib/data"]})
    second = unfreeze.model_copy(update={"name": "resume"})
    stream = FakeStream({"db-0": Session([], 1)})
    run = run_hooks(FakeCore([_pod("db-0")]), "shop", [unfreeze, second], "post", stream=stream)
    assert len(stream.calls) == 2
    assert run.reason == "postBackup hook freeze in pod db-0 failed: exit code 1"


def test_hook_exceeding_its_timeout_is_closed_and_reported() -> None:
    hook = FREEZE.model_copy(update={"timeout_seconds": 5})
    session = Session([("stdout", "waiting\n")], None)  # never ends
    run = run_hooks(
        FakeCore([_pod("db-0")]), "shop", [hook], "pre", stream=FakeStream({"db-0": session}),
        clock=Clock(),
    )  # fmt: skip
    [result] = run.results
    assert session.closed
    assert result.timed_out
    assert result.exit_code is None
    assert 5 <= result.duration_seconds <= 8
    assert result.output == "stopped after the timeout of 5 s\nwaiting"
    assert run.reason == "preBackup hook freeze in pod db-0 failed: timed out"


def test_no_matching_pod_fails_the_hook_and_names_the_selector() -> None:
    run = run_hooks(FakeCore([]), "shop", [FREEZE], "pre", stream=FakeStream({}))
    assert run.reason == (
        "preBackup hook freeze failed: no Running pod in namespace shop matches "
        "podSelector app=shop,tier in (db)"
    )


def test_api_error_is_the_hooks_result() -> None:
    def forbidden(*args: Any, **kw: Any) -> Any:
        raise client.ApiException(status=403, reason="Forbidden")

    run = run_hooks(FakeCore([_pod("db-0")]), "shop", [FREEZE], "pre", stream=forbidden)
    assert run.reason == (
        "preBackup hook freeze in pod db-0 failed: exec failed: ApiException: Forbidden"
    )


def test_output_is_truncated_and_secrets_removed() -> None:
    text = "token=abcd-secret-1234 " + "y" * 2000
    stream = FakeStream({"db-0": Session([("stdout", text)], 0)})
    run = run_hooks(
        FakeCore([_pod("db-0")]), "shop", [FREEZE], "pre", stream=stream,
        secrets=["abcd-secret-1234"],
    )  # fmt: skip
    assert len(run.results[0].output) == OUTPUT_LIMIT + 3
    short = FakeStream({"db-0": Session([("stdout", "token=abcd-secret-1234")], 0)})
    run = run_hooks(
        FakeCore([_pod("db-0")]), "shop", [FREEZE], "pre", stream=short,
        secrets=["abcd-secret-1234"],
    )  # fmt: skip
    assert run.results[0].output == "token=***"


def test_a_pod_runs_a_policys_hooks_only_when_its_owner_opted_in() -> None:
    """Creating a BackupPolicy must not give its author a shell in every pod: a pod that
    did not opt in fails the hook, naming the annotation, and nothing is executed in it."""
    stream = FakeStream({"db-1": Session([("stdout", "frozen\n")], 0)})
    pods = [
        _pod("db-0", opt_in=None),
        _pod("db-1", opt_in="orders, billing"),
        _pod("db-2", opt_in="billing"),
    ]
    run = run_hooks(FakeCore(pods), "shop", [FREEZE], "pre", stream=stream, policy="orders")
    by_pod = {r.pod: r for r in run.results}
    assert by_pod["db-1"].ok
    for refused in ("db-0", "db-2"):
        assert by_pod[refused].ok is False
        assert by_pod[refused].error is not None
        assert "has not opted in to exec hooks" in by_pod[refused].error
        assert f"{EXEC_HOOKS_ANNOTATION}: orders" in by_pod[refused].error
    assert [c["pod"] for c in stream.calls] == ["db-1"]


def test_no_exec_hook_runs_when_the_installation_did_not_enable_them() -> None:
    stream = FakeStream({"db-0": Session([], 0)})
    core = FakeCore([_pod("db-0")])
    run = run_hooks(core, "shop", [FREEZE], "pre", stream=stream, policy="o", enabled=False)
    assert run.failed is not None
    assert run.failed.error == DISABLED
    assert "execHooks.enabled" in (run.reason or "")
    assert stream.calls == []
    assert core.selectors == []  # not even the pods are listed


def test_a_run_stopped_part_way_undoes_what_its_pre_hooks_did() -> None:
    """undo_pod_hooks: a run stopped or replaced while its sources still run gets its post
    hooks at once, once; a run whose pre hooks never ran gets none."""
    from safehold.api import BackupPolicy
    from safehold.api.backuprun import BackupRunStatus, HookResult, SourceResult
    from safehold.controller.exec_hooks import undo_pod_hooks

    thaw = {**FREEZE.model_dump(by_alias=True), "name": "thaw", "command": ["fsfreeze", "-u", "/"]}
    policy = BackupPolicy.model_validate(
        {
            "metadata": {"name": "orders", "namespace": "shop"},
            "spec": {
                "location": {"name": "loc"},
                "sources": {"volumes": [{"claimName": "data"}]},
                "hooks": {
                    "preBackup": [FREEZE.model_dump(by_alias=True)],
                    "postBackup": [thaw],
                },
            },
        }
    )
    pod = _pod("db-0", containers=("db",))
    pod.metadata.labels = {"app": "shop", "tier": "db"}
    running = [SourceResult(name="data", kind="volume", phase="Running")]

    untouched = BackupRunStatus(sources=running)
    stream = FakeStream({"db-0": Session([], 0)})
    assert undo_pod_hooks(FakeCore([pod]), policy, untouched, stream, enabled=True) is None
    assert stream.calls == []  # no pre hook ran: nothing to undo
    assert untouched.hooks == []

    frozen = BackupRunStatus(
        sources=running,
        hooks=[HookResult(name="freeze", phase="pre", pod="db-0", exit_code=0, succeeded=True)],
    )
    assert undo_pod_hooks(FakeCore([pod]), policy, frozen, stream, enabled=True) is None
    assert [c["command"] for c in stream.calls] == [["fsfreeze", "-u", "/"]]
    assert [(h.name, h.phase, h.succeeded) for h in frozen.hooks[1:]] == [("thaw", "post", True)]
    undo_pod_hooks(FakeCore([pod]), policy, frozen, stream, enabled=True)
    assert len(stream.calls) == 1  # once


def test_post_hooks_run_when_the_snapshots_are_cut_and_fail_the_run_when_it_ends() -> None:
    """finish_pod_hooks: with the running source captured (its snapshot cut), the post
    hooks run at once; a failed Fail post hook marks the sources only once all are final,
    so a Job still running cannot overwrite the mark."""
    from safehold.api import BackupPolicy
    from safehold.api.backuprun import BackupRunStatus, SourceResult
    from safehold.controller.exec_hooks import finish_pod_hooks

    thaw = {**FREEZE.model_dump(by_alias=True), "name": "thaw", "command": ["fsfreeze", "-u", "/"]}
    policy = BackupPolicy.model_validate(
        {
            "metadata": {"name": "orders", "namespace": "shop"},
            "spec": {
                "location": {"name": "loc"},
                "sources": {"volumes": [{"claimName": "data", "snapshot": {}}]},
                "hooks": {"postBackup": [thaw]},
            },
        }
    )
    pod = _pod("db-0", containers=("db",))
    stream = FakeStream({"db-0": Session([("stderr", "not frozen\n")], 1)})
    status = BackupRunStatus(sources=[SourceResult(name="data", kind="volume", phase="Running")])

    finish_pod_hooks(FakeCore([pod]), policy, status, stream, enabled=True)
    assert stream.calls == []  # not captured, not final: the hooks wait

    finish_pod_hooks(FakeCore([pod]), policy, status, stream, enabled=True, captured={"data"})
    assert len(stream.calls) == 1
    assert status.sources[0].error is None  # still running: no mark yet

    status.sources[0].phase = "Succeeded"
    finish_pod_hooks(FakeCore([pod]), policy, status, stream, enabled=True)
    assert len(stream.calls) == 1  # once
    error = status.sources[0].error
    assert error is not None
    assert error.reason == "HookFailed"
    assert error.message == "postBackup hook thaw in pod db-0 failed: exit code 1"
