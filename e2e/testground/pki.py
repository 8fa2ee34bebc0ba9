"""The test ground's keys and certificates, made with the ``openssl`` command.

One CA signs the apiserver's serving certificate. Its SANs cover every name an in-cluster client
may verify against: ``127.0.0.1`` (what the pod runner puts in ``KUBERNETES_SERVICE_HOST``), the
first service IP and the ``kubernetes.default.svc`` names. A separate key pair signs service
account tokens. Bearer tokens for the admin (``system:masters``) and the controller-manager are
random and live in a token file the apiserver reads; they are never printed.

Elliptic-curve keys keep generation in the milliseconds, which matters for the warm-start time.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SERVICE_IP", "Pki", "make_pki"]

SERVICE_IP = "10.0.0.1"
_SANS = (
    "IP:127.0.0.1",
    f"IP:{SERVICE_IP}",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class Pki:
    """Paths of the generated material (and the two bearer tokens, kept out of reprs)."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def kubelet_client_cert(self) -> Path:
        """What the apiserver presents to the pod runner's log server (``kubectl logs``)."""
        return self.directory / "kubelet-client.crt"

    @property
    def kubelet_client_key(self) -> Path:
        return self.directory / "kubelet-client.key"

    @property
    def sa_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.directory / "sa.pub"

    @property
    def token_file(self) -> Path:
        return self.directory / "tokens.csv"

    def token(self, user: str) -> str:
        """The bearer token of ``admin`` or ``controller-manager``."""
        return (self.directory / f"{user}.token").read_text().strip()


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _ec_key(path: Path) -> None:
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-out", path.name, cwd=path.parent,
    )  # fmt: skip
    path.chmod(0o600)


def _signed(pki: Pki, name: str, subject: str, usage: str) -> None:
    """``name.key`` and ``name.crt`` signed by the CA, for ``usage`` (and any SAN lines)."""
    directory = pki.directory
    _ec_key(directory / f"{name}.key")
    ext = directory / f"{name}.ext"
    ext.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage={usage}\n"
    )
    _openssl(
        "req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", pki.ca_cert.name,
        "-CAkey", pki.ca_key.name, "-CAcreateserial", "-days", "3650",
        "-extfile", ext.name, "-out", f"{name}.crt",
        cwd=directory,
    )  # fmt: skip


def make_pki(directory: Path) -> Pki:
    """Create a CA, serving and client certificates, service-account keys and tokens."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    _ec_key(pki.ca_key)
    _openssl(
        "req", "-x509", "-new", "-key", pki.ca_key.name, "-days", "3650",
        "-subj", "/CN=safehold-testground-ca", "-out", pki.ca_cert.name,
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        cwd=directory,
    )  # fmt: skip
    _signed(pki, "apiserver", "/CN=kube-apiserver", f"serverAuth\nsubjectAltName={','.join(_SANS)}")
    _signed(
        pki, "kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", "clientAuth"
    )
    _ec_key(pki.sa_key)
    _openssl("pkey", "-in", pki.sa_key.name, "-pubout", "-out", pki.sa_pub.name, cwd=directory)
    users = {
        "admin": ("admin", "system:masters"),
        # system:masters: the controllers run under one identity (see controlplane.py)
        "controller-manager": ("system:kube-controller-manager", "system:masters"),
    }
    lines = []
    for key, (user, group) in users.items():
        token = secrets.token_hex(24)
        token_path = directory / f"{key}.token"
        token_path.write_text(token + "\n")
        token_path.chmod(0o600)
        lines.append(f'{token},{user},{key},"{group}"' if group else f"{token},{user},{key}")
    pki.token_file.write_text("\n".join(lines) + "\n")
    pki.token_file.chmod(0o600)
    return pki
