"""Job-side hooks: a volume source's ``hooks`` (``spec.sources.volumes[].hooks``), run in
the backup Job's own hooks container (``safehold run-hooks``, docs/hooks.md), not by the
operator. Here: the backup Job's hook options, and the hook results its summary reports
copied into the source's status. The hooks the operator runs itself in application pods
are safehold.controller.exec_hooks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from safehold.api.backuppolicy import BackupPolicy
from safehold.api.backuprun import HookResult, SourceResult
from safehold.api.reports import ErrorDetail
from safehold.api.summaries import BackupHooksSummary, HookReport
from safehold.controller import commands
from safehold.controller.sources.claims import VolumeClaim, volume_source

__all__ = ["job_hook_args", "record_job_hooks"]


def job_hook_args(policy: BackupPolicy, claim: VolumeClaim) -> list[str]:
    """The ``safehold backup`` options for the Job-side hooks of the volume source that
    ``claim`` comes from; empty without hooks."""
    volume = volume_source(policy, claim)
    hooks = volume.hooks if volume is not None else None
    if hooks is None:
        return []
    on_error: Literal["fail", "continue"] = "continue" if hooks.on_error == "Continue" else "fail"
    return commands.hook_options(
        commands.HookOptions(
            pre=hooks.pre_backup,
            post=hooks.post_backup,
            timeout_seconds=hooks.timeout_seconds,
            on_error=on_error,
        )
    )


def _hook_result(item: HookReport) -> HookResult:
    on_error: Literal["Fail", "Continue"] = "Continue" if item.on_error == "continue" else "Fail"
    return HookResult(
        name=item.name[:253],
        phase="post" if item.phase == "post" else "pre",
        exit_code=item.exit_code,
        duration_seconds=max(0.0, item.duration_seconds or 0.0),
        timed_out=item.timed_out,
        # no empty strings: the API client sends "" in a patch as null
        output=(item.output or "")[-1000:] or None,
        on_error=on_error,
        succeeded=item.ok,
    )


def record_job_hooks(source: SourceResult, summary: Mapping[str, Any] | None) -> None:
    """Copy the hook results of a backup Job's summary into ``source``: each hook into
    ``hooks``, a failed Continue hook into ``warnings``, and a failed Fail hook into the
    source's error (reason ``HookFailed``; a snapshot made before a failed post hook is
    kept and named). Reading the same summary again changes nothing: the pod can have
    ended (and reported) while its Job is still running, and the source is read again."""
    reported = BackupHooksSummary.model_validate(summary or {}).hooks
    if reported is None:
        return
    source.hooks = []
    failed: HookResult | None = None
    for hook in (_hook_result(item) for item in reported[:16]):
        source.hooks.append(hook)
        if hook.succeeded:
            continue
        why = "timed out" if hook.timed_out else f"exit code {hook.exit_code}"
        warning = f"{hook.phase} hook {hook.name} failed ({why}), continued"
        if hook.on_error == "Continue" and warning not in source.warnings:
            source.warnings.append(warning)  # once: a Job is read again until it is done
        elif failed is None:
            failed = hook
    if failed is not None:
        why = "timed out" if failed.timed_out else f"exit code {failed.exit_code}"
        kept = f"; snapshot {source.snapshot_id[:12]} was saved" if source.snapshot_id else ""
        # The hook's output stays in status.sources[].hooks (scrubbed of secrets by the
        # Job): the error message also goes into Events, which more people can read.
        source.error = ErrorDetail(
            reason="HookFailed",
            message=f"{failed.phase} hook {failed.name} of the backup Job failed ({why}){kept}"
            + ("; its output is in status.sources[].hooks" if failed.output else ""),
        )
        if source.phase not in ("Pending", "Running"):
            source.phase = "Succeeded" if source.snapshot_id else "Failed"
