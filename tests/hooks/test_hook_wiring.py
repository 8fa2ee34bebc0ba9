"""How hooks are wired into a BackupRun: the Job's hook options from the policy, the Job's
hook results into the source's status, and the exec hooks around the run's Jobs."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from safehold.api import BackupPolicy, BackupRunStatus, SourceResult
from safehold.controller.exec_hooks import finish_pod_hooks, start_pod_hooks
from safehold.controller.job_hooks import job_hook_args, record_job_hooks
from safehold.controller.sources.claims import VolumeClaim


def _policy(**spec: Any) -> BackupPolicy:
    return BackupPolicy.model_validate(
        {
            "apiVersion": "safehold.io/v1alpha1",
            "kind": "BackupPolicy",
            "metadata": {"name": "pol", "namespace": "shop"},
            "spec": {"location": {"name": "loc"}, **spec},
        }
    )


def test_job_hook_args_come_from_the_sources_hooks() -> None:
    pol = _policy(
        sources={
            "volumes": [
                {"claimName": "plain"},
                {
                    "claimName": "db",
                    "hooks": {
                        "preBackup": ["psql -c CHECKPOINT"],
                        "postBackup": ["echo done"],
                        "timeoutSeconds": 30,
                        "onError": "Continue",
                    },
                },
            ]
        }
    )
    assert (
        job_hook_args(pol, VolumeClaim("plain", "plain", "spec.sources.volumes[0].claimName")) == []
    )
    assert job_hook_args(pol, VolumeClaim("db", "db", "spec.sources.volumes[1].claimName")) == [
        "--pre-hook", "psql -c CHECKPOINT", "--post-hook", "echo done",
        "--hook-timeout", "30", "--hook-on-error", "continue",
    ]  # fmt: skip


def _summary_hook(phase: str, code: int | None, on_error: str, output: str = "") -> dict[str, Any]:
    return {
        "name": f"{phase}-0", "phase": phase, "exit_code": code, "duration_seconds": 0.5,
        "timed_out": code is None, "output": output, "on_error": on_error,
        "ok": code == 0,
    }  # fmt: skip


def test_failed_pre_hook_fails_the_source_with_hook_failed() -> None:
    source = SourceResult(name="db", kind="volume", phase="Failed")
    record_job_hooks(source, {"ok": False, "hooks": [_summary_hook("pre", 7, "fail", "no db\n")]})
    assert source.phase == "Failed"
    assert source.error is not None
    assert source.error.reason == "HookFailed"
    assert (
        source.error.message
        == "pre hook pre-0 of the backup Job failed (exit code 7); its output is in "
        "status.sources[].hooks"
    )
    assert source.hooks[0].exit_code == 7
    assert source.hooks[0].output == "no db\n"
    assert source.hooks[0].succeeded is False


def test_failed_post_hook_keeps_the_snapshot_and_says_so() -> None:
    source = SourceResult(name="db", kind="volume", phase="Succeeded", snapshot_id="ab" * 32)
    record_job_hooks(source, {"hooks": [_summary_hook("post", None, "fail")]})
    assert source.phase == "Succeeded"
    assert source.error is not None
    assert source.error.message.startswith(
        "post hook post-0 of the backup Job failed (timed out); snapshot abababababab was saved"
    )


def test_continue_hook_failure_is_a_warning() -> None:
    source = SourceResult(name="db", kind="volume", phase="Succeeded", snapshot_id="cd" * 32)
    record_job_hooks(source, {"hooks": [_summary_hook("pre", 3, "continue")]})
    assert source.error is None
    assert source.warnings == ["pre hook pre-0 failed (exit code 3), continued"]


def test_a_summary_read_again_adds_no_warning_twice() -> None:
    """The pod has ended and reported while its Job still runs: the controller reads the
    source again (the full suite once saw the warning twice in the status)."""
    source = SourceResult(name="db", kind="volume", phase="Running")
    summary = {"hooks": [_summary_hook("pre", 3, "continue")]}
    record_job_hooks(source, summary)
    record_job_hooks(source, summary)
    assert source.warnings == ["pre hook pre-0 failed (exit code 3), continued"]
    assert len(source.hooks or []) == 1


class _Core:
    def __init__(self) -> None:
        self.connect_get_namespaced_pod_exec = client.CoreV1Api(
            client.ApiClient()
        ).connect_get_namespaced_pod_exec

    def list_namespaced_pod(self, namespace: str, label_selector: str) -> Any:
        return client.V1PodList(
            items=[
                client.V1Pod(
                    metadata=client.V1ObjectMeta(
                        name="db-0",
                        namespace=namespace,
                        annotations={"safehold.io/exec-hooks": "true"},
                    ),
                    spec=client.V1PodSpec(containers=[client.V1Container(name="db")]),
                    status=client.V1PodStatus(phase="Running"),
                )
            ]
        )


class _Done:
    def __init__(self, code: int) -> None:
        self.returncode = code

    def is_open(self) -> bool:
        return False

    def close(self) -> None:
        return None


def _exec_policy() -> BackupPolicy:
    hook = {"podSelector": {"matchLabels": {"app": "db"}}, "command": ["sync"]}
    return _policy(
        sources={"volumes": [{"claimName": "data"}]},
        hooks={
            "preBackup": [{"name": "freeze", **hook}],
            "postBackup": [{"name": "thaw", **hook}],
        },
    )


def test_failed_exec_pre_hook_fails_pending_sources_and_post_hooks_still_run() -> None:
    status = BackupRunStatus(sources=[SourceResult(name="data", kind="volume", job="j")])
    calls: list[list[str]] = []

    def stream(func: Any, name: str, namespace: str, **kw: Any) -> _Done:
        calls.append(kw["command"])
        return _Done(1 if len(calls) == 1 else 0)

    start_pod_hooks(_Core(), _exec_policy(), status, stream=stream, enabled=True)
    assert status.sources[0].phase == "Failed"
    assert status.sources[0].error is not None
    assert status.sources[0].error.reason == "HookFailed"
    assert (
        status.sources[0].error.message == "preBackup hook freeze in pod db-0 failed: exit code 1"
    )
    start_pod_hooks(_Core(), _exec_policy(), status, stream=stream, enabled=True)  # once per run
    finish_pod_hooks(_Core(), _exec_policy(), status, stream=stream, enabled=True)
    finish_pod_hooks(_Core(), _exec_policy(), status, stream=stream, enabled=True)
    assert len(calls) == 2
    assert [(h.name, h.phase, h.pod, h.exit_code, h.succeeded) for h in status.hooks] == [
        ("freeze", "pre", "db-0", 1, False),
        ("thaw", "post", "db-0", 0, True),
    ]


def test_post_exec_hooks_wait_for_every_source() -> None:
    status = BackupRunStatus(
        sources=[SourceResult(name="data", kind="volume", job="j", phase="Running")]
    )

    def stream(func: Any, name: str, namespace: str, **kw: Any) -> _Done:
        raise AssertionError("no hook may run while a source runs")

    finish_pod_hooks(_Core(), _exec_policy(), status, stream=stream, enabled=True)
    assert status.hooks == []


def test_the_guides_exec_policy_freezes_and_thaws(guide: Any) -> None:
    """docs/hooks.md's exec example, through the path the operator takes."""
    doc = guide()[2]
    doc["metadata"]["namespace"] = "shop"
    pol = BackupPolicy.model_validate(doc)
    status = BackupRunStatus(sources=[SourceResult(name="shop-db-data", kind="volume", job="j")])
    requests: list[tuple[str, list[str]]] = []

    def stream(func: Any, name: str, namespace: str, **kw: Any) -> _Done:
        requests.append((kw["container"], kw["command"]))
        return _Done(0)

    start_pod_hooks(_Core(), pol, status, stream=stream, enabled=True)
    assert status.sources[0].phase == "Pending"  # the Job may start
    status.sources[0].phase = "Succeeded"
    finish_pod_hooks(_Core(), pol, status, stream=stream, enabled=True)
    assert requests == [
        ("db", ["fsfreeze", "--freeze", "/var/lib/data"]),
        ("db", ["fsfreeze", "--unfreeze", "/var/lib/data"]),
    ]
    assert [(h.name, h.succeeded) for h in status.hooks] == [("freeze", True), ("thaw", True)]


def test_a_backup_job_with_hooks_runs_them_in_a_container_without_the_secrets() -> None:
    from safehold.controller.jobs import JobRequest, Mount, build_job

    source = Mount("source", "/data/volume", {"persistentVolumeClaim": {"claimName": "db"}})
    repository = Mount(
        "repository", "/repository", {"persistentVolumeClaim": {"claimName": "r"}}, False
    )
    hook_args = ["--pre-hook", "echo hi", "--hook-timeout", "30", "--hook-on-error", "fail"]
    job = build_job(
        JobRequest(
            name="j", namespace="shop", component="backup", labels={}, owner=None,
            args=["backup", "/data/volume", *hook_args], mounts=[source, repository],
            credentials_secret="creds", password_secret="pw",
            resources={"limits": {"memory": "1Gi"}}, hooks=hook_args, hook_mounts=["source"],
        )
    )  # fmt: skip
    spec = job["spec"]["template"]["spec"]
    backup, hooks = spec["containers"]
    assert backup["args"][backup["args"].index("--hooks-handover") + 1] == "/run/safehold/hooks"
    assert hooks["args"] == ["run-hooks", "--handover", "/run/safehold/hooks", *hook_args]
    assert [(m["name"], m["mountPath"], m.get("readOnly")) for m in hooks["volumeMounts"]] == [
        ("hooks-tmp", "/tmp", None),
        ("hooks-handover", "/run/safehold/hooks", None),
        ("source", "/data/volume", True),
    ]
    assert hooks["env"] == [{"name": "HOME", "value": "/tmp"}]
    assert hooks["securityContext"] == backup["securityContext"]
    assert hooks["securityContext"]["readOnlyRootFilesystem"] is True
    assert hooks["resources"] == backup["resources"]
    assert spec["shareProcessNamespace"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["hooks-handover"] == {"name": "hooks-handover", "emptyDir": {"sizeLimit": "1Mi"}}
    # without hooks: one container, as before
    plain = build_job(
        JobRequest(name="j", namespace="shop", component="backup", args=["backup"], labels={},
                   owner=None)
    )  # fmt: skip
    assert [c["name"] for c in plain["spec"]["template"]["spec"]["containers"]] == ["safehold"]
    assert "shareProcessNamespace" not in plain["spec"]["template"]["spec"]


def test_the_jobs_result_is_the_backup_containers_termination_message() -> None:
    """The kubelet lists container statuses by name: ``hooks`` before ``safehold``."""
    from safehold.controller.status import job_outcome

    def terminated(name: str, message: str) -> dict[str, Any]:
        return {"name": name, "state": {"terminated": {"exitCode": 0, "message": message}}}

    pod = {"status": {"phase": "Succeeded", "containerStatuses": [
        terminated("hooks", '{"ok": true, "hooks": [], "note": "the backup is done"}'),
        terminated("safehold", '{"ok": true, "snapshot": "abc", "hooks": []}'),
    ]}}  # fmt: skip
    job = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    outcome = job_outcome(job, [pod])
    assert outcome.summary == {"ok": True, "snapshot": "abc", "hooks": []}
