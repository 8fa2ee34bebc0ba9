"""Azure Workload Identity's mutating webhook, for the test ground's apiserver.

On AKS the webhook (azure-workload-identity) mutates every new pod labelled
``azure.workload.identity/use: "true"``: for a ServiceAccount annotated
``azure.workload.identity/client-id`` it adds to each container ``AZURE_CLIENT_ID``,
``AZURE_TENANT_ID``, ``AZURE_FEDERATED_TOKEN_FILE`` and ``AZURE_AUTHORITY_HOST``, and mounts
a projected ServiceAccount token (audience ``api://AzureADTokenExchange``) at
``/var/run/secrets/azure/tokens``. This module does the same as a real admission webhook of
the test ground (a ``MutatingWebhookConfiguration`` the apiserver calls over HTTPS); the pod
runner then asks the apiserver for the token (TokenRequest), as a kubelet does, and
testground/entra.py trades it for a storage token.

:func:`install` starts the webhook and registers it; ``Webhook.remove`` takes both away.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from testground.entra import EXCHANGE_AUDIENCE, RunningEntra
from testground.kube import Cluster
from testground.rest import ApiError

__all__ = ["CLIENT_ID_ANNOTATION", "USE_LABEL", "Webhook", "install"]

USE_LABEL = "azure.workload.identity/use"
CLIENT_ID_ANNOTATION = "azure.workload.identity/client-id"
TOKEN_DIR = "/var/run/secrets/azure/tokens"
TOKEN_FILE = "azure-identity-token"
_WEBHOOKS = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"


@dataclass
class Webhook:
    """The running webhook: its registration's name and the pods it mutated."""

    name: str
    cluster: Cluster
    mutated: list[str] = field(default_factory=list)  # "namespace/pod-name (generateName)"
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)

    def remove(self) -> None:
        assert self.cluster.local is not None
        try:
            self.cluster.local.api().delete(f"{_WEBHOOKS}/{self.name}")
        except ApiError as exc:
            if exc.status != 404:
                raise
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


def _patch(pod: dict[str, Any], env: list[dict[str, str]]) -> list[dict[str, Any]]:
    """The JSON patch that gives ``pod`` the identity: env and token mount per container."""
    spec = pod["spec"]
    ops: list[dict[str, Any]] = []
    volume = {
        "name": "azure-identity-token",
        "projected": {
            "sources": [
                {
                    "serviceAccountToken": {
                        "path": TOKEN_FILE,
                        "expirationSeconds": 3600,
                        "audience": EXCHANGE_AUDIENCE,
                    }
                }
            ]
        },
    }
    if spec.get("volumes"):
        ops.append({"op": "add", "path": "/spec/volumes/-", "value": volume})
    else:
        ops.append({"op": "add", "path": "/spec/volumes", "value": [volume]})
    mount = {"name": "azure-identity-token", "mountPath": TOKEN_DIR, "readOnly": True}
    for kind in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(kind) or []):
            base = f"/spec/{kind}/{i}"
            if container.get("env"):
                ops += [{"op": "add", "path": f"{base}/env/-", "value": e} for e in env]
            else:
                ops.append({"op": "add", "path": f"{base}/env", "value": env})
            if container.get("volumeMounts"):
                ops.append({"op": "add", "path": f"{base}/volumeMounts/-", "value": mount})
            else:
                ops.append({"op": "add", "path": f"{base}/volumeMounts", "value": [mount]})
    return ops


def install(cluster: Cluster, entra: RunningEntra) -> Webhook:
    """Start the webhook (HTTPS, the cluster's serving certificate) and register it for
    pods labelled ``azure.workload.identity/use: "true"``, with ``entra``'s tenant and
    authority."""
    assert cluster.local is not None
    state = cluster.local
    api = state.api()
    hook = Webhook(name=f"testground-azure-wi-{secrets.token_hex(3)}", cluster=cluster)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            request = review["request"]
            pod = request["object"]
            ns = request["namespace"]
            account = pod["spec"].get("serviceAccountName") or "default"
            sa = api.get(f"/api/v1/namespaces/{ns}/serviceaccounts/{account}")
            annotations = sa.get("metadata", {}).get("annotations") or {}
            response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
            client_id = annotations.get(CLIENT_ID_ANNOTATION)
            if client_id:
                env = [
                    {"name": "AZURE_CLIENT_ID", "value": client_id},
                    {"name": "AZURE_TENANT_ID", "value": entra.tenant_id},
                    {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": f"{TOKEN_DIR}/{TOKEN_FILE}"},
                    {"name": "AZURE_AUTHORITY_HOST", "value": entra.authority},
                ]
                patch = json.dumps(_patch(pod, env)).encode()
                response["patchType"] = "JSONPatch"
                response["patch"] = base64.b64encode(patch).decode()
                name = pod["metadata"].get("name") or pod["metadata"].get("generateName", "")
                hook.mutated.append(f"{ns}/{name}")
            body = json.dumps(
                {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "response": response,
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(state.pki.serving_cert, state.pki.serving_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    hook._server = server
    threading.Thread(target=server.serve_forever, daemon=True, name=hook.name).start()
    port = int(server.server_address[1])
    api.post(
        _WEBHOOKS,
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": hook.name},
            "webhooks": [
                {
                    "name": "pods.azure-workload-identity.testground.safehold.io",
                    "clientConfig": {
                        "url": f"https://127.0.0.1:{port}/mutate",
                        "caBundle": base64.b64encode(state.pki.ca_cert.read_bytes()).decode(),
                    },
                    "rules": [
                        {
                            "operations": ["CREATE"],
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "resources": ["pods"],
                        }
                    ],
                    "objectSelector": {"matchLabels": {USE_LABEL: "true"}},
                    "failurePolicy": "Fail",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "timeoutSeconds": 10,
                }
            ],
        },
    )
    return hook
