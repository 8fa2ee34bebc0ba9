"""A recording stand-in for the controller's Kubernetes calls about Jobs, for unit tests of
the controller's pure logic (what a pass starts, what an ended Job becomes in status).

Only for that: everything that talks to Kubernetes is also tested against the test
ground's real apiserver (tests/controller/test_operator_*.py). A Job's state is read by the
real :meth:`safehold.controller.kube.Kube.outcome_of` from what :meth:`FakeKube.finish`
leaves, as the kubelet would: the Job's conditions and its pod's termination message.
"""

from __future__ import annotations

from typing import Any

from safehold.controller.kube import Kube

__all__ = ["FakeKube"]

_FINISHED = "2026-11-26T11:00:00Z"


class FakeKube:
    """Jobs created, read, listed by label and deleted; events recorded; custom resources
    from ``objects`` (by plural and name)."""

    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]] | None = None) -> None:
        self.objects = dict(objects or {})
        self.jobs: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, list[dict[str, Any]]] = {}
        self.events: list[tuple[str, str, bool]] = []
        self.created: list[dict[str, Any]] = []
        self.deleted: list[str] = []

    def get_cr(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((plural, name))

    def create_job(self, manifest: dict[str, Any]) -> bool:
        name = manifest["metadata"]["name"]
        if name in self.jobs:
            return False
        self.created.append(manifest)
        self.jobs[name] = {**manifest, "status": {"active": 1}}
        return True

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.jobs.get(name)

    def delete_job(self, namespace: str, name: str) -> None:
        self.deleted.append(name)
        self.jobs.pop(name, None)

    def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The Jobs whose labels match every ``key=value`` of ``selector``."""
        wanted = dict(pair.split("=", 1) for pair in selector.split(",") if pair)
        return [
            job for job in self.jobs.values()
            if all(job["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
        ]  # fmt: skip

    def job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        return self.pods.get(job, [])

    def pods_refused(self, namespace: str, job: str) -> str | None:
        return None

    outcome_of = Kube.outcome_of  # the real reading of a Job's state, from these fakes

    def event(self, obj: Any, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append((reason, message, warning))

    def finish(self, name: str, ok: bool, message: str, exit_code: int = 0) -> None:
        """End Job ``name`` (Complete or Failed), its pod terminated with ``message`` (the
        command's summary line) and ``exit_code``."""
        cond = "Complete" if ok else "Failed"
        self.jobs[name]["status"] = {
            "conditions": [{"type": cond, "status": "True", "lastTransitionTime": _FINISHED}],
            "completionTime": _FINISHED if ok else None,
        }
        term = {"exitCode": exit_code, "message": message}
        self.pods[name] = [{"metadata": {"name": f"{name}-x"}, "status": {
            "phase": "Succeeded" if ok else "Failed",
            "containerStatuses": [{"state": {"terminated": term}}],
        }}]  # fmt: skip
