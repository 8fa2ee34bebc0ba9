"""The chart on a real apiserver: ``helm install`` creates the objects, and RBAC is real.

Runs on the test ground (``cluster`` fixture) or any cluster named by ``$KUBECONFIG``. The
permission checks ask the apiserver itself (``kubectl auth can-i --as`` the chart's
ServiceAccount), so they test the rules as Kubernetes evaluates them, not as YAML.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from testground.kube import Cluster, Namespace
from testground.manifests import IMAGE

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "safehold"
DEPLOY = REPO / "deploy" / "safehold.yaml"

Install = Callable[[str, str, dict[str, Any]], str]


def image_values() -> dict[str, Any]:
    """The test image ($SAFEHOLD_TEST_IMAGE) as chart values; never pulled on the test ground.
    One replica: the test ground's pods share the host's network, so two would bind the
    same ports (the election is tested with two processes, test_operator_failover.py)."""
    repository, _, tag = IMAGE.rpartition(":")
    if not repository or "/" in tag:
        repository, tag = IMAGE, "latest"
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        "replicaCount": 1,
    }


def helm_run(helm: str, cluster: Cluster, *args: str, values: dict[str, Any] | None = None) -> str:
    argv = [helm, f"--kubeconfig={cluster.kubeconfig}", *args]
    if values is not None:
        argv += ["-f", "-"]
    result = subprocess.run(
        argv,
        input=yaml.safe_dump(values) if values is not None else None,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, f"helm {' '.join(args)}: {result.stderr}"
    return result.stdout


@pytest.fixture
def install(helm: str, cluster: Cluster) -> Iterator[Install]:
    """``install(release, namespace, values)``; every release is uninstalled afterwards."""
    releases: list[tuple[str, str]] = []

    def _install(release: str, namespace: str, values: dict[str, Any]) -> str:
        out = helm_run(
            helm, cluster, "install", release, str(CHART), "--namespace", namespace,
            values={**image_values(), **values},
        )  # fmt: skip
        releases.append((release, namespace))
        return out

    yield _install
    for release, namespace in releases:
        helm_run(
            helm, cluster, "uninstall", release, "--namespace", namespace, "--wait",
            "--ignore-not-found",
        )  # fmt: skip


def can_i(cluster: Cluster, account: str, verb: str, resource: str, namespace: str | None) -> bool:
    """Whether the apiserver lets ``account`` (namespace:name) do ``verb`` on ``resource``."""
    resource, _, subresource = resource.partition("/")
    if resource == "configmaps" and subresource:  # a ConfigMap by name, not a subresource
        resource, subresource = f"{resource}/{subresource}", ""
    args = ["auth", "can-i", verb, resource, f"--as=system:serviceaccount:{account}"]
    args += [f"--subresource={subresource}"] if subresource else []
    args += [f"--namespace={namespace}"] if namespace else ["--all-namespaces"]
    answer = cluster.kubectl(*args, check=False).stdout.strip()
    assert answer in ("yes", "no"), answer
    return answer == "yes"


#: (verb, resource): what the operator must be able to do wherever it watches.
ALLOWED = [
    ("watch", "backuplocations.safehold.io"),
    ("create", "backupruns.safehold.io"),
    ("delete", "backupruns.safehold.io"),
    ("patch", "restorerequests.safehold.io/status"),
    ("update", "backupruns.safehold.io/status"),
    ("create", "jobs.batch"),
    ("delete", "jobs.batch"),
    ("list", "pods"),
    ("get", "pods/log"),
    ("create", "persistentvolumeclaims"),
    ("create", "events"),
    ("list", "events"),
    ("patch", "events.events.k8s.io"),
]
#: What it must never be able to do, anywhere.
DENIED = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("watch", "secrets"),
    ("patch", "backuppolicies.safehold.io"),  # the operator writes only status
    ("create", "pods/exec"),  # only with execHooks.enabled (docs/hooks.md)
    ("get", "pods/exec"),
    ("create", "backuplocations.safehold.io"),
    ("delete", "backuppolicies.safehold.io"),
    ("update", "backuplocations.safehold.io"),
    ("delete", "pods"),
    ("create", "pods"),
    ("delete", "persistentvolumeclaims"),
    ("update", "jobs.batch"),
    ("create", "deployments.apps"),
    ("get", "configmaps"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
]


def account_of(release: str, namespace: str) -> str:
    return f"{namespace}:{release}-safehold"


def test_helm_install_watching_all_namespaces(
    cluster: Cluster, namespace: Namespace, install: Install, helm: str
) -> None:
    release = "all"
    install(release, namespace, {})
    name = f"{release}-safehold"
    for kind in ("deployment", "serviceaccount", "service"):
        suffix = "-metrics" if kind == "service" else ""
        assert namespace.get(kind, name + suffix), f"{kind} {name}{suffix}"
    for kind in ("clusterrole", "clusterrolebinding"):
        assert cluster.get(kind, name), f"{kind} {name}"
    account = account_of(release, namespace)
    for verb, resource in ALLOWED:
        assert can_i(cluster, account, verb, resource, None), f"cannot {verb} {resource}"
    for verb, resource in DENIED:
        assert not can_i(cluster, account, verb, resource, None), f"can {verb} {resource}"
        assert not can_i(cluster, account, verb, resource, namespace), f"can {verb} {resource}"
    assert can_i(cluster, account, "list", "customresourcedefinitions.apiextensions.k8s.io", None)
    assert not can_i(
        cluster, account, "delete", "customresourcedefinitions.apiextensions.k8s.io", None
    )
    # restores into another namespace: its owners' grant, by name only (docs/security.md)
    assert can_i(cluster, account, "get", "configmaps/safehold-restore-grant", namespace)
    assert not can_i(cluster, account, "get", "configmaps/kube-root-ca.crt", namespace)
    assert can_i(cluster, account, "get", "namespaces", None)
    assert not can_i(cluster, account, "list", "namespaces", None)

    helm_run(helm, cluster, "uninstall", release, "--namespace", namespace, "--wait")
    assert cluster.get("clusterrole", name) is None
    # uninstalling keeps the CRDs (and so every backup resource)
    assert cluster.get("crd", "backuplocations.safehold.io") is not None


def test_helm_install_watching_listed_namespaces(
    cluster: Cluster,
    namespace: Namespace,
    install: Install,
    helm: str,
    request: pytest.FixtureRequest,
) -> None:
    watched = cluster.create_namespace("watched")
    request.addfinalizer(lambda: cluster.delete_namespace(watched))
    release = "listed"
    install(release, namespace, {"watchNamespaces": [str(watched)]})
    name = f"{release}-safehold"
    assert cluster.get("role", name, watched)
    assert cluster.get("rolebinding", name, watched)
    account = account_of(release, namespace)
    for verb, resource in ALLOWED:
        assert can_i(cluster, account, verb, resource, watched), f"cannot {verb} {resource}"
        assert not can_i(cluster, account, verb, resource, namespace), f"{verb} {resource} in own"
        assert not can_i(cluster, account, verb, resource, "default"), (
            f"{verb} {resource} in default"
        )
    for verb, resource in DENIED:
        assert not can_i(cluster, account, verb, resource, watched), f"can {verb} {resource}"
    # reading CRDs is the one cluster-wide right of a namespaced install
    assert can_i(cluster, account, "watch", "customresourcedefinitions.apiextensions.k8s.io", None)
    assert not can_i(cluster, account, "list", "backuplocations.safehold.io", None)

    # adding a namespace later: add it to the list and upgrade (docs/install.md); the
    # operator's pod is replaced (Recreate) with the new --namespace arguments
    later = cluster.create_namespace("later")
    request.addfinalizer(lambda: cluster.delete_namespace(later))
    helm_run(
        helm, cluster, "upgrade", release, str(CHART), "--namespace", namespace,
        values={**image_values(), "watchNamespaces": [str(watched), str(later)]},
    )  # fmt: skip
    assert cluster.get("role", name, later)
    assert can_i(cluster, account, "create", "jobs.batch", later)
    deployment = namespace.get("deployment", name)
    assert deployment is not None
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--namespace={later}" in args


def test_kubectl_manifest_installs_and_uninstalls_keeping_the_crds(
    cluster: Cluster, namespace: Namespace
) -> None:
    """deploy/safehold.yaml applies, its operator becomes available, and the documented
    uninstall (``kubectl delete -f ... -l app.kubernetes.io/component=operator``) removes the
    operator but keeps the CRDs. The manifest's namespace is swapped for the test's.
    """
    text = DEPLOY.read_text().replace("safehold-system", str(namespace))
    if IMAGE != "ghcr.io/safehold/safehold:0.1.0":
        text = text.replace("ghcr.io/safehold/safehold:0.1.0", IMAGE)
    docs = [d for d in yaml.safe_load_all(text) if d]
    out = cluster.kubectl("apply", "--server-side", "-f", "-", input=text).stdout
    assert len(out.strip().splitlines()) == len(docs), out
    namespace.wait_condition("deployment", "safehold", "Available", timeout=120)
    assert cluster.get("clusterrolebinding", "safehold") is not None

    cluster.kubectl(
        "delete", "-f", "-", "-l", "app.kubernetes.io/component=operator", "--wait=true",
        input=text,
    )  # fmt: skip
    assert namespace.get("deployment", "safehold") is None
    assert cluster.get("clusterrole", "safehold") is None
    assert cluster.get("clusterrolebinding", "safehold") is None
    for doc in docs:
        if doc["kind"] == "CustomResourceDefinition":
            assert cluster.get("crd", doc["metadata"]["name"]) is not None


def test_operator_installed_by_the_chart_validates_a_location_and_backs_up(
    cluster: Cluster, namespace: Namespace, install: Install, request: pytest.FixtureRequest
) -> None:
    """The chart's pod, under the chart's ServiceAccount and RBAC only, does the main job.

    The location is a filesystem repository on a claim: the operator runs its validation Job
    (``safehold repo init --if-absent``) and reports Available with the repository's id; then
    a BackupRun of a policy backs up a claim and completes.
    """
    watched = cluster.create_namespace("reconciled")
    request.addfinalizer(lambda: cluster.delete_namespace(watched))
    release = "op"
    job_defaults = {
        "activeDeadlineSeconds": 5400,
        "resources": {"requests": {"cpu": "50m", "memory": "200Mi"}, "limits": {"memory": "700Mi"}},
    }
    install(
        release,
        namespace,
        {"watchNamespaces": [str(watched)], "jobDefaults": job_defaults, "logLevel": "debug"},
    )
    namespace.wait_condition("deployment", f"{release}-safehold", "Available", timeout=120)
    cluster.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "repo"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "64Mi"}},
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "repo-password"},
                "stringData": {"password": "correct horse battery staple"},
            },
            {
                "apiVersion": "safehold.io/v1alpha1",
                "kind": "BackupLocation",
                "metadata": {"name": "local"},
                "spec": {
                    "provider": "filesystem",
                    "claimName": "repo",
                    "prefix": "safehold",
                    "repositoryPasswordSecretRef": {"name": "repo-password", "key": "password"},
                },
            },
        ],
        namespace=watched,
    )
    location = cluster.wait_condition("backuplocation", "local", "Available", watched, timeout=180)
    assert len(location["status"]["repositoryId"]) >= 16

    # a backup: the operator reads the claim and the policy, starts a Job, follows its pod,
    # writes the run's status and events, all under the same namespaced Role
    cluster.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "64Mi"}},
                },
            },
            {
                "apiVersion": "safehold.io/v1alpha1",
                "kind": "BackupPolicy",
                "metadata": {"name": "data"},
                "spec": {
                    "location": {"name": "local"},
                    "sources": {"volumes": [{"claimName": "data"}]},
                },
            },
            {
                "apiVersion": "safehold.io/v1alpha1",
                "kind": "BackupRun",
                "metadata": {"name": "first"},
                "spec": {"policyRef": {"name": "data"}, "type": "full"},
            },
        ],
        namespace=watched,
    )
    cluster.kubectl(
        "wait", "--for=condition=Complete", "backuprun/first", f"--namespace={watched}",
        "--timeout=180s", timeout=200,
    )  # fmt: skip
    run = cluster.get("backuprun", "first", watched)
    assert run is not None
    assert run["status"]["phase"] == "Succeeded", run["status"]
    events = json.loads(
        cluster.kubectl("get", "events", f"--namespace={watched}", "-o", "json").stdout
    )["items"]
    about = {(e["involvedObject"]["kind"], e["involvedObject"]["name"]) for e in events}
    assert ("BackupRun", "first") in about, about
    # the chart's jobDefaults reached the backup Job
    jobs = json.loads(
        cluster.kubectl(
            "get", "jobs", f"--namespace={watched}", "-l", "safehold.io/run=first", "-o", "json"
        ).stdout
    )["items"]
    assert jobs
    for job in jobs:
        assert job["spec"]["activeDeadlineSeconds"] == 5400
        [container] = job["spec"]["template"]["spec"]["containers"]
        assert container["resources"] == job_defaults["resources"]
