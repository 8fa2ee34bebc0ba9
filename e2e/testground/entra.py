"""A stand-in for Microsoft Entra ID's token service, and Azurite that takes its tokens.

Azure Workload Identity gives a pod no key: its webhook mounts a projected ServiceAccount
token and sets ``AZURE_CLIENT_ID``, ``AZURE_TENANT_ID``, ``AZURE_FEDERATED_TOKEN_FILE`` and
``AZURE_AUTHORITY_HOST``; azure-identity's ``WorkloadIdentityCredential`` trades that token
at the authority (OAuth 2.0 client credentials with a client assertion) for an access token
to Azure Storage, which the storage service checks. Entra ID does not run on loopback, so
this module serves the two endpoints the exchange uses (the tenant's OpenID configuration
and its token endpoint) over HTTPS. Like Entra ID's federated identity credentials, it
trusts one issuer (the cluster's ServiceAccount signing key: the assertion's ES256
signature is checked) and, per app registration (client id), one subject
(``system:serviceaccount:NS:NAME``) with the audience ``api://AzureADTokenExchange``;
anything else gets the error Entra ID gives (``invalid_client``, AADSTS700213). The
storage side is the real one: Azurite with ``--oauth basic`` checks every request's bearer
token (its issuer, audience and lifetime; not its signature) and refuses requests without
one.

:func:`start_entra` returns a :class:`RunningEntra`: ``trust`` registers a federated
credential, ``environment`` is what the webhook sets in a pod (with a token file signed
like the apiserver's, for commands run outside a pod). :func:`start_azurite_oauth` starts
Azurite on HTTPS with the same CA; testground/workload_identity.py is the webhook.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from testground.objectstores import RunningStore, _start_azurite
from testground.pki import Pki

__all__ = ["EXCHANGE_AUDIENCE", "RunningEntra", "start_azurite_oauth", "start_entra"]

#: The audience of the ServiceAccount token a pod trades (the webhook's projected token).
EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"

#: The scope a storage client asks for, and the audience its token must carry.
STORAGE_SCOPE = "https://storage.azure.com/.default"
_AUDIENCE = "https://storage.azure.com"
_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _jwt(claims: dict[str, Any], key: ec.EllipticCurvePrivateKey | None = None) -> str:
    """A JWT with ``claims``, signed ES256 with ``key`` (as the apiserver signs
    ServiceAccount tokens), or with random bytes for a signature (the access tokens:
    Azurite's basic mode checks their claims, not their signature)."""
    header = _b64(json.dumps({"alg": "ES256" if key else "RS256", "typ": "JWT"}).encode())
    signed = f"{header}.{_b64(json.dumps(claims).encode())}"
    if key is None:
        return f"{signed}.{_b64(secrets.token_bytes(64))}"
    r, s = decode_dss_signature(key.sign(signed.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signed}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _verified_claims(token: str, issuer_key: ec.EllipticCurvePublicKey) -> dict[str, Any] | None:
    """The claims of ``token`` if ``issuer_key`` signed it (ES256), else None."""
    try:
        header, body, signature = token.split(".")
        raw = _unb64(signature)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        issuer_key.verify(der, f"{header}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
        claims: dict[str, Any] = json.loads(_unb64(body))
    except (ValueError, InvalidSignature):
        return None
    return claims


def subject(namespace: str, service_account: str) -> str:
    """The subject of a ServiceAccount's tokens: what a federated credential names."""
    return f"system:serviceaccount:{namespace}:{service_account}"


@dataclass
class RunningEntra:
    """The token service: its authority, its tenant, the cluster whose ServiceAccount
    tokens it trusts (``pki``: its CA serves HTTPS, its signing key issues the tokens), the
    federated credentials (client id -> subject), and what it was asked."""

    pki: Pki
    workdir: Path
    authority: str  # https://127.0.0.1:PORT/
    tenant_id: str
    federations: dict[str, str] = field(default_factory=dict)
    #: Each token request: (client id, whether its assertion was trusted).
    requests: list[tuple[str, bool]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)

    def trust(self, namespace: str, service_account: str) -> str:
        """Register an app whose federated credential trusts ``service_account`` of
        ``namespace``; returns its client id."""
        client_id = f"{secrets.token_hex(4)}-1111-4000-8000-{secrets.token_hex(6)}"
        self.federations[client_id] = subject(namespace, service_account)
        return client_id

    def token_file(self, namespace: str, service_account: str) -> Path:
        """A token of ``service_account`` as the apiserver would project it for the
        webhook (audience ``api://AzureADTokenExchange``), signed with the cluster's key."""
        key = serialization.load_pem_private_key(self.pki.sa_key.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        now = int(time.time())
        claims = {
            "aud": [EXCHANGE_AUDIENCE],
            "iss": "https://kubernetes.default.svc",
            "sub": subject(namespace, service_account),
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
        }
        path = self.workdir / f"token-{namespace}-{service_account}"
        path.write_text(_jwt(claims, key))
        return path

    def environment(self, client_id: str, token_file: Path) -> dict[str, str]:
        """What Azure Workload Identity's webhook sets in a pod, and the CA to trust."""
        return {
            "AZURE_CLIENT_ID": client_id,
            "AZURE_TENANT_ID": self.tenant_id,
            "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
            "AZURE_AUTHORITY_HOST": self.authority,
            "REQUESTS_CA_BUNDLE": str(self.pki.ca_cert),
        }

    def trusted(self, client_id: str, assertion: str) -> bool:
        """Whether ``assertion`` is a token of the subject ``client_id`` federates,
        signed by the cluster, for the exchange's audience, and not expired."""
        key = serialization.load_pem_public_key(self.pki.sa_pub.read_bytes())
        assert isinstance(key, ec.EllipticCurvePublicKey)
        claims = _verified_claims(assertion, key)
        if claims is None or client_id not in self.federations:
            return False
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        return (
            claims.get("sub") == self.federations[client_id]
            and EXCHANGE_AUDIENCE in audiences
            and int(claims.get("exp") or 0) > time.time()
        )

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


def _handler(entra: RunningEntra) -> type[BaseHTTPRequestHandler]:
    base = urllib.parse.urlsplit(entra.authority)
    issuer = f"{base.scheme}://{base.netloc}/{entra.tenant_id}"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, status: int, doc: dict[str, Any]) -> None:
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            if path == f"/{entra.tenant_id}/v2.0/.well-known/openid-configuration":
                self._reply(
                    200,
                    {
                        "issuer": f"{issuer}/v2.0",
                        "authorization_endpoint": f"{issuer}/oauth2/v2.0/authorize",
                        "token_endpoint": f"{issuer}/oauth2/v2.0/token",
                        "device_authorization_endpoint": f"{issuer}/oauth2/v2.0/devicecode",
                    },
                )
            else:
                self._reply(404, {"error": "not_found"})

        def do_POST(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())

            def get(key: str) -> str:
                return (form.get(key) or [""])[0]

            if path != f"/{entra.tenant_id}/oauth2/v2.0/token":
                self._reply(404, {"error": "not_found"})
                return
            client = get("client_id")
            trusted = get("client_assertion_type") == _ASSERTION_TYPE and entra.trusted(
                client, get("client_assertion")
            )
            entra.requests.append((client, trusted))
            if get("grant_type") != "client_credentials" or get("scope") != STORAGE_SCOPE:
                self._reply(400, {"error": "invalid_request", "error_description": "AADSTS900144"})
                return
            if not trusted:
                self._reply(
                    401,
                    {
                        "error": "invalid_client",
                        "error_description": "AADSTS700213: No matching federated identity "
                        "record found for presented assertion.",
                    },
                )
                return
            now = int(time.time())
            token = _jwt(
                {
                    "aud": _AUDIENCE,
                    "iss": f"https://sts.windows.net/{entra.tenant_id}/",
                    "iat": now,
                    "nbf": now - 60,
                    "exp": now + 3600,
                    "appid": client,
                    "tid": entra.tenant_id,
                    "oid": client,
                    "sub": client,
                }
            )
            self._reply(200, {"token_type": "Bearer", "expires_in": 3600, "access_token": token})

    return Handler


def start_entra(workdir: Path, pki: Pki) -> RunningEntra:
    """A token service on a free loopback port that serves HTTPS with ``pki``'s serving
    certificate and trusts the ServiceAccount tokens its signing key issues."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = int(server.server_address[1])
    entra = RunningEntra(
        pki=pki,
        workdir=workdir,
        authority=f"https://127.0.0.1:{port}/",
        tenant_id=f"{secrets.token_hex(4)}-0000-4000-8000-{secrets.token_hex(6)}",
    )
    server.RequestHandlerClass = _handler(entra)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.serving_cert, pki.serving_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    entra._server = server
    threading.Thread(target=server.serve_forever, daemon=True, name="entra").start()
    return entra


def start_azurite_oauth(workdir: Path, pki: Pki) -> RunningStore:
    """Azurite's blob service on HTTPS (``pki``'s serving certificate) that takes Entra
    ID bearer tokens (``--oauth basic``) as well as the development account's key;
    ``options`` name the account, its CA and no credentials."""
    store = _start_azurite(workdir, pki, oauth=True)
    store.start()
    return store
