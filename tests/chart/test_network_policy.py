"""networkPolicy: the operator's pod and its Jobs' pods reach only what they need.

The rendering tests check the rules in both watch modes (ports, peers, DNS, the API server);
the ``e2e`` ones install the chart with helm on the test ground, so the apiserver validates
the NetworkPolicies as it would in a user's cluster (the test ground's network plugin does not
enforce them, so what they block is checked here as YAML, not as traffic).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from testground.kube import Cluster, Namespace
from testground.manifests import IMAGE

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "safehold"

API = {"cidrs": ["10.96.0.1/32", "192.168.10.5/32"], "ports": [443, 6443]}
PROMETHEUS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}
KUBE_DNS = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}
S3 = {"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"protocol": "TCP", "port": 443}]}
POSTGRES = {
    "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "db"}}}],
    "ports": [{"protocol": "TCP", "port": 5432}],
}
DNS_PORTS = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
JOB_PODS = {"app.kubernetes.io/managed-by": "safehold-operator"}


def values(**extra: Any) -> dict[str, Any]:
    return {"networkPolicy": {"enabled": True, "apiServer": API, **extra}}


def policies(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The rendered NetworkPolicies by (namespace, name)."""
    return {
        (o["metadata"]["namespace"], o["metadata"]["name"]): o["spec"]
        for o in objects
        if o["kind"] == "NetworkPolicy"
    }


def api_server_rule() -> dict[str, Any]:
    return {
        "to": [{"ipBlock": {"cidr": cidr}} for cidr in API["cidrs"]],
        "ports": [{"protocol": "TCP", "port": port} for port in API["ports"]],
    }


def test_off_by_default(render: Any) -> None:
    assert policies(render()) == {}
    assert policies(render({"watchNamespaces": ["team-a"]})) == {}


def test_operator_pod_is_scraped_only_from_metrics_from_and_talks_to_api_and_dns(
    render: Any,
) -> None:
    objects = render(values(metricsFrom=[PROMETHEUS]), release="safehold")
    found = policies(objects)
    # all namespaces watched: the chart cannot place the Jobs' policies, only the operator's
    assert set(found) == {("safehold-system", "safehold")}
    spec = found["safehold-system", "safehold"]
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert spec["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    # in: the metrics port, from Prometheus only; nothing reaches the health port (kubelet
    # probes are not subject to NetworkPolicies on common network plugins)
    assert spec["ingress"] == [{"from": [PROMETHEUS], "ports": [{"protocol": "TCP", "port": 8080}]}]
    # out: the API server by address and DNS, nothing else
    assert spec["egress"] == [api_server_rule(), {"ports": DNS_PORTS, "to": [KUBE_DNS]}]


def test_no_metrics_peers_means_no_ingress_at_all(render: Any) -> None:
    spec = policies(render(values()))["safehold-system", "safehold"]
    assert spec["ingress"] == []
    assert "Ingress" in spec["policyTypes"]


def test_health_from_and_custom_ports(render: Any) -> None:
    nodes = {"ipBlock": {"cidr": "10.0.0.0/16"}}
    spec = policies(
        render(
            {
                **values(metricsFrom=[PROMETHEUS], healthFrom=[nodes]),
                "metrics": {"port": 9090},
                "health": {"port": 9091},
            }
        )
    )["safehold-system", "safehold"]
    assert spec["ingress"] == [
        {"from": [PROMETHEUS], "ports": [{"protocol": "TCP", "port": 9090}]},
        {"from": [nodes], "ports": [{"protocol": "TCP", "port": 9091}]},
    ]


def test_jobs_in_every_watched_namespace_get_dns_and_job_egress_only(render: Any) -> None:
    found = policies(
        render({**values(jobEgress=[S3, POSTGRES]), "watchNamespaces": ["team-a", "team-b"]})
    )
    assert set(found) == {
        ("safehold-system", "safehold"),
        ("team-a", "safehold-jobs"),
        ("team-a", "safehold-jobs-apiserver"),
        ("team-b", "safehold-jobs"),
        ("team-b", "safehold-jobs-apiserver"),
    }
    for namespace in ("team-a", "team-b"):
        jobs = found[namespace, "safehold-jobs"]
        assert jobs["podSelector"] == {"matchLabels": JOB_PODS}
        assert sorted(jobs["policyTypes"]) == ["Egress", "Ingress"]
        assert jobs["ingress"] == []
        assert jobs["egress"] == [{"ports": DNS_PORTS, "to": [KUBE_DNS]}, S3, POSTGRES]
        # only the cluster-resource Jobs (export, apply) reach the API server
        api = found[namespace, "safehold-jobs-apiserver"]
        assert api["podSelector"] == {
            "matchLabels": {**JOB_PODS, "safehold.io/source": "resources"}
        }
        assert api["policyTypes"] == ["Egress"]
        assert api["egress"] == [api_server_rule()]


def test_the_job_label_is_the_one_the_controller_sets() -> None:
    from safehold.controller import jobs
    from safehold.controller.sources import resources

    assert {jobs.LABEL_MANAGED_BY: jobs.MANAGED_BY} == JOB_PODS
    assert (jobs.LABEL_SOURCE, resources.SOURCE) == ("safehold.io/source", "resources")


def test_dns_peers_are_configurable(render: Any) -> None:
    node_local = {"ipBlock": {"cidr": "169.254.20.10/32"}}
    found = policies(render({**values(dns=[node_local]), "watchNamespaces": ["team-a"]}))
    for key in (("safehold-system", "safehold"), ("team-a", "safehold-jobs")):
        assert {"ports": DNS_PORTS, "to": [node_local]} in found[key]["egress"]


def test_enabled_without_the_api_servers_address_fails_saying_how_to_find_it(
    render: Any,
) -> None:
    message = render.fails({"networkPolicy": {"enabled": True}})
    assert "networkPolicy.apiServer.cidrs" in message
    assert "kubectl get endpoints kubernetes" in message


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"jobEgress": S3}, "networkPolicy.jobEgress", "array"),
    ({"jobEgress": [{"to": [{"ipBlock": {"cidr": "anywhere"}}]}]}, "cidr", "pattern"),
    ({"jobEgress": [{"towards": []}]}, "towards", "not allowed"),
    ({"jobEgress": [{"ports": [{"protocol": "ICMP"}]}]}, "protocol", "TCP"),
    ({"metricsFrom": PROMETHEUS}, "networkPolicy.metricsFrom", "array"),
    ({"metricsFrom": [{"podselector": {}}]}, "podselector", "not allowed"),
    ({"apiServer": {"cidrs": "10.0.0.1/32"}}, "networkPolicy.apiServer.cidrs", "array"),
    ({"apiServer": {"ports": [0]}}, "networkPolicy.apiServer.ports.0", "1"),
    ({"enabled": "yes"}, "networkPolicy.enabled", "boolean"),
]


@pytest.mark.parametrize(("bad", "key", "says"), BAD, ids=[f"{key}:{says}" for _, key, says in BAD])
def test_schema_rejects_bad_values(render: Any, bad: dict[str, Any], key: str, says: str) -> None:
    message = render.fails({"networkPolicy": bad})
    lines = [line for line in message.splitlines() if line.startswith("- ")]
    assert any(key in line and says.lower() in line.lower() for line in lines), message


# ------------------------------------------------------------- on the test ground's apiserver


def _helm(helm: str, cluster: Cluster, *args: str, values: dict[str, Any] | None = None) -> str:
    argv = [helm, f"--kubeconfig={cluster.kubeconfig}", *args]
    result = subprocess.run(
        [*argv, "-f", "-"] if values is not None else argv,
        input=yaml.safe_dump(values) if values is not None else None,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, f"helm {' '.join(args)}: {result.stderr}"
    return result.stdout


@pytest.fixture
def helm_install(helm: str, cluster: Cluster) -> Iterator[Any]:
    """``helm_install(release, namespace, values)`` -> helm's output (with the NOTES)."""
    releases: list[tuple[str, str]] = []
    repository, _, tag = IMAGE.rpartition(":")
    image = {"repository": repository, "tag": tag} if repository and "/" not in tag else {}

    def _install(release: str, namespace: str, values: dict[str, Any]) -> str:
        out = _helm(
            helm, cluster, "install", release, str(CHART), "--namespace", namespace,
            # one replica: the test ground's pods share the host's network and ports
            values={"replicaCount": 1, **({"image": image} if image else {}), **values},
        )  # fmt: skip
        releases.append((release, namespace))
        return out

    yield _install
    for release, namespace in releases:
        _helm(helm, cluster, "uninstall", release, "--namespace", namespace, "--wait")


def api_server_addresses(cluster: Cluster) -> dict[str, Any]:
    """The ``apiServer`` value of this cluster, as docs/security.md says to find it (the
    test ground runs no service controller, so there it falls back to an address of its own)."""
    endpoints = cluster.get("endpoints", "kubernetes", "default")
    if not endpoints or not endpoints.get("subsets"):
        return {"cidrs": ["127.0.0.1/32"], "ports": [443, 6443]}
    [subset] = endpoints["subsets"]
    return {
        "cidrs": [f"{a['ip']}/32" for a in subset["addresses"]],
        "ports": sorted({443, *(p["port"] for p in subset["ports"])}),
    }


def _without_empty(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` as the apiserver returns it: an empty ``ingress`` list is left out."""
    return {k: v for k, v in spec.items() if v != []}


def _stored(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    items = json.loads(
        cluster.kubectl("get", "networkpolicies", f"--namespace={namespace}", "-o", "json").stdout
    )["items"]
    return {i["metadata"]["name"]: i["spec"] for i in items}


@pytest.mark.e2e
def test_apiserver_accepts_the_policies_watching_listed_namespaces(
    cluster: Cluster,
    namespace: Namespace,
    helm_install: Any,
    render: Any,
    request: pytest.FixtureRequest,
) -> None:
    watched = cluster.create_namespace("netpol")
    request.addfinalizer(lambda: cluster.delete_namespace(watched))
    given = {
        "watchNamespaces": [str(watched)],
        "networkPolicy": {
            "enabled": True,
            "apiServer": api_server_addresses(cluster),
            "metricsFrom": [PROMETHEUS],
            "healthFrom": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
            "jobEgress": [S3, POSTGRES, {"to": [{"podSelector": {}}]}],
        },
    }
    out = helm_install("np", str(namespace), given)
    assert f"The Jobs' pods in {watched} accept no connections" in out, out
    rendered = policies(render(given, release="np"))
    own, theirs = _stored(cluster, str(namespace)), _stored(cluster, str(watched))
    assert set(own) == {"np-safehold"}
    assert set(theirs) == {"np-safehold-jobs", "np-safehold-jobs-apiserver"}
    # what the apiserver stored is what the chart rendered (defaults such as the ports'
    # protocol were given explicitly, so nothing was added)
    assert own["np-safehold"] == rendered["safehold-system", "np-safehold"]
    for name, spec in theirs.items():
        assert spec == _without_empty(rendered[str(watched), name]), name
    # and the apiserver does check them: a CIDR the schema lets through (/33) is refused
    bad = {**given, "networkPolicy": {**given["networkPolicy"], "jobEgress": [
        {"to": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}
    ]}}  # fmt: skip
    text = "\n---\n".join(
        yaml.safe_dump(o) for o in render(bad, release="np") if o["kind"] == "NetworkPolicy"
    )
    refused = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=text, check=False)
    assert refused.returncode != 0
    assert "cidr" in refused.stderr.lower(), refused.stderr


@pytest.mark.e2e
def test_apiserver_accepts_the_operators_policy_watching_all_namespaces(
    cluster: Cluster, namespace: Namespace, helm_install: Any
) -> None:
    out = helm_install(
        "npall",
        str(namespace),
        {"networkPolicy": {"enabled": True, "apiServer": api_server_addresses(cluster)}},
    )
    assert "created NO NetworkPolicy for the Jobs' pods" in out, out
    assert set(_stored(cluster, str(namespace))) == {"npall-safehold"}
    assert _stored(cluster, str(namespace))["npall-safehold"].get("ingress", []) == []


def test_security_docs_jobs_policy_is_what_the_chart_renders(render: Any) -> None:
    """docs/security.md shows the Jobs' policies to apply by hand when every namespace is
    watched: they must be the chart's own, for the values the page names."""
    text = (REPO / "docs" / "security.md").read_text()
    start = text.index("## Hardening the installation")
    end = text.find("\n## ", start + 1)
    blocks = re.findall(
        r"^```yaml\n(.*?)^```$", text[start : end if end > 0 else None], re.M | re.S
    )
    shown = [d for body in blocks for d in yaml.safe_load_all(body) if d]
    assert {d["metadata"]["name"] for d in shown} == {"safehold-jobs", "safehold-jobs-apiserver"}
    [jobs] = [d for d in shown if d["metadata"]["name"] == "safehold-jobs"]
    [api] = [d for d in shown if d["metadata"]["name"] == "safehold-jobs-apiserver"]
    [namespace] = {d["metadata"]["namespace"] for d in shown}
    given = {
        "watchNamespaces": [namespace],
        "networkPolicy": {
            "enabled": True,
            "apiServer": {
                "cidrs": [t["ipBlock"]["cidr"] for t in api["spec"]["egress"][0]["to"]],
                "ports": [p["port"] for p in api["spec"]["egress"][0]["ports"]],
            },
            "jobEgress": jobs["spec"]["egress"][1:],
        },
    }
    found = policies(render(given))
    for doc in shown:
        assert doc["spec"] == found[namespace, doc["metadata"]["name"]], doc["metadata"]["name"]
