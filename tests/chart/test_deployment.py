"""The rendered Deployment, Service and ServiceMonitor: secure, wired together, configurable."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from safehold.api.jobs import JobSettings

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {"watchNamespaces": ["team-a"]},
    "service-monitor": {"serviceMonitor": {"enabled": True}},
    "openshift": {
        "podSecurityContext": {
            "runAsNonRoot": True,
            "runAsUser": None,
            "runAsGroup": None,
            "fsGroup": None,
        }
    },
}


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [container] = pod_spec(objects)["containers"]
    assert container["name"] == "operator"
    return container  # type: ignore[no-any-return]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_container_is_locked_down(render: Any, variant: str) -> None:
    spec = pod_spec(render(VARIANTS[variant]))
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for host_namespace in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(host_namespace), host_namespace
    containers = spec["containers"] + spec.get("initContainers", [])
    assert containers
    for container in containers:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, container["name"]
        assert sc["readOnlyRootFilesystem"] is True, container["name"]
        assert sc["runAsNonRoot"] is True, container["name"]
        assert sc.get("privileged", False) is False, container["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, container["name"]
        assert container["resources"]["limits"]["memory"], container["name"]
    # a read-only root filesystem still needs a writable /tmp
    mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_openshift_variant_leaves_the_uid_to_the_platform(render: Any) -> None:
    sc = pod_spec(render(VARIANTS["openshift"]))["securityContext"]
    assert sc == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def test_two_replicas_electing_a_leader_running_safehold_operator(render: Any) -> None:
    objects = render()
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    container = operator_container(objects)
    env = {e["name"]: e for e in container["env"]}
    assert env["SAFEHOLD_LEADER_LEASE"]["value"] == "safehold-leader"
    assert env["SAFEHOLD_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    spread = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    [term] = spread["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    # (the PodDisruptionBudget needs policy/v1, which helm template without a cluster lacks)
    assert container["image"] == "ghcr.io/safehold/safehold:0.1.0"
    assert "command" not in container  # the image's entrypoint is `safehold`
    assert container["args"][0] == "operator"
    assert "--all-namespaces" in container["args"]
    assert not any(a.startswith("--namespace") for a in container["args"])


def test_namespaced_mode_passes_each_namespace(render: Any) -> None:
    args = operator_container(render({"watchNamespaces": ["team-a", "team-b"]}))["args"]
    assert "--all-namespaces" not in args
    assert [a for a in args if a.startswith("--namespace")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]


def test_probes_and_ports_follow_the_values(render: Any) -> None:
    container = operator_container(render({"metrics": {"port": 9090}, "health": {"port": 9091}}))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 9090, "health": 9091}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert "--metrics-port=9090" in container["args"]
    assert "--health-port=9091" in container["args"]


def test_service_selects_the_pod_and_names_the_metrics_port(render: Any) -> None:
    objects = render()
    [service] = [o for o in objects if o["kind"] == "Service"]
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    [port] = service["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("metrics", 8080, "metrics")
    assert not [o for o in objects if o["kind"] == "ServiceMonitor"]


def test_service_monitor_scrapes_the_metrics_service(render: Any) -> None:
    objects = render(
        {"serviceMonitor": {"enabled": True, "interval": "1m", "labels": {"release": "kps"}}}
    )
    [service] = [o for o in objects if o["kind"] == "Service"]
    [monitor] = [o for o in objects if o["kind"] == "ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["safehold-system"]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == (
        "metrics",
        "/metrics",
        "1m",
    )


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_job_defaults_reach_the_operator_as_a_valid_job_settings_json(render: Any) -> None:
    values = {
        "jobDefaults": {
            "activeDeadlineSeconds": 7200,
            "backoffLimit": 0,
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [{"key": "backup", "operator": "Exists", "effect": "NoSchedule"}],
            "priorityClassName": "low",
        }
    }
    env = env_of(operator_container(render(values)))
    settings = JobSettings.model_validate_json(env["SAFEHOLD_JOB_DEFAULTS"])
    assert settings.active_deadline_seconds == 7200
    assert settings.backoff_limit == 0
    assert settings.node_selector == {"disk": "ssd"}
    assert settings.priority_class_name == "low"
    assert settings.resources is not None
    assert settings.resources.limits == {"memory": "1Gi"}
    # the defaults leave empty fields out, and still parse
    default = json.loads(env_of(operator_container(render()))["SAFEHOLD_JOB_DEFAULTS"])
    assert set(default) == {"backoffLimit", "resources"}
    JobSettings.model_validate(default)


def test_jobs_run_the_operators_own_image(render: Any) -> None:
    digest = "sha256:" + "ab" * 32
    container = operator_container(
        render({"image": {"repository": "registry.example:5000/safehold", "digest": digest}})
    )
    assert container["image"] == f"registry.example:5000/safehold@{digest}"
    env = env_of(container)
    assert env["SAFEHOLD_IMAGE"] == container["image"]
    assert env["SAFEHOLD_IMAGE_PULL_POLICY"] == "IfNotPresent"
    assert "SAFEHOLD_IMAGE_PULL_SECRETS" not in env
    values = {
        "image": {"tag": "0.2.0", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "registry"}, {"name": "mirror"}],
    }
    tagged = operator_container(render(values))
    assert tagged["image"] == "ghcr.io/safehold/safehold:0.2.0"
    assert tagged["imagePullPolicy"] == "Always"
    # the Jobs are pulled the same way: the operator reads these (controller/runtime.py)
    env = env_of(tagged)
    assert env["SAFEHOLD_IMAGE_PULL_POLICY"] == "Always"
    assert env["SAFEHOLD_IMAGE_PULL_SECRETS"] == "registry,mirror"


def test_placement_values_reach_the_pod(render: Any) -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                ]
            }
        }
    }
    tolerations = [{"key": "infra", "operator": "Equal", "value": "yes", "effect": "NoExecute"}]
    spec = pod_spec(
        render(
            {
                "nodeSelector": {"role": "infra"},
                "tolerations": tolerations,
                "affinity": affinity,
                "priorityClassName": "system-cluster-critical",
                "imagePullSecrets": [{"name": "regcred"}],
                "podAnnotations": {"a": "b"},
            }
        )
    )
    assert spec["nodeSelector"] == {"role": "infra"}
    assert spec["tolerations"] == tolerations
    assert spec["affinity"] == affinity
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]


def test_two_releases_name_every_object_apart(render: Any) -> None:
    first = {(o["kind"], o["metadata"]["name"]) for o in render(release="one")}
    second = {(o["kind"], o["metadata"]["name"]) for o in render(release="two")}
    assert not first & second


@pytest.mark.parametrize("variant", ["defaults", "namespaced"])
def test_the_safehold_cli_accepts_the_rendered_arguments(render: Any, variant: str) -> None:
    from safehold.cli.main import build_parser

    values = {**VARIANTS[variant], "metrics": {"port": 9090}, "health": {"port": 9091}}
    container = operator_container(render(values))
    args = build_parser().parse_args(container["args"])
    assert args.command == "operator"
    assert args.func.__name__ == "run_operator"
    assert (args.metrics_port, args.health_port) == (9090, 9091)
    assert args.all_namespaces == (variant == "defaults")
    assert args.namespace == values.get("watchNamespaces", [])


def test_log_level_reaches_the_operator(render: Any) -> None:
    env = env_of(operator_container(render({"logLevel": "debug"})))
    assert env["SAFEHOLD_LOG_LEVEL"] == "debug"


def test_retention_lock_wait_reaches_the_operator(render: Any) -> None:
    assert env_of(operator_container(render({})))["SAFEHOLD_RETENTION_LOCK_WAIT"] == "600"
    env = env_of(operator_container(render({"retentionLockWaitSeconds": 30})))
    assert env["SAFEHOLD_RETENTION_LOCK_WAIT"] == "30"


def test_the_cluster_wide_run_limit_reaches_the_operator(render: Any) -> None:
    assert env_of(operator_container(render({})))["SAFEHOLD_MAX_CONCURRENT_RUNS"] == "0"
    env = env_of(operator_container(render({"maxConcurrentRuns": 4})))
    assert env["SAFEHOLD_MAX_CONCURRENT_RUNS"] == "4"


def test_the_chart_passes_the_limits_to_the_operator(render: Any, of_kind: Any) -> None:
    def env(values: dict[str, Any]) -> dict[str, str]:
        [deployment] = of_kind(render(values), "Deployment")
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e.get("value") for e in container["env"]}

    assert "SAFEHOLD_ALLOWED_DATABASE_HOSTS" not in env({})
    limited = env(
        {"policyLimits": {"serviceAccounts": ["*/sa", "ops/x"], "databaseHosts": ["*.svc"]}}
    )
    assert limited["SAFEHOLD_ALLOWED_SERVICE_ACCOUNTS"] == "*/sa,ops/x"
    assert limited["SAFEHOLD_ALLOWED_DATABASE_HOSTS"] == "*.svc"


@pytest.mark.parametrize(
    ("security", "user", "group"),
    [
        ({}, "65532", "65532"),
        (VARIANTS["openshift"]["podSecurityContext"], "", ""),
        ({"runAsUser": 1000680000, "runAsGroup": 1000680000}, "1000680000", "1000680000"),
    ],
)
def test_the_jobs_run_as_the_operator_does(
    render: Any, security: dict[str, Any], user: str, group: str
) -> None:
    """The Jobs' user follows podSecurityContext: on OpenShift (null) none is named, so the
    platform assigns one; a large id stays a whole number (Helm's numbers are floats)."""
    from safehold.controller.jobs import JobRequest, build_job
    from safehold.controller.runtime import job_image_from_env

    values = {"podSecurityContext": security} if security else {}
    env = env_of(operator_container(render(values)))
    assert (env["SAFEHOLD_JOB_USER"], env["SAFEHOLD_JOB_GROUP"]) == (user, group)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAFEHOLD_JOB_USER", user)
        patch.setenv("SAFEHOLD_JOB_GROUP", group)
        image = job_image_from_env()
    job = build_job(JobRequest("j", "ns", "backup", ["backup"], {}, None, image=image))
    pod = job["spec"]["template"]["spec"]["securityContext"]
    assert pod.get("runAsUser") == (int(user) if user else None)
    assert pod.get("runAsGroup") == (int(group) if group else None)
    assert pod["runAsNonRoot"] is True


def test_root_jobs_by_default_need_the_installation_to_allow_them(render: Any) -> None:
    message = render.fails({"jobDefaults": {"runAsRoot": True}})
    assert "policyLimits.runAsRoot" in message
    allowed = {"jobDefaults": {"runAsRoot": True}, "policyLimits": {"runAsRoot": True}}
    env = env_of(operator_container(render(allowed)))
    assert env["SAFEHOLD_ALLOW_RUN_AS_ROOT"] == "true"
    assert json.loads(env["SAFEHOLD_JOB_DEFAULTS"])["runAsRoot"] is True


def test_the_job_proxy_reaches_every_container_of_every_job(render: Any) -> None:
    """jobProxy -> the operator's environment -> each container of a Job (the command's,
    a backup's hooks), upper and lower case; the operator's own environment has no proxy."""
    from safehold.controller.jobs import JobRequest, build_job
    from safehold.controller.runtime import job_image_from_env

    assert "SAFEHOLD_JOB_HTTPS_PROXY" not in env_of(operator_container(render()))
    values = {
        "jobProxy": {
            "httpsProxy": "http://proxy.corp:3128",
            "httpProxy": "http://proxy.corp:3128",
            "noProxy": ".svc,.cluster.local,10.0.0.0/8",
        }
    }
    env = env_of(operator_container(render(values)))
    assert "HTTPS_PROXY" not in env
    with pytest.MonkeyPatch.context() as patch:
        for name in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"):
            patch.setenv(f"SAFEHOLD_JOB_{name}", env[f"SAFEHOLD_JOB_{name}"])
        image = job_image_from_env()
    request = JobRequest("j", "ns", "backup", ["backup"], {}, None, image=image)
    job = build_job(replace(request, hooks=["--pre-hook", "true"]))
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 2
    for container in containers:
        got = env_of(container)
        assert got["HTTPS_PROXY"] == got["https_proxy"] == "http://proxy.corp:3128"
        assert got["HTTP_PROXY"] == got["http_proxy"] == "http://proxy.corp:3128"
        assert got["NO_PROXY"] == got["no_proxy"] == ".svc,.cluster.local,10.0.0.0/8"


def test_a_job_proxy_with_a_password_is_refused_by_the_chart(render: Any) -> None:
    message = render.fails({"jobProxy": {"httpsProxy": "http://user:secret@proxy.corp:3128"}})
    assert "jobProxy" in message
    assert "httpsProxy" in message
