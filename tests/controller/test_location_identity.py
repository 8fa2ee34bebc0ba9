"""A BackupLocation's ``serviceAccountName``: Jobs that reach the bucket through the cloud's
workload identity instead of keys in a Secret.

Pure logic first (which ServiceAccount a Job runs as, what is refused and why), then the
whole path on the test ground: Azure Workload Identity's webhook (testground/
workload_identity.py) gives the operator's Job pods a projected ServiceAccount token, the
engine trades it at a stand-in for Microsoft Entra ID (testground/entra.py) for a token
that Azurite, in OAuth mode, checks on every request.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from safehold.api import BackupLocation, validate_object
from safehold.controller.identity import CONFLICT, NOT_ALLOWED, account_problem
from safehold.controller.jobs import JobRequest, build_job
from safehold.controller.limits import Limits
from safehold.controller.repository import AZURE_IDENTITY_LABEL, with_repository, with_site
from testground.entra import RunningEntra, start_azurite_oauth, start_entra
from testground.kube import Cluster, Namespace
from testground.objectstores import AZURITE_ACCOUNT, AZURITE_KEY, RunningStore
from testground.workload_identity import CLIENT_ID_ANNOTATION, Webhook, install


def _location(
    name: str, provider: str = "s3", account: str | None = None, **spec: Any
) -> BackupLocation:
    return BackupLocation.model_validate(
        {
            "metadata": {"name": name, "namespace": "team-a"},
            "spec": {
                "provider": provider,
                "bucket": f"{name}-bucket",
                "repositoryPasswordSecretRef": {"name": "pw"},
                **({"serviceAccountName": account} if account else {}),
                **spec,
            },
        }
    )


def _request(**fields: Any) -> JobRequest:
    return JobRequest(
        name="job", namespace="team-a", component="backup", args=["backup"], labels={},
        owner=None, **fields,
    )  # fmt: skip


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = job["spec"]["template"]
    return pod


def test_a_location_s_service_account_runs_its_jobs_without_an_api_token() -> None:
    pod = _pod(build_job(with_repository(_request(), _location("primary", "azure", "wi"))))
    assert pod["spec"]["serviceAccountName"] == "wi"
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["metadata"]["labels"][AZURE_IDENTITY_LABEL] == "true"
    # on other clouds no Azure label; without the field, the namespace's default account
    s3 = _pod(build_job(with_repository(_request(), _location("primary", "s3", "wi"))))
    assert s3["spec"]["serviceAccountName"] == "wi"
    assert AZURE_IDENTITY_LABEL not in s3["metadata"]["labels"]
    plain = _pod(build_job(with_repository(_request(), _location("primary"))))
    assert "serviceAccountName" not in plain["spec"]


def test_a_replication_job_runs_as_the_one_account_its_locations_name() -> None:
    keys = _location("primary", credentialsSecretRef={"name": "keys"})
    site = _location("site", "azure", "wi", role="recovery-site")
    pod = _pod(build_job(with_site(with_repository(_request(), keys), site)))
    assert pod["spec"]["serviceAccountName"] == "wi"
    assert pod["metadata"]["labels"][AZURE_IDENTITY_LABEL] == "true"
    with pytest.raises(ValueError, match="one ServiceAccount"):
        with_site(with_repository(_request(), _location("primary", account="a")), site)


def test_a_resource_job_keeps_its_api_token_under_the_same_account() -> None:
    req = with_repository(_request(service_account_name="wi"), _location("primary", account="wi"))
    pod = _pod(build_job(req))
    assert pod["spec"]["serviceAccountName"] == "wi"
    assert pod["spec"]["automountServiceAccountToken"] is True
    other = with_repository(_request(service_account_name="export"), _location("p", account="wi"))
    with pytest.raises(ValueError, match="one ServiceAccount"):
        build_job(other)


def test_what_is_refused_names_the_fields_to_fix() -> None:
    allowed = Limits(service_accounts=("team-a/backup-*",))
    primary = _location("primary", account="backup-wi")
    assert account_problem(allowed, "team-a", [primary]) is None
    assert account_problem(Limits(), "team-a", [_location("p")]) is None

    reason, message = account_problem(allowed, "team-a", [_location("p", account="admin")]) or (
        "",
        "",
    )
    assert reason == NOT_ALLOWED
    assert message.startswith(
        "BackupLocation p spec.serviceAccountName: ServiceAccount team-a/admin"
    )
    assert "policyLimits.serviceAccounts" in message

    site = _location("site", account="other", role="recovery-site")
    reason, message = account_problem(Limits(), "team-a", [primary, site]) or ("", "")
    assert reason == CONFLICT
    assert "BackupLocation primary spec.serviceAccountName is backup-wi" in message
    assert "BackupLocation site names other" in message
    # a site with keys in a Secret agrees with any account
    assert account_problem(Limits(), "team-a", [primary, _location("keys")]) is None

    own = ("BackupPolicy pol spec.sources.clusterResources.serviceAccountName", "exporter")
    reason, message = account_problem(Limits(), "team-a", [primary], own) or ("", "")
    assert reason == CONFLICT
    assert message.startswith(f"{own[0]} is exporter but BackupLocation primary")
    assert account_problem(Limits(), "team-a", [primary], (own[0], "backup-wi")) is None


# ------------------------------------------------------------- on the test ground


@dataclass
class AzureIdentity:
    """Entra ID's stand-in, Azurite taking its tokens, and the webhook, all trusting the
    test ground's CA and ServiceAccount signing key."""

    entra: RunningEntra
    azurite: RunningStore
    webhook: Webhook

    def container(self) -> str:
        """A new container, made with the development account's key."""
        from azure.storage.blob import BlobServiceClient

        name = f"c-{secrets.token_hex(4)}"
        service = BlobServiceClient(
            self.azurite.options["endpoint"],
            credential={"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY},
            connection_verify=str(self.entra.pki.ca_cert),
        )
        service.create_container(name)
        return name


@pytest.fixture
def azure_identity(cluster: Cluster, tmp_path: Path) -> Iterator[AzureIdentity]:
    assert cluster.local is not None
    pki = cluster.local.pki
    entra = start_entra(tmp_path / "entra", pki)
    azurite = start_azurite_oauth(tmp_path / "azurite", pki)
    webhook = install(cluster, entra)
    try:
        yield AzureIdentity(entra, azurite, webhook)
    finally:
        webhook.remove()
        azurite.stop()
        entra.stop()


DOC = Path(__file__).resolve().parents[2] / "docs" / "storage.md"


def _doc_examples() -> list[list[dict[str, Any]]]:
    """The YAML examples of docs/storage.md's workload identity section."""
    text = DOC.read_text()
    section = text[text.index("### Workload identity") : text.index("### Filesystem")]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)
    return [list(yaml.safe_load_all(block)) for block in blocks]


def test_the_documented_examples_are_valid() -> None:
    examples = _doc_examples()
    assert len(examples) == 2
    for docs in examples:
        account, location = docs
        assert validate_object(location) == []
        assert location["spec"]["serviceAccountName"] == account["metadata"]["name"]
        assert "credentialsSecretRef" not in location["spec"]


def _identity_location(
    namespace: Namespace, azure: AzureIdentity, account: str, client_id: str
) -> None:
    """docs/storage.md's Azure example, on the test ground: its ServiceAccount (named
    ``account``, annotated with ``client_id``) and its BackupLocation ``primary`` on
    Azurite, in the test's namespace."""
    [example] = [d for d in _doc_examples() if d[1]["spec"]["provider"] == "azure"]
    sa, location = example
    for doc in example:
        del doc["metadata"]["namespace"]
    assert sa["metadata"]["annotations"][CLIENT_ID_ANNOTATION] == "<CLIENT_ID>"
    sa["metadata"]["name"] = account
    sa["metadata"]["annotations"][CLIENT_ID_ANNOTATION] = client_id
    spec = location["spec"]
    assert spec["endpoint"] == "https://<ACCOUNT>.blob.core.windows.net"
    spec["endpoint"] = azure.azurite.options["endpoint"]
    spec["bucket"] = azure.container()
    spec["serviceAccountName"] = account
    password = spec["repositoryPasswordSecretRef"]
    namespace.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": password["name"]},
                "stringData": {password["key"]: secrets.token_hex(12)},
            },
            sa,
            location,
        ]
    )


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == kind)


def test_a_location_without_keys_backs_up_and_restores_through_azure_workload_identity(
    namespace: Namespace, operator: Any, kit: Any, azure_identity: AzureIdentity
) -> None:
    entra = azure_identity.entra
    client_id = entra.trust(str(namespace), "backup-identity")
    operator(poll_interval=1.0)
    _identity_location(namespace, azure_identity, "backup-identity", client_id)
    kit.round_trip(namespace, "primary", seed=11)

    # every Job ran as the location's account, without an API token, and got its
    # identity from the webhook: each token it asked Entra ID for was trusted
    jobs = namespace.kubectl("get", "jobs", "-o", "json").stdout
    pods = [j["spec"]["template"] for j in json.loads(jobs)["items"]]
    assert len(pods) >= 3  # the location's check, the backup, the restore
    for pod in pods:
        assert pod["spec"]["serviceAccountName"] == "backup-identity"
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert pod["metadata"]["labels"][AZURE_IDENTITY_LABEL] == "true"
    assert len(azure_identity.webhook.mutated) >= 3
    assert entra.requests
    assert all(trusted for _, trusted in entra.requests)


def test_an_identity_entra_does_not_trust_leaves_the_location_unavailable_with_the_reason(
    namespace: Namespace, operator: Any, kit: Any, azure_identity: AzureIdentity
) -> None:
    # the ServiceAccount names an app whose federated credential trusts another account
    client_id = azure_identity.entra.trust(str(namespace), "someone-else")
    operator(poll_interval=1.0)
    _identity_location(namespace, azure_identity, "backup-identity", client_id)
    kit.kubectl_wait(namespace, "backuplocation/primary", "Available=False", timeout=120)
    available = _condition(kit.get(namespace, "backuplocation", "primary"), "Available")
    assert (available["status"], available["reason"]) == ("False", "PermissionDenied"), available
    message = available["message"]
    assert "Microsoft Entra ID gave no token" in message
    assert "AADSTS700213" in message
    assert "azure.workload.identity/client-id" in message
    assert "eyJ" not in message  # no token (a JWT) is shown


def test_a_service_account_the_administrator_did_not_allow_is_refused_before_any_job(
    namespace: Namespace, operator: Any, kit: Any, s3_store: RunningStore
) -> None:
    operator(limits=Limits(service_accounts=("*/safehold-*",)))
    kit.store_location(namespace, s3_store, "primary", serviceAccountName="deployer")
    kit.kubectl_wait(namespace, "backuplocation/primary", "Available=False", timeout=60)
    available = _condition(kit.get(namespace, "backuplocation", "primary"), "Available")
    assert available["reason"] == NOT_ALLOWED
    assert "BackupLocation primary spec.serviceAccountName" in available["message"]
    assert f"ServiceAccount {namespace}/deployer" in available["message"]
    kit.policy(namespace, "pol", "primary", ["data"])
    kit.kubectl_wait(namespace, "backuppolicy/pol", "Ready=False", timeout=60)
    ready = _condition(kit.get(namespace, "backuppolicy", "pol"), "Ready")
    assert ready["reason"] == NOT_ALLOWED
    jobs = namespace.kubectl("get", "jobs", "-o", "name").stdout.strip()
    assert jobs == ""


def test_jobs_that_would_need_two_accounts_are_refused_and_the_rest_goes_on(
    namespace: Namespace, operator: Any, kit: Any, s3_store: RunningStore
) -> None:
    """A primary and a recovery site naming different accounts: the run backs up, its copy
    to the site does not start. A resource export under an account of its own fails alone,
    beside a volume of the same run."""
    for account in ("backup-a", "backup-b"):
        namespace.apply(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}}
        )
    operator(poll_interval=1.0)
    kit.store_location(namespace, s3_store, "primary", serviceAccountName="backup-a")
    kit.store_location(
        namespace, s3_store, "site", role="recovery-site", serviceAccountName="backup-b"
    )
    data = kit.make_claim(namespace, "data")
    original = kit.write_data(data, seed=5, files=4)
    kit.policy(namespace, "pol", "primary", ["data"], replicateTo=[{"name": "site"}])
    kit.backup_run(namespace, "run-1", "pol")
    kit.kubectl_wait(namespace, "backuprun/run-1", "Complete", timeout=180)
    assert kit.get(namespace, "backuprun", "run-1")["status"]["phase"] == "Succeeded"

    def copy() -> dict[str, Any] | None:
        entries = kit.get(namespace, "backuprun", "run-1")["status"].get("replication") or []
        return next((e for e in entries if e.get("phase") == "Failed"), None)

    state = namespace.cluster.wait_for(copy, timeout=60, what="the copy to the site to fail")
    assert state["location"] == "site"
    assert state["error"]["reason"] == CONFLICT
    assert (
        "BackupLocation primary spec.serviceAccountName is backup-a but BackupLocation site "
        "names backup-b" in state["error"]["message"]
    )

    kit.policy(
        namespace, "export", "primary", ["data"],
        sources={
            "volumes": [{"claimName": "data"}],
            "clusterResources": {
                "includeNamespaces": [str(namespace)], "serviceAccountName": "exporter",
            },
        },
    )  # fmt: skip
    kit.backup_run(namespace, "run-2", "export")
    kit.kubectl_wait(namespace, "backuprun/run-2", "Complete", timeout=180)
    run = kit.get(namespace, "backuprun", "run-2")
    assert run["status"]["phase"] == "PartiallyFailed", run["status"]
    sources = {s["name"]: s for s in run["status"]["sources"]}
    assert sources["data"]["phase"] == "Succeeded"
    resources = sources["resources"]
    assert resources["phase"] == "Failed"
    assert resources["error"]["reason"] == CONFLICT
    assert resources["error"]["message"].startswith(
        "BackupPolicy export spec.sources.clusterResources.serviceAccountName is exporter but "
        "BackupLocation primary spec.serviceAccountName is backup-a"
    )

    # no Job was made for the refused work; the backups ran as the primary's account
    jobs = json.loads(namespace.kubectl("get", "jobs", "-o", "json").stdout)["items"]
    by_component: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        component = job["metadata"]["labels"]["app.kubernetes.io/component"]
        by_component.setdefault(component, []).append(job["spec"]["template"]["spec"])
    assert "replicate" not in by_component
    assert len(by_component["backup"]) == 2  # the two volumes, no export
    assert {pod["serviceAccountName"] for pod in by_component["backup"]} == {"backup-a"}
    assert kit.read_tree(data) == original


def test_a_service_account_that_does_not_exist_keeps_the_check_from_starting_and_says_so(
    namespace: Namespace, operator: Any, kit: Any, s3_store: RunningStore
) -> None:
    operator(poll_interval=1.0)
    kit.store_location(namespace, s3_store, "primary", serviceAccountName="not-created")
    namespace.cluster.wait_for(
        lambda: (
            _condition(kit.get(namespace, "backuplocation", "primary"), "Available").get("reason")
            == "PodNotStarting"
        ),
        timeout=120,
        what="the check to report its pod",
    )
    message = _condition(kit.get(namespace, "backuplocation", "primary"), "Available")["message"]
    assert "not-created" in message
    assert "serviceaccount" in message.lower()
