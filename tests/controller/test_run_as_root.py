"""Whom volume Jobs run as. As root (``spec.job.runAsRoot``): refused unless the installation
allows it; when allowed, the Job's command runs as user 0 with only the capabilities its work
needs, reads files no other user may, and restores their owners. As the application's user
(``spec.job.runAsUser``): no root, no capabilities, the restricted level; that user's files
are read and a restore gives it every file. Pure logic first (with the Pod
Security Standards' rules, which the test ground's 1.20 apiserver does not enforce), then
whole runs on the test ground, whose pod runner keeps only the capabilities a container
adds (testground.podrunner.sandbox)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from safehold.api import BackupPolicy, SourceResult
from safehold.api.jobs import JobSettings
from safehold.controller.jobs import (
    HOOKS_CONTAINER,
    JOB_CONTAINER,
    ROOT_CAPABILITIES,
    JobRequest,
    Mount,
    build_job,
    with_settings,
)
from safehold.controller.limits import Limits, apply_limits, limits_from_env
from testground.kube import Namespace

ROOT = JobSettings(run_as_root=True)


def _request(**fields: Any) -> JobRequest:
    mount = Mount("source", "/data/volume", {"persistentVolumeClaim": {"claimName": "data"}})
    return JobRequest(
        name="j",
        namespace="prod",
        component="backup",
        args=["backup", "/data/volume"],
        labels={},
        owner=None,
        mounts=[mount],
        **fields,
    )


def _containers(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in job["spec"]["template"]["spec"]["containers"]}


def test_a_root_job_runs_as_user_0_with_only_its_access_capabilities() -> None:
    for access, caps in (
        ("read", ["DAC_OVERRIDE"]),
        ("write", ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"]),
    ):
        job = build_job(
            with_settings(_request(file_access=access, hooks=["--pre-hook", "x"]), ROOT)
        )
        containers = _containers(job)
        context = containers[JOB_CONTAINER]["securityContext"]
        assert context["runAsUser"] == 0
        assert context["runAsGroup"] == 0
        assert context["runAsNonRoot"] is False
        assert context["capabilities"] == {"drop": ["ALL"], "add": caps}
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        # the hooks container (the user's commands) stays non-root with no capabilities
        hooks = containers[HOOKS_CONTAINER]["securityContext"]
        assert hooks["runAsNonRoot"] is True
        assert "runAsUser" not in hooks
        assert hooks["capabilities"] == {"drop": ["ALL"]}
        assert job["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_only_volume_jobs_asked_to_run_as_root_do() -> None:
    asked_not = build_job(with_settings(_request(file_access="read"), JobSettings()))
    no_files = build_job(with_settings(_request(), ROOT))  # a dump, an export: never root
    for job in (asked_not, no_files):
        context = _containers(job)[JOB_CONTAINER]["securityContext"]
        assert context["runAsNonRoot"] is True
        assert "runAsUser" not in context
        assert context["capabilities"] == {"drop": ["ALL"]}


def _policy(job: dict[str, Any] | None = None) -> BackupPolicy:
    spec: dict[str, Any] = {
        "location": {"name": "primary"},
        "sources": {
            "volumes": [{"claimName": "data"}],
            "databases": [
                {
                    "name": "orders",
                    "engine": "postgresql",
                    "host": "db",
                    "credentialsSecretRef": {"name": "db"},
                }
            ],
        },
    }
    if job is not None:
        spec["job"] = job
    return BackupPolicy.model_validate(
        {"metadata": {"name": "shop", "namespace": "team-a"}, "spec": spec}
    )


def _planned() -> list[SourceResult]:
    return [
        SourceResult(name="data", kind="volume", job="j1"),
        SourceResult(name="orders", kind="database", job="j2"),
    ]


def test_volume_sources_asking_for_root_fail_unless_the_installation_allows_it() -> None:
    policy = _policy({"runAsRoot": True})
    planned = _planned()
    apply_limits(Limits(), policy, planned, policy.spec.job)
    volume, database = planned
    assert volume.phase == "Failed"
    assert volume.job is None
    assert volume.error is not None
    assert volume.error.reason == "RunAsRootNotAllowed"
    assert volume.error.message.startswith("BackupPolicy shop spec.job.runAsRoot: ")
    assert "policyLimits.runAsRoot" in volume.error.message
    assert database.phase == "Pending"  # a dump Job never runs as root

    allowed = _planned()
    apply_limits(Limits(run_as_root=True), policy, allowed, policy.spec.job)
    assert [r.phase for r in allowed] == ["Pending", "Pending"]


def test_root_asked_by_the_charts_job_defaults_is_named_as_theirs() -> None:
    policy = _policy()
    planned = _planned()
    apply_limits(Limits(), policy, planned, ROOT)  # the policy's own spec.job is unset
    assert planned[0].error is not None
    assert "jobDefaults.runAsRoot (the chart's)" in planned[0].error.message


def test_root_is_allowed_only_when_the_chart_says_true(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAFEHOLD_ALLOW_RUN_AS_ROOT", raising=False)
    assert limits_from_env().run_as_root is False
    monkeypatch.setenv("SAFEHOLD_ALLOW_RUN_AS_ROOT", "true")
    assert limits_from_env().run_as_root is True
    monkeypatch.setenv("SAFEHOLD_ALLOW_RUN_AS_ROOT", "false")
    assert limits_from_env().run_as_root is False


#: The capabilities the baseline Pod Security Standard lets a container add
#: (kubernetes.io/docs/concepts/security/pod-security-standards, "Capabilities"). The test
#: ground's apiserver (1.20) predates Pod Security admission, so the rules are checked here.
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip


def _restricted(pod: dict[str, Any]) -> list[str]:
    """What the restricted Pod Security Standard refuses in ``pod``'s containers."""
    refused = []
    for c in [*pod.get("initContainers", []), *pod["containers"]]:
        context = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
        if context.get("runAsNonRoot") is not True or context.get("runAsUser") == 0:
            refused.append(f"{c['name']}: runs as root")
        if context.get("allowPrivilegeEscalation") is not False:
            refused.append(f"{c['name']}: may escalate")
        caps = context.get("capabilities", {})
        if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            refused.append(f"{c['name']}: capabilities {caps}")
        if context.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
            refused.append(f"{c['name']}: seccomp")
    return refused


def test_root_jobs_meet_the_baseline_pod_security_level_and_others_the_restricted() -> None:
    plain = build_job(_request(file_access="write", hooks=["--pre-hook", "x"]))
    assert _restricted(plain["spec"]["template"]["spec"]) == []
    for access, caps in ROOT_CAPABILITIES.items():
        assert set(caps) <= BASELINE_CAPABILITIES, access
        job = build_job(
            with_settings(_request(file_access=access, hooks=["--pre-hook", "x"]), ROOT)
        )
        pod = job["spec"]["template"]["spec"]
        assert _restricted(pod) == [
            f"{JOB_CONTAINER}: runs as root",
            f"{JOB_CONTAINER}: capabilities {{'drop': ['ALL'], 'add': {list(caps)}}}",
        ]
        assert not any(c["securityContext"]["privileged"] for c in pod["containers"])


def _job_context(namespace: Namespace, selector: str) -> dict[str, Any]:
    done = namespace.kubectl("get", "jobs", "-l", selector, "-o", "json")
    [job] = json.loads(done.stdout)["items"]
    return _containers(job)[JOB_CONTAINER]["securityContext"]  # type: ignore[no-any-return]


def test_a_policy_asking_for_root_fails_its_runs_unless_the_installation_allows_it(
    namespace: Namespace, s3_store: Any, operator: Any, kit: Any
) -> None:
    operator()  # policyLimits.runAsRoot left false, as the chart installs it
    kit.store_location(namespace, s3_store, "primary")
    kit.make_claim(namespace, "data")
    kit.policy(namespace, "pol", "primary", ["data"], job={"runAsRoot": True})
    kit.backup_run(namespace, "run-1", "pol")
    kit.kubectl_wait(namespace, "backuprun/run-1", "Complete", timeout=120)
    run = kit.get(namespace, "backuprun", "run-1")
    assert run["status"]["phase"] == "Failed"
    [source] = run["status"]["sources"]
    assert source["error"]["reason"] == "RunAsRootNotAllowed"
    assert "BackupPolicy pol spec.job.runAsRoot" in source["error"]["message"]
    assert "policyLimits.runAsRoot" in source["error"]["message"]
    jobs = namespace.kubectl(
        "get", "jobs", "-l", "app.kubernetes.io/component=backup", "-o", "name"
    )
    assert jobs.stdout.strip() == ""  # no backup Job was made


def _restore_run_1(namespace: Namespace, kit: Any) -> dict[str, Any]:
    """Restore run-1's volume into a new claim ``copy``; the restore Job's security context."""
    kit.restore_request(
        namespace, "back", backupRunRef={"name": "run-1"}, target={"claimName": "copy"}
    )
    kit.kubectl_wait(namespace, "restorerequest/back", "Complete", timeout=180)
    restore = kit.get(namespace, "restorerequest", "back")
    assert restore["status"]["phase"] == "Succeeded", restore["status"]
    return _job_context(namespace, "safehold.io/restore=back")


def _assert_private_data_restored(copy: Path) -> None:
    """``kit.private_data`` as restored: the private key uid 999's, modes and times kept."""
    key = copy / "private" / "key.pem"
    assert key.read_text() == "only the owner reads this\n"
    info = key.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (999, 998, 0o600)
    assert info.st_mtime == 1_600_000_000
    folder = (copy / "private").stat()
    assert (folder.st_uid, folder.st_gid, folder.st_mode & 0o7777) == (999, 998, 0o700)
    assert (copy / "public.txt").read_text() == "anyone may read this\n"


def test_a_root_backup_reads_every_file_and_its_restore_brings_back_the_owners(
    namespace: Namespace, s3_store: Any, operator: Any, kit: Any
) -> None:
    operator(limits=Limits(run_as_root=True))
    kit.store_location(namespace, s3_store, "primary")
    kit.private_data(kit.make_claim(namespace, "data"))

    # As the image's user, with no capabilities, the private file is reported, not read.
    kit.policy(namespace, "plain", "primary", ["data"])
    kit.backup_run(namespace, "run-plain", "plain")
    kit.kubectl_wait(namespace, "backuprun/run-plain", "Complete", timeout=180)
    plain = kit.get(namespace, "backuprun", "run-plain")
    assert plain["status"]["phase"] == "PartiallyFailed", plain["status"]
    [source] = plain["status"]["sources"]
    assert source["error"]["reason"] == "FilesUnreadable", source
    assert "spec.job.runAsRoot" in source["error"]["message"]
    # the pod ended well: no retry read the same files again into a second snapshot
    pods = namespace.kubectl("get", "pods", "-l", f"job-name={source['job']}", "-o", "name")
    assert len(pods.stdout.split()) == 1, pods.stdout

    kit.policy(namespace, "pol", "primary", ["data"], job={"runAsRoot": True})
    kit.backup_run(namespace, "run-1", "pol")
    kit.kubectl_wait(namespace, "backuprun/run-1", "Complete", timeout=180)
    run = kit.get(namespace, "backuprun", "run-1")
    assert run["status"]["phase"] == "Succeeded", run["status"]
    backup = _job_context(namespace, "safehold.io/run=run-1")
    assert (backup["runAsUser"], backup["capabilities"]["add"]) == (0, ["DAC_OVERRIDE"])

    context = _restore_run_1(namespace, kit)
    assert context["runAsUser"] == 0
    assert context["capabilities"]["add"] == list(ROOT_CAPABILITIES["write"])
    _assert_private_data_restored(kit.claim_dir(namespace, "copy"))


def test_a_volume_restore_following_a_policy_that_asks_for_root_fails_when_not_allowed() -> None:
    from types import SimpleNamespace

    from safehold.api import RestoreRequest
    from safehold.api.restorerequest import RestoredItem
    from safehold.controller.restoreplan import _limit

    request = RestoreRequest.model_validate(
        {"metadata": {"name": "r", "namespace": "team-a"}, "spec": {"policyRef": {"name": "shop"}}}
    )
    policy = _policy({"runAsRoot": True})
    for allowed, phase in ((False, "Failed"), (True, "Pending")):
        rt: Any = SimpleNamespace(limits=Limits(run_as_root=allowed), job_settings=lambda j, r: j)
        item = RestoredItem(source="data", kind="volume", target="pvc/team-a/data")
        _limit(rt, request, policy, item)
        assert item.phase == phase
    assert item.error is None
    rt = SimpleNamespace(limits=Limits(), job_settings=lambda j, r: j)
    item = RestoredItem(source="data", kind="volume", target="pvc/team-a/data")
    _limit(rt, request, policy, item)
    assert item.error is not None
    assert item.error.reason == "RunAsRootNotAllowed"
    assert item.error.message.startswith("BackupPolicy shop spec.job.runAsRoot: this installation")


def _operator_page_example(start: str, end: str) -> dict[str, Any]:
    """The one YAML example of docs/operator.md between ``start`` and ``end``, checked to be
    a valid resource."""
    import re

    import yaml

    from safehold.api import validate_object

    page = (Path(__file__).resolve().parents[2] / "docs" / "operator.md").read_text()
    section = page.split(start, 1)[1].split(end, 1)[0]
    [block] = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)
    manifest: dict[str, Any] = yaml.safe_load(block)
    assert validate_object(manifest) == []
    return manifest


def test_the_operator_pages_example_is_a_valid_policy() -> None:
    manifest = _operator_page_example("### Volume Jobs as root", "### Volume Jobs as the app")
    assert BackupPolicy.model_validate(manifest).spec.job == ROOT
    manifest = _operator_page_example("### Volume Jobs as the application's user", "- A **")
    job = BackupPolicy.model_validate(manifest).spec.job
    assert job is not None
    assert (job.run_as_user, job.run_as_group, job.run_as_root) == (999, 999, None)


def test_a_checks_user_may_not_be_root() -> None:
    from safehold.api import validate_object

    manifest = {
        "apiVersion": "safehold.io/v1alpha1",
        "kind": "BackupPolicy",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {
            "location": {"name": "primary"},
            "sources": {"volumes": [{"claimName": "data"}]},
            "testRestore": {
                "cron": "0 5 * * 0",
                "check": {"image": "postgres:16", "command": ["true"], "runAsUser": 0},
            },
        },
    }
    [error] = validate_object(manifest)
    assert "spec.testRestore.check.runAsUser" in str(error)
    assert "greater than or equal to 1" in str(error)


def test_a_restore_its_user_may_not_write_names_the_paths_and_what_to_do(
    namespace: Namespace, s3_store: Any, operator: Any, kit: Any
) -> None:
    """Overwrite into a claim whose directory belongs to another user: the non-root
    restore cannot write there, and says so in the claim's paths with the way out; the
    same restore as root (the request's own spec.job) succeeds and gives the file its
    owner."""
    operator(limits=Limits(run_as_root=True))
    kit.store_location(namespace, s3_store, "primary")
    data = kit.make_claim(namespace, "data")
    locked = data / "locked"
    locked.mkdir()
    (locked / "a.txt").write_text("kept by uid 999\n")
    os.chown(locked / "a.txt", 999, 998)
    os.chown(locked, 999, 998)
    kit.policy(namespace, "pol", "primary", ["data"])
    kit.backup_run(namespace, "run-1", "pol")
    kit.kubectl_wait(namespace, "backuprun/run-1", "Complete", timeout=180)
    assert kit.get(namespace, "backuprun", "run-1")["status"]["phase"] == "Succeeded"
    (locked / "a.txt").unlink()

    spec = {"backupRunRef": {"name": "run-1"}, "existingResourcePolicy": "Overwrite"}
    kit.restore_request(namespace, "back", **spec)
    kit.kubectl_wait(namespace, "restorerequest/back", "Complete", timeout=180)
    [item] = kit.get(namespace, "restorerequest", "back")["status"]["restored"]
    assert item["phase"] == "Failed", item
    assert item["error"]["reason"] == "FilesNotRestored", item
    message = item["error"]["message"]
    assert "locked/a.txt: " in message, message
    assert "Permission denied" in message, message
    assert "/restore/" not in message  # the claim's own paths
    assert "spec.job.runAsRoot" in message
    assert not (locked / "a.txt").exists()

    # the request's own spec.job, over its policy's
    kit.restore_request(namespace, "again", **spec, job={"runAsRoot": True})
    kit.kubectl_wait(namespace, "restorerequest/again", "Complete", timeout=180)
    restore = kit.get(namespace, "restorerequest", "again")
    assert restore["status"]["phase"] == "Succeeded", restore["status"]
    info = (locked / "a.txt").stat()
    assert (info.st_uid, info.st_gid) == (999, 998)
    assert (locked / "a.txt").read_text() == "kept by uid 999\n"


def test_a_restores_own_job_settings_lie_over_its_policys_and_the_defaults() -> None:
    from safehold.controller.runtime import Runtime

    defaults = JobSettings.model_validate({"backoffLimit": 3, "priorityClassName": "low"})
    kube: Any = None  # merging settings reads no cluster
    rt = Runtime(kube, job_defaults=defaults)
    policy = JobSettings.model_validate({"backoffLimit": 2, "activeDeadlineSeconds": 60})
    request = JobSettings.model_validate({"activeDeadlineSeconds": 7200, "runAsRoot": True})
    merged = rt.job_settings(policy, request)
    assert merged is not None
    assert merged.backoff_limit == 2  # the policy's, over the defaults
    assert merged.priority_class_name == "low"  # the defaults', set by no one else
    assert merged.active_deadline_seconds == 7200  # the request's, over the policy's
    assert merged.run_as_root is True
    assert rt.job_settings(None, None) == rt.job_defaults


def test_a_restore_asking_for_root_itself_is_named_as_asking() -> None:
    from types import SimpleNamespace

    from safehold.api import RestoreRequest
    from safehold.api.restorerequest import RestoredItem
    from safehold.controller.restoreplan import _limit

    request = RestoreRequest.model_validate(
        {
            "metadata": {"name": "r", "namespace": "team-a"},
            "spec": {"policyRef": {"name": "shop"}, "job": {"runAsRoot": True}},
        }
    )
    rt: Any = SimpleNamespace(
        limits=Limits(), job_settings=lambda *layers: JobSettings(run_as_root=True)
    )
    item = RestoredItem(source="data", kind="volume", target="pvc/team-a/data")
    _limit(rt, request, _policy(), item)
    assert item.error is not None
    assert item.error.message.startswith("spec.job.runAsRoot: this installation")


def test_the_operator_pages_restore_example_is_a_valid_request() -> None:
    from safehold.api import RestoreRequest

    manifest = _operator_page_example("**Job settings**", "**The existing-data rule**")
    job = RestoreRequest.model_validate(manifest).spec.job
    assert job is not None
    assert (job.active_deadline_seconds, job.run_as_root) == (43200, True)


APP = JobSettings(run_as_user=999, run_as_group=998)


def test_volume_jobs_run_as_the_application_user_without_root_or_capabilities() -> None:
    for access in ("read", "write"):
        job = build_job(with_settings(_request(file_access=access, hooks=["--pre-hook", "x"]), APP))
        pod = job["spec"]["template"]["spec"]
        context = _containers(job)[JOB_CONTAINER]["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"]) == (999, 998)
        assert context["runAsNonRoot"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert "runAsUser" not in _containers(job)[HOOKS_CONTAINER]["securityContext"]
        assert _restricted(pod) == []
        # a restore may write into a new claim whose root belongs to root: fsGroup
        group = pod["securityContext"].get("fsGroup")
        assert group == (998 if access == "write" else None)  # never chown a backup's source
    plain = build_job(with_settings(_request(), APP))  # a dump, an export: the image's user
    assert "runAsUser" not in _containers(plain)[JOB_CONTAINER]["securityContext"]
    alone = with_settings(_request(file_access="read"), JobSettings(run_as_user=999))
    assert alone.run_as == (999, 999)  # the group defaults to the user


def test_run_as_user_and_root_are_refused_together_with_the_field_and_why() -> None:
    from safehold.api import validate_object

    for job, field, words in (
        ({"runAsRoot": True, "runAsUser": 999}, "runAsUser", "not both"),
        ({"runAsGroup": 998}, "runAsGroup", "set runAsUser too"),
        ({"runAsUser": 0}, "runAsUser", "greater than or equal to 1"),
    ):
        doc = _policy(None).model_dump(by_alias=True, exclude_none=True, mode="json")
        doc |= {"apiVersion": "safehold.io/v1alpha1", "kind": "BackupPolicy"}
        doc["spec"]["job"] = job
        errors = validate_object(doc)
        assert any(e.path == f"spec.job.{field}" and words in e.message for e in errors), errors


def test_who_the_jobs_run_as_comes_whole_from_the_last_layer_that_says() -> None:
    from types import SimpleNamespace

    from safehold.controller.runtime import Runtime

    def merged(*layers: JobSettings | None) -> JobSettings | None:
        fake: Any = SimpleNamespace(job_defaults=layers[0])
        return Runtime.job_settings(fake, *layers[1:])

    as_app = merged(ROOT, APP)  # the chart's default root, a policy's own user
    assert as_app is not None
    assert (as_app.run_as_root, as_app.run_as_user, as_app.run_as_group) == (None, 999, 998)
    as_root = merged(None, APP, JobSettings(run_as_root=True, backoff_limit=3))
    assert as_root is not None
    assert (as_root.run_as_root, as_root.run_as_user, as_root.backoff_limit) == (True, None, 3)
    kept = merged(None, APP, JobSettings(backoff_limit=3))  # a restore asking for retries
    assert kept is not None
    assert (kept.run_as_user, kept.run_as_group) == (999, 998)


def test_a_backup_as_the_application_user_reads_its_files_and_restores_them_to_it(
    namespace: Namespace, s3_store: Any, operator: Any, kit: Any
) -> None:
    """Where root is not allowed (the chart's default), a policy names the application's
    user: the backup reads the private files and the restore gives every file to that user,
    with the modes and times of the snapshot."""
    operator()  # policyLimits.runAsRoot left false
    kit.store_location(namespace, s3_store, "primary")
    kit.private_data(kit.make_claim(namespace, "data"))
    kit.policy(namespace, "pol", "primary", ["data"], job={"runAsUser": 999, "runAsGroup": 998})
    kit.backup_run(namespace, "run-1", "pol")
    kit.kubectl_wait(namespace, "backuprun/run-1", "Complete", timeout=180)
    run = kit.get(namespace, "backuprun", "run-1")
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert "snapshotId" in run["status"]["sources"][0], json.dumps(run["status"])
    backup = _job_context(namespace, "safehold.io/run=run-1")
    assert (backup["runAsUser"], backup["runAsGroup"]) == (999, 998)
    assert backup["capabilities"] == {"drop": ["ALL"]}

    context = _restore_run_1(namespace, kit)
    assert (context["runAsUser"], context["runAsGroup"]) == (999, 998)
    copy = kit.claim_dir(namespace, "copy")
    _assert_private_data_restored(copy)
    public = (copy / "public.txt").stat()
    assert (public.st_uid, public.st_gid) == (999, 998)  # the user's, not root's
