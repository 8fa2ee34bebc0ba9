"""A BackupLocation's ``caCert``: Jobs trust a private CA for the endpoint's certificate.

The Job builder first (the certificate reaches the command as a file, from a pod
annotation, for the repository and for a recovery site), then the operator against
SeaweedFS on HTTPS with a certificate of a CA nobody else trusts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from safehold.api import BackupLocation, validate_object, validate_spec
from safehold.controller.jobs import JobRequest, build_job
from safehold.controller.repository import CA_ANNOTATION, CA_DIR, with_repository, with_site
from testground.kube import Namespace
from testground.objectstores import start_store
from testground.pki import make_pki

PEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"


def _location(name: str, **spec: Any) -> BackupLocation:
    return BackupLocation.model_validate(
        {
            "metadata": {"name": name, "namespace": "team-a"},
            "spec": {
                "provider": "s3",
                "bucket": f"{name}-bucket",
                "endpoint": "https://minio.internal:9000",
                "repositoryPasswordSecretRef": {"name": "pw"},
                **spec,
            },
        }
    )


def _request() -> JobRequest:
    return JobRequest(
        name="job", namespace="team-a", component="backup", args=["backup"], labels={},
        owner=None,
    )  # fmt: skip


def test_the_ca_reaches_the_command_as_a_file_of_its_own() -> None:
    job = build_job(with_repository(_request(), _location("primary", caCert=PEM)))
    pod = job["spec"]["template"]
    assert pod["metadata"]["annotations"] == {CA_ANNOTATION: PEM}
    [container] = pod["spec"]["containers"]
    args = container["args"]
    assert args[args.index("ca_file=/etc/safehold/ca/ca.crt") - 1] == "--option"
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == CA_DIR)
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    [item] = volume["downwardAPI"]["items"]
    assert item == {
        "path": "ca.crt",
        "fieldRef": {"fieldPath": f"metadata.annotations['{CA_ANNOTATION}']"},
    }
    plain = build_job(with_repository(_request(), _location("primary")))
    assert "annotations" not in plain["spec"]["template"]["metadata"]


def test_a_recovery_site_s_ca_is_its_own() -> None:
    site = _location("site", role="recovery-site", caCert=PEM.replace("MIIB", "MIIC"))
    job = build_job(with_site(with_repository(_request(), _location("p", caCert=PEM)), site))
    pod = job["spec"]["template"]
    assert set(pod["metadata"]["annotations"]) == {CA_ANNOTATION, "safehold.io/site-ca-cert"}
    args = pod["spec"]["containers"][0]["args"]
    assert args[args.index("ca_file=/etc/safehold/site/ca/ca.crt") - 1] == "--to-option"
    assert args[args.index("ca_file=/etc/safehold/ca/ca.crt") - 1] == "--option"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("not a certificate", "holds no PEM certificate"),
        (PEM + "-----BEGIN PRIVATE KEY-----\nMC4C\n-----END PRIVATE KEY-----\n", "private key"),
    ],
)
def test_a_ca_cert_that_is_no_certificate_is_refused_at_its_field(value: str, why: str) -> None:
    spec = _location("primary").model_dump(by_alias=True, exclude_none=True)["spec"]
    [error] = validate_spec("BackupLocation", {**spec, "caCert": value})
    assert error.path == "spec.caCert"
    assert why in error.message


def test_a_location_behind_a_private_ca_is_reached_with_its_ca_cert(
    namespace: Namespace, operator: Any, kit: Any, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "private-ca")  # trusted by nothing on this machine
    store = start_store("s3", tmp_path / "s3", tls=pki)
    try:
        # the keys alone: the store's options also name its CA file, which a Secret would
        # hand to the Jobs without caCert
        credentials = {k: store.options[k] for k in ("access_key_id", "secret_access_key")}
        operator(poll_interval=1.0)
        # without the CA: refused at once, saying what to set
        kit.store_location(namespace, store, "untrusted", credentials=credentials)
        kit.kubectl_wait(namespace, "backuplocation/untrusted", "Available=False", timeout=120)
        available = next(
            c for c in kit.get(namespace, "backuplocation", "untrusted")["status"]["conditions"]
            if c["type"] == "Available"
        )  # fmt: skip
        assert available["reason"] == "CertificateNotTrusted"
        assert f"the TLS certificate of {store.endpoint} is not trusted" in available["message"]
        assert "spec.caCert" in available["message"]

        kit.store_location(
            namespace, store, "primary", credentials=credentials, caCert=pki.ca_cert.read_text()
        )
        kit.round_trip(namespace, "primary", seed=3)
    finally:
        store.stop()


def test_the_documented_example_is_valid_and_its_certificate_a_ca() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "storage.md").read_text()
    section = text[text.index("### Servers behind a private CA") :]
    section = section[: section.index("### Workload identity")]
    [block] = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)
    location = yaml.safe_load(block)
    assert validate_object(location) == []
    cert = x509.load_pem_x509_certificate(location["spec"]["caCert"].encode())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
