"""Application-pod hooks: a policy's ``hooks.preBackup`` / ``hooks.postBackup`` commands, run by
the operator in the selected pods through the Kubernetes exec API (``pods/exec``).

Why the operator and not the backup Job: the Job's pod has no API rights by design
(docs/operator.md), and a command such as ``fsfreeze --freeze`` or a database flush has to
run inside the application's own container, where only exec reaches. The operator runs
the pre hooks before it creates a run's backup Jobs and the post hooks after they end,
also when a pre hook or a Job failed, so that what a pre hook did (a freeze, a lock) is
always undone.

Exec is a rare power, so it is off twice by default (docs/hooks.md):

- the installation: without the chart value ``execHooks.enabled`` the operator has no
  ``pods/exec`` right and runs no exec hook (each fails with a message saying so);
- the pod: a pod runs a policy's exec hooks only when its owner opted in with the
  annotation ``safehold.io/exec-hooks``, ``"true"`` for any policy of its namespace or a
  comma-separated list of policy names. Creating a BackupPolicy must not give its author
  a shell in every pod of the namespace.

The boundary is the ``kubernetes.stream.stream`` call: it is injected, so the request built,
the timeout, on-error handling and the recorded result are tested without an exec-capable
kubelet (docs/development.md: the test ground's pod runner has none).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from safehold.api.backuppolicy import BackupPolicy, Hook
from safehold.api.backuprun import BackupRunStatus, HookResult
from safehold.api.reports import ErrorDetail
from safehold.controller.sources.claims import selector_string

__all__ = [
    "DISABLED",
    "EXEC_HOOKS_ANNOTATION",
    "OUTPUT_LIMIT",
    "ExecHookResult",
    "HookRun",
    "StreamFn",
    "failure_reason",
    "finish_pod_hooks",
    "hook_failure",
    "opted_in",
    "run_hooks",
    "run_pod_hook",
    "start_pod_hooks",
    "undo_pod_hooks",
]

#: The characters of a hook's output kept in the status (the tail: errors come last).
OUTPUT_LIMIT = 512
#: The pod annotation by which a pod's owner lets policies run exec hooks in it.
EXEC_HOOKS_ANNOTATION = "safehold.io/exec-hooks"
#: Why no exec hook runs when the installation has not enabled them.
DISABLED = (
    "exec hooks are disabled in this installation: the Helm chart value "
    "execHooks.enabled=true enables them (it grants the operator pods/exec); see "
    "docs/hooks.md"
)
#: How long one wait for exec output may block, so the timeout is checked this often.
_POLL_SECONDS = 1.0

StreamFn = Callable[..., Any]
Phase = Literal["pre", "post"]


@dataclass
class ExecHookResult:
    """One hook in one pod, as recorded in the BackupRun status (``status.hooks``)."""

    name: str
    phase: Phase
    pod: str | None
    container: str | None
    exit_code: int | None
    duration_seconds: float
    timed_out: bool
    output: str
    on_error: Literal["Fail", "Continue"]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.error is None

    def to_status(self) -> dict[str, Any]:
        """The camelCase status entry."""
        d = asdict(self)
        return {
            "name": d["name"],
            "phase": d["phase"],
            "pod": d["pod"],
            "container": d["container"],
            "exitCode": d["exit_code"],
            "durationSeconds": d["duration_seconds"],
            "timedOut": d["timed_out"],
            "output": d["output"] or None,
            "onError": d["on_error"],
            "error": d["error"],
            "succeeded": self.ok,
        }


@dataclass
class HookRun:
    """The results of a phase's hooks; ``failed`` names the first Fail hook that failed."""

    results: list[ExecHookResult]
    failed: ExecHookResult | None

    @property
    def reason(self) -> str | None:
        """Why the run fails, for the source's error message, or None."""
        f = self.failed
        if f is None:
            return None
        return _why(f.phase, f.name, f.pod, f.error, f.timed_out, f.exit_code)


def _why(
    phase: str,
    name: str,
    pod: str | None,
    error: str | None,
    timed_out: bool,
    exit_code: int | None,
) -> str:
    """A failed hook, as the sources' error message says it."""
    where = f" in pod {pod}" if pod else ""
    why = error or ("timed out" if timed_out else f"exit code {exit_code}")
    return f"{phase}Backup hook {name}{where} failed: {why}"


def _tail(text: str, secrets: Sequence[str]) -> str:
    for value in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(value, "***")
    return text if len(text) <= OUTPUT_LIMIT else "..." + text[-OUTPUT_LIMIT:]


def opted_in(pod: Any, policy: str) -> bool:
    """Whether ``pod`` (a V1Pod) lets ``policy`` run exec hooks in it."""
    annotations = (pod.metadata.annotations if pod.metadata else None) or {}
    value = str(annotations.get(EXEC_HOOKS_ANNOTATION, "")).strip()
    if value.lower() == "true":
        return True
    return bool(policy) and policy in {v.strip() for v in value.split(",")}


def _refused(hook: Hook, phase: Phase, pod: str | None, error: str) -> ExecHookResult:
    return ExecHookResult(
        name=hook.name,
        phase=phase,
        pod=pod,
        container=hook.container,
        exit_code=None,
        duration_seconds=0.0,
        timed_out=False,
        output="",
        on_error=hook.on_error,
        error=error,
    )


def _ready_pods(core: Any, namespace: str, hook: Hook) -> list[Any]:
    pods = core.list_namespaced_pod(namespace, label_selector=selector_string(hook.pod_selector))
    return [p for p in pods.items if (p.status and p.status.phase) == "Running"]


def run_pod_hook(
    core: Any,
    stream: StreamFn,
    pod: Any,
    hook: Hook,
    phase: Phase,
    *,
    secrets: Sequence[str] = (),
    clock: Callable[[], float] = time.monotonic,
) -> ExecHookResult:
    """Run ``hook`` in ``pod`` (a V1Pod) through exec; close the stream after the timeout."""
    name, namespace = pod.metadata.name, pod.metadata.namespace
    container = hook.container or pod.spec.containers[0].name
    start = clock()
    out: list[str] = []
    timed_out = False
    try:
        resp = stream(
            core.connect_get_namespaced_pod_exec,
            name,
            namespace,
            command=list(hook.command),
            container=container,
            stdin=False,
            stdout=True,
            stderr=True,
            tty=False,
            _preload_content=False,
        )
        try:
            while resp.is_open():
                if clock() - start > hook.timeout_seconds:
                    timed_out = True
                    break
                resp.update(timeout=_POLL_SECONDS)
                if resp.peek_stdout():
                    out.append(resp.read_stdout())
                if resp.peek_stderr():
                    out.append(resp.read_stderr())
        finally:
            resp.close()
        code = None if timed_out else resp.returncode
        error = None
    except Exception as exc:  # noqa: BLE001 - any API failure is this hook's result
        code, error = None, f"exec failed: {type(exc).__name__}: {getattr(exc, 'reason', exc)}"
    output = _tail("".join(out), secrets)
    if timed_out:
        # Closing the stream ends the exec session; the kubelet then stops the process.
        output = f"stopped after the timeout of {hook.timeout_seconds} s\n{output}".strip()
    return ExecHookResult(
        name=hook.name,
        phase=phase,
        pod=name,
        container=container,
        exit_code=code,
        duration_seconds=round(clock() - start, 3),
        timed_out=timed_out,
        output=output,
        on_error=hook.on_error,
        error=error,
    )


def run_hooks(
    core: Any,
    namespace: str,
    hooks: Sequence[Hook],
    phase: Phase,
    *,
    stream: StreamFn | None = None,
    secrets: Sequence[str] = (),
    clock: Callable[[], float] = time.monotonic,
    policy: str = "",
    enabled: bool = True,
) -> HookRun:
    """Run each hook in each of its Running pods, in order. A pre hook with onError Fail
    that fails stops the phase (the backup must not start); post hooks all run, since
    each undoes something. A hook whose selector matches no Running pod fails too: a
    freeze that silently ran nowhere would make the backup look consistent when it is not.
    So does a hook in a pod that did not opt in to ``policy``'s hooks, and every hook when
    the installation has not ``enabled`` exec hooks."""
    if stream is None:
        from kubernetes.stream import stream as kube_stream

        stream = kube_stream
    results: list[ExecHookResult] = []
    failed: ExecHookResult | None = None
    for hook in hooks:
        pods = _ready_pods(core, namespace, hook) if enabled else []
        if not enabled:
            hook_results = [_refused(hook, phase, None, DISABLED)]
        elif not pods:
            sel = selector_string(hook.pod_selector)
            why = f"no Running pod in namespace {namespace} matches podSelector {sel}"
            hook_results = [_refused(hook, phase, None, why)]
        else:
            hook_results = [
                run_pod_hook(core, stream, p, hook, phase, secrets=secrets, clock=clock)
                if opted_in(p, policy)
                else _refused(
                    hook,
                    phase,
                    p.metadata.name,
                    f"pod {p.metadata.name} has not opted in to exec hooks: its owner must "
                    f'annotate it {EXEC_HOOKS_ANNOTATION}: {policy or "true"} (or "true" '
                    "for every policy of the namespace)",
                )
                for p in pods
            ]
        results += hook_results
        bad = next((r for r in hook_results if not r.ok and r.on_error == "Fail"), None)
        if bad is not None and failed is None:
            failed = bad
            if phase == "pre":
                break
    return HookRun(results=results, failed=failed)


def undo_pod_hooks(
    core: Any,
    policy: BackupPolicy,
    status: BackupRunStatus,
    stream: StreamFn | None = None,
    *,
    enabled: bool,
) -> str | None:
    """Run the policy's postBackup exec hooks now, whatever the sources' state, if the
    preBackup hooks ran and the post hooks have not: a run stopped or replaced part way
    must still undo what its pre hooks did (a freeze, a lock). Why an onError Fail post
    hook failed, else None."""
    if not any(h.phase == "pre" for h in status.hooks):
        return None
    return _run_policy_hooks(core, policy, status, "post", stream, enabled)


def _run_policy_hooks(
    core: Any,
    policy: BackupPolicy,
    status: BackupRunStatus,
    phase: Phase,
    stream: StreamFn | None,
    enabled: bool,
) -> str | None:
    """Run the policy's ``phase`` exec hooks once per run and record their results; why an
    onError Fail hook failed, else None (also when there are none or they ran already)."""
    hooks = policy.spec.hooks
    wanted = list((hooks.pre_backup if phase == "pre" else hooks.post_backup) if hooks else [])
    if not wanted or any(h.phase == phase for h in status.hooks):
        return None
    run = run_hooks(
        core,
        policy.metadata.namespace or "",
        wanted,
        phase,
        stream=stream,
        policy=policy.metadata.name or "",
        enabled=enabled,
    )
    status.hooks += [HookResult.model_validate(r.to_status()) for r in run.results]
    return run.reason


def start_pod_hooks(
    core: Any,
    policy: BackupPolicy,
    status: BackupRunStatus,
    stream: StreamFn | None = None,
    *,
    enabled: bool,
) -> None:
    """Run the policy's preBackup exec hooks once per run, before any Job starts. When one
    with onError Fail fails, every source that has not started fails with ``HookFailed``
    (no Job, so no snapshot); the post hooks then run when the run ends."""
    reason = _run_policy_hooks(core, policy, status, "pre", stream, enabled)
    if reason is None:
        return
    for source in status.sources:
        if source.phase == "Pending":
            source.phase = "Failed"
            source.error = ErrorDetail(reason="HookFailed", message=reason)


def finish_pod_hooks(
    core: Any,
    policy: BackupPolicy,
    status: BackupRunStatus,
    stream: StreamFn | None = None,
    *,
    enabled: bool,
    captured: Collection[str] = (),
) -> None:
    """Run the policy's postBackup exec hooks once, as soon as every source is final (also
    after failures) or ``captured`` (a source whose VolumeSnapshot is cut, though its Job
    still reads the clone): an application frozen for the snapshots is thawed then, not
    after the upload. Once every source is final, a failed Fail post hook marks each source
    without an error with ``HookFailed`` (their snapshots are kept), so the run does not
    report plain success."""
    active = [s for s in status.sources if s.phase in ("Pending", "Running")]
    if any(s.name not in captured for s in active):
        return
    _run_policy_hooks(core, policy, status, "post", stream, enabled)
    if active:
        return  # the failure, if any, is recorded once the last source is final
    reason = failure_reason(status.hooks, "post")
    if reason is None:
        return
    for source in status.sources:
        if source.error is None:
            source.error = ErrorDetail(reason="HookFailed", message=reason)


def failure_reason(results: Sequence[HookResult], phase: Phase) -> str | None:
    """Why the recorded hooks of ``phase`` fail the run (the first onError Fail hook that
    failed), or None."""
    failed = next(
        (h for h in results if h.phase == phase and not h.succeeded and h.on_error == "Fail"),
        None,
    )
    return None if failed is None else hook_failure(failed)


def hook_failure(h: HookResult) -> str:
    """A recorded hook that failed, as messages say it."""
    return _why(h.phase, h.name, h.pod, h.error, h.timed_out, h.exit_code)
