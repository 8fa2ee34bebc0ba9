"""The one Job builder: every Job is locked down, owned, labelled, and holds no secret."""

from __future__ import annotations

import json

import pytest

from safehold.api import BackupLocation
from safehold.controller.jobs import (
    OPTIONS_DIR,
    PASSWORD_FILE,
    JobRequest,
    Mount,
    build_job,
    job_name,
    label_value,
)
from safehold.controller.repository import repository_access

OWNER = {
    "apiVersion": "safehold.io/v1alpha1",
    "kind": "BackupRun",
    "metadata": {"name": "nightly", "namespace": "prod", "uid": "1234-uid"},
}


def _location(**spec: object) -> BackupLocation:
    return BackupLocation.model_validate(
        {
            "metadata": {"name": "loc", "namespace": "prod"},
            "spec": {
                "provider": "s3",
                "bucket": "backups",
                "prefix": "team/a",
                "endpoint": "https://minio.example:9000",
                "credentialsSecretRef": {"name": "s3-creds"},
                "repositoryPasswordSecretRef": {"name": "repo-pw", "key": "pw"},
                **spec,
            },
        }
    )


def _job(**overrides: object) -> dict[str, object]:
    access = repository_access(_location())
    fields: dict[str, object] = {
        "name": job_name("nightly", "data"),
        "namespace": "prod",
        "component": "backup",
        "args": ["backup", "/data/volume", *access.args],
        "labels": {"safehold.io/run": "nightly"},
        "owner": OWNER,
        "mounts": [
            Mount("source", "/data/volume", {"persistentVolumeClaim": {"claimName": "data"}})
        ],
        "credentials_secret": access.credentials_secret,
        "password_secret": access.password_secret,
        "password_key": access.password_key,
    }
    fields.update(overrides)
    return build_job(JobRequest(**fields))  # type: ignore[arg-type]


def _pod(job: dict[str, object]) -> dict[str, object]:
    return job["spec"]["template"]["spec"]  # type: ignore[index,no-any-return]


def test_container_is_locked_down() -> None:
    pod = _pod(_job())
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True  # type: ignore[index]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}  # type: ignore[index]
    (container,) = pod["containers"]  # type: ignore[misc]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert next(v for v in pod["volumes"] if v["name"] == tmp["name"]) == {  # type: ignore[attr-defined]
        "name": "tmp",
        "emptyDir": {},
    }


def test_job_limits_owner_and_labels() -> None:
    job = _job()
    spec = job["spec"]
    assert spec["backoffLimit"] == 1  # type: ignore[index]
    assert spec["activeDeadlineSeconds"] > 0  # type: ignore[index]
    assert spec["ttlSecondsAfterFinished"] > 0  # type: ignore[index]
    meta = job["metadata"]
    (ref,) = meta["ownerReferences"]  # type: ignore[index]
    assert ref == {
        "apiVersion": "safehold.io/v1alpha1",
        "kind": "BackupRun",
        "name": "nightly",
        "uid": "1234-uid",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    labels = meta["labels"]  # type: ignore[index]
    assert labels["app.kubernetes.io/name"] == "safehold"
    assert labels["app.kubernetes.io/managed-by"] == "safehold-operator"
    assert labels["app.kubernetes.io/component"] == "backup"
    assert labels["safehold.io/run"] == "nightly"
    assert job["spec"]["template"]["metadata"]["labels"] == labels  # type: ignore[index]


def test_secrets_only_by_reference_as_read_only_files() -> None:
    job = _job()
    pod = _pod(job)
    (container,) = pod["containers"]  # type: ignore[misc]
    text = json.dumps(job)
    assert "secretKeyRef" not in text
    assert "envFrom" not in text
    volumes = {v["name"]: v for v in pod["volumes"]}  # type: ignore[attr-defined]
    assert volumes["storage-options"]["secret"] == {"secretName": "s3-creds"}
    assert volumes["repository-password"]["secret"] == {
        "secretName": "repo-pw",
        "items": [{"key": "pw", "path": "password"}],
    }
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["storage-options"]["readOnly"] is True
    assert mounts["repository-password"]["readOnly"] is True
    args = container["args"]
    assert args[args.index("--options-dir") + 1] == OPTIONS_DIR
    assert args[args.index("--password-file") + 1] == PASSWORD_FILE
    assert args[args.index("--repo") + 1] == "s3://backups/team/a"
    assert "endpoint=https://minio.example:9000" in args
    assert "addressing_style=path" in args
    assert "--json" in args
    assert "--termination-log" in args
    assert "--no-cache" in args  # a new pod each run: a local cache would be thrown away
    assert {"name": "HOME", "value": "/tmp"} in container["env"]


def test_volume_in_use_is_read_on_its_node() -> None:
    pod = _pod(_job(node_name="node-7", node_selector={"disk": "ssd"}))
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]  # type: ignore[index]
    assert term["nodeSelectorTerms"] == [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-7"]}]}
    ]
    assert "nodeSelector" not in pod  # the node is fixed by the claim, not by labels
    free = _pod(_job(node_selector={"disk": "ssd"}))
    assert free["nodeSelector"] == {"disk": "ssd"}
    assert "affinity" not in free


def test_filesystem_location_mounts_its_claim() -> None:
    loc = BackupLocation.model_validate(
        {
            "metadata": {"name": "nfs", "namespace": "prod"},
            "spec": {
                "provider": "filesystem",
                "claimName": "nfs-backups",
                "repositoryPasswordSecretRef": {"name": "pw"},
            },
        }
    )
    access = repository_access(loc)
    assert access.args == ["--repo", "file:///repository"]
    assert access.credentials_secret is None
    (mount,) = access.mounts
    assert mount.volume == {"persistentVolumeClaim": {"claimName": "nfs-backups"}}
    assert mount.read_only is False


@pytest.mark.parametrize(
    ("spec", "style"),
    [
        ({}, "path"),  # a custom endpoint: an S3-compatible server
        ({"addressingStyle": "auto"}, "auto"),  # as given, also with an endpoint
        ({"addressingStyle": "virtual"}, "virtual"),
        ({"endpoint": None}, None),  # AWS itself: the provider's own default (auto)
    ],
)
def test_addressing_style_as_given(spec: dict[str, object], style: str | None) -> None:
    args = repository_access(_location(**spec)).args
    styles = [a.split("=", 1)[1] for a in args if a.startswith("addressing_style=")]
    assert styles == ([style] if style else [])


@pytest.mark.parametrize("parts", [("a" * 80, "b" * 80), ("Nightly_Run", "pvc/x"), ("run", "data")])
def test_names_are_valid_and_stable(parts: tuple[str, str]) -> None:
    name = job_name(*parts)
    assert name == job_name(*parts)
    assert len(name) <= 57
    assert name[0].isalnum()
    assert name[-1].isalnum()
    assert name == name.lower()
    assert job_name(parts[0], parts[1] + "x") != name
    value = label_value("/".join(parts))
    assert len(value) <= 63
    assert not value or (value[0].isalnum() and value[-1].isalnum())


def test_jobs_are_pulled_as_the_operator_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart's image.pullPolicy and imagePullSecrets reach every Job (through the
    operator's environment), the hooks container included."""
    from safehold.controller.runtime import job_image_from_env

    monkeypatch.setenv("SAFEHOLD_IMAGE", "registry.example/safehold:1.2.3")
    monkeypatch.setenv("SAFEHOLD_IMAGE_PULL_POLICY", "Always")
    monkeypatch.setenv("SAFEHOLD_IMAGE_PULL_SECRETS", "registry, mirror,")
    image = job_image_from_env()
    pod = _pod(_job(image=image, hooks=["--pre-hook", "true"]))
    containers = pod["containers"]  # type: ignore[index]
    assert [(c["image"], c["imagePullPolicy"]) for c in containers] == [
        ("registry.example/safehold:1.2.3", "Always")
    ] * 2
    assert pod["imagePullSecrets"] == [{"name": "registry"}, {"name": "mirror"}]

    monkeypatch.setenv("SAFEHOLD_IMAGE_PULL_POLICY", "Sometimes")  # refused: the default
    monkeypatch.delenv("SAFEHOLD_IMAGE_PULL_SECRETS")
    image = job_image_from_env()
    assert (image.pull_policy, image.pull_secrets) == ("IfNotPresent", ())
    assert "imagePullSecrets" not in _pod(_job(image=image))


def test_the_jobs_user_is_the_images_unless_the_installation_says(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from safehold.controller.runtime import job_image_from_env

    monkeypatch.delenv("SAFEHOLD_JOB_USER", raising=False)  # a hand-run operator
    monkeypatch.delenv("SAFEHOLD_JOB_GROUP", raising=False)
    image = job_image_from_env()
    assert (image.user, image.group) == (65532, 65532)
    monkeypatch.setenv("SAFEHOLD_JOB_USER", "")  # the chart with null: the platform's
    monkeypatch.setenv("SAFEHOLD_JOB_GROUP", "1000680000")
    image = job_image_from_env()
    assert (image.user, image.group) == (None, 1000680000)
    security = _pod(_job(image=image))["securityContext"]  # type: ignore[index]
    assert "runAsUser" not in security
    assert security["runAsGroup"] == 1000680000
    for refused in ("0", "root", "-5"):
        monkeypatch.setenv("SAFEHOLD_JOB_USER", refused)
        assert job_image_from_env().user == 65532
        assert f"ignoring SAFEHOLD_JOB_USER={refused!r}" in caplog.text
