"""Self-tests of the test ground: what the end-to-end tests rely on, checked on a real apiserver.

They run on the local test ground (pods through the pod runner) and, unchanged, on any cluster
given by ``$KUBECONFIG`` with Safehold's image loaded (see docs/development.md).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from testground.kube import Cluster, Namespace
from testground.manifests import claim, container, job, pod, python_command, role_binding

pytestmark = pytest.mark.e2e

DATA = {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}


def test_testground_job_writing_into_a_claim_completes(namespace: Namespace) -> None:
    namespace.apply(claim("data"))
    write = "open('/data/hello.txt', 'w').write('written by a job')"
    mount = [{"name": "data", "mountPath": "/data"}]
    namespace.apply(
        job("writer", [container("w", python_command(write), volumeMounts=mount)], volumes=[DATA])
    )
    namespace.wait_condition("job", "writer", "Complete", timeout=120)

    read = textwrap.dedent("""
        content = open('/data/hello.txt').read()
        try:
            open('/data/other.txt', 'w').write('x')
            writable = 'writable'
        except OSError:
            writable = 'read-only'
        open('/dev/termination-log', 'w').write(content + ' / ' + writable)
    """)
    ro_mount = [{"name": "data", "mountPath": "/data", "readOnly": True}]
    namespace.apply(
        pod("reader", [container("r", python_command(read), volumeMounts=ro_mount)], volumes=[DATA])
    )
    term = namespace.terminated("reader")
    assert (term["exitCode"], term.get("message")) == (0, "written by a job / read-only")


def test_testground_job_exiting_3_is_retried_then_fails(namespace: Namespace) -> None:
    namespace.apply(job("fails", [container("f", ["sh", "-c", "exit 3"])], backoff_limit=2))
    done = namespace.wait_condition("job", "fails", "Failed", timeout=180)
    failed = next(c for c in done["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    pods = json.loads(namespace.kubectl("get", "pods", "-l", "job-name=fails", "-o", "json").stdout)
    codes = sorted(
        (
            p["status"]["phase"],
            p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        )
        for p in pods["items"]
    )
    assert codes == [("Failed", 3)] * 3  # the first run and backoffLimit=2 retries


def test_testground_pod_reads_a_secret_through_env_and_volume(namespace: Namespace) -> None:
    namespace.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "stringData": {"password": "correct horse battery staple"},
        }
    )
    script = textwrap.dedent("""
        import json, os
        doc = {'env': os.environ['PASSWORD'], 'file': open('/etc/creds/password').read()}
        open('/dev/termination-log', 'w').write(json.dumps(doc))
    """)
    env = [
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}
    ]
    mounts = [{"name": "creds", "mountPath": "/etc/creds", "readOnly": True}]
    volumes = [{"name": "creds", "secret": {"secretName": "creds"}}]
    namespace.apply(
        pod(
            "secret-reader",
            [container("c", python_command(script), env=env, volumeMounts=mounts)],
            volumes=volumes,
        )
    )
    term = namespace.terminated("secret-reader")
    assert term["exitCode"] == 0
    expected = "correct horse battery staple"
    assert json.loads(term["message"]) == {"env": expected, "file": expected}


IN_CLUSTER_READ = textwrap.dedent("""
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException
    config.load_incluster_config()
    ns = open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read()
    try:
        cm = client.CoreV1Api().read_namespaced_config_map('target', ns)
        result = 'allowed: ' + cm.data['key']
    except ApiException as exc:
        result = f'denied: {exc.status}'
    open('/dev/termination-log', 'w').write(result)
""")


def test_testground_service_account_permissions_apply_to_pods(namespace: Namespace) -> None:
    namespace.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "target"},
                "data": {"key": "value"},
            },
            *role_binding("reader", ["get"], ["configmaps"]),
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "nobody"}},
        ]
    )
    namespace.cluster.wait_for(
        lambda: all(
            (namespace.get("serviceaccount", sa) or {}).get("secrets")
            or namespace.cluster.server_minor >= 24
            for sa in ("reader", "nobody")
        ),
        what="the service accounts' tokens",
    )
    for sa in ("reader", "nobody"):
        namespace.apply(
            pod(sa, [container("c", python_command(IN_CLUSTER_READ))], serviceAccountName=sa)
        )
    assert namespace.terminated("reader")["message"] == "allowed: value"
    assert namespace.terminated("nobody")["message"] == "denied: 403"


def test_testground_termination_message_reaches_pod_status(namespace: Namespace) -> None:
    script = "open('/tmp/safehold-result', 'w').write('42 files'); raise SystemExit(5)"
    namespace.apply(
        pod(
            "reporter",
            [container("c", python_command(script), terminationMessagePath="/tmp/safehold-result")],
        )
    )
    term = namespace.terminated("reporter")
    assert (term["exitCode"], term["reason"], term["message"]) == (5, "Error", "42 files")
    assert namespace.get("pod", "reporter")["status"]["phase"] == "Failed"  # type: ignore[index]


WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.testground.safehold.io"},
    "spec": {
        "group": "testground.safehold.io",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def widget_crd(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A custom resource type installed mid-session, as tests of later CRDs will do."""
    directory = tmp_path_factory.mktemp("crds")
    (directory / "widget.yaml").write_text(json.dumps(WIDGET_CRD))
    (directory / "unrelated.txt").write_text("not a manifest")
    assert cluster.install_crds(directory / "widget.yaml") == ["widgets.testground.safehold.io"]
    yield "widgets.testground.safehold.io"
    cluster.kubectl("delete", "-f", str(directory / "widget.yaml"), "--wait=false", check=False)


def test_testground_deleting_the_owner_garbage_collects_the_job(
    namespace: Namespace, widget_crd: str
) -> None:
    namespace.apply(
        {
            "apiVersion": "testground.safehold.io/v1",
            "kind": "Widget",
            "metadata": {"name": "owner"},
            "spec": {},
        }
    )
    # The full name: other tests install Widget kinds of their own in other groups.
    owner: dict[str, Any] = namespace.get(widget_crd, "owner")  # type: ignore[assignment]
    ref = {
        "apiVersion": "testground.safehold.io/v1",
        "kind": "Widget",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
    }
    namespace.apply(job("owned", [container("c", ["sleep", "300"])], owner=ref))

    def running_pod() -> str | None:
        out = namespace.kubectl("get", "pods", "-l", "job-name=owned", "-o", "json").stdout
        items = json.loads(out)["items"]
        phases = [p["status"].get("phase") for p in items]
        return items[0]["metadata"]["name"] if phases == ["Running"] else None

    pod_name = namespace.cluster.wait_for(running_pod, timeout=60, what="the Job's pod to run")
    namespace.kubectl("delete", widget_crd, "owner")
    namespace.cluster.wait_for(
        lambda: namespace.get("job", "owned") is None and namespace.get("pod", pod_name) is None,
        timeout=60,
        what="the garbage collector to delete the Job and its pod",
    )


def test_testground_deployment_becomes_available(namespace: Namespace) -> None:
    labels = {"app": "sleeper"}
    namespace.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "sleeper"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [container("c", ["sleep", "300"])]},
                },
            },
        }
    )
    namespace.wait_condition("deployment", "sleeper", "Available", timeout=60)


def test_testground_object_stores_accept_a_write_and_a_read(
    s3_store: Any, gcs_store: Any, azure_store: Any
) -> None:
    import boto3
    from azure.storage.blob import BlobServiceClient
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    payload = b"\x00safehold test ground\xff" * 1000
    s3_store.make_bucket("tg-s3")
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_store.endpoint,
        region_name=s3_store.options["region"],
        aws_access_key_id=s3_store.options["access_key_id"],
        aws_secret_access_key=s3_store.options["secret_access_key"],
    )
    s3.put_object(Bucket="tg-s3", Key="a/b.bin", Body=payload)
    assert s3.get_object(Bucket="tg-s3", Key="a/b.bin")["Body"].read() == payload

    gcs_store.make_bucket("tg-gcs")
    gcs = storage.Client(
        project="test",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": gcs_store.endpoint},
    )
    gcs.bucket("tg-gcs").blob("a/b.bin").upload_from_string(payload)
    assert gcs.bucket("tg-gcs").blob("a/b.bin").download_as_bytes() == payload

    azure_store.make_bucket("tg-azure")
    blobs = BlobServiceClient(
        azure_store.options["endpoint"],
        credential={
            "account_name": azure_store.options["account_name"],
            "account_key": azure_store.options["account_key"],
        },
    )
    blob = blobs.get_blob_client("tg-azure", "a/b.bin")
    blob.upload_blob(payload, overwrite=True)
    assert blob.download_blob().readall() == payload


def test_testground_pod_logs_are_readable(namespace: Namespace) -> None:
    script = "echo line one; sleep 2; echo line two; echo line three"
    namespace.apply(pod("talker", [container("c", ["sh", "-c", script])]))
    namespace.cluster.wait_for(
        lambda: (namespace.get("pod", "talker") or {}).get("status", {}).get("phase") != "Pending",
        what="the pod to start",
    )
    followed = namespace.kubectl("logs", "--follow", "talker", "--pod-running-timeout=60s").stdout
    assert followed == "line one\nline two\nline three\n"
    assert namespace.kubectl("logs", "talker", "--tail=1").stdout == "line three\n"
    report = namespace.logs("talker")  # what a failing test's report shows
    assert "line one" in report
    assert "line three" in report


KOPF_OPERATOR = textwrap.dedent("""
    import kopf

    @kopf.on.create("configmaps", labels={"testground": "watched"})
    def seen(patch, **_):
        patch.metadata.annotations["testground/seen-by"] = "kopf"
""")


def test_testground_kopf_operator_runs_in_a_pod(
    namespace: Namespace, request: pytest.FixtureRequest
) -> None:
    """An operator pod logs in with its service account, watches, and patches under RBAC."""
    events = {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]}
    namespace.apply(
        role_binding(
            "operator", ["get", "list", "watch", "patch"], ["configmaps"], more_rules=[events]
        )
    )
    # kopf scans namespaces and CRDs at start: cluster-wide read access, like the chart's role
    scan = f"{namespace}-kopf-scan"
    namespace.cluster.kubectl(
        "create", "clusterrole", scan, "--verb=get,list,watch",
        "--resource=namespaces,customresourcedefinitions.apiextensions.k8s.io",
    )  # fmt: skip
    namespace.cluster.kubectl(
        "create", "clusterrolebinding", scan, f"--clusterrole={scan}",
        f"--serviceaccount={namespace}:operator",
    )  # fmt: skip
    request.addfinalizer(
        lambda: namespace.cluster.kubectl(
            "delete", f"clusterrole/{scan}", f"clusterrolebinding/{scan}", check=False
        )
    )
    namespace.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "operator-code"},
         "data": {"operator.py": KOPF_OPERATOR}}
    )  # fmt: skip
    command = ["kopf", "run", "--standalone", "--namespace", str(namespace), "/code/operator.py"]
    namespace.apply(
        pod(
            "operator",
            [container("kopf", command, volumeMounts=[{"name": "code", "mountPath": "/code"}])],
            serviceAccountName="operator",
            restartPolicy="Always",
            volumes=[{"name": "code", "configMap": {"name": "operator-code"}}],
        )
    )
    namespace.apply(
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "watched", "labels": {"testground": "watched"}}}
    )  # fmt: skip

    def annotated() -> str | None:
        cm = namespace.get("configmap", "watched") or {}
        return (cm["metadata"].get("annotations") or {}).get("testground/seen-by")

    assert namespace.cluster.wait_for(annotated, timeout=90, what="kopf to annotate") == "kopf"
