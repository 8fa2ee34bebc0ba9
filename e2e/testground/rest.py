"""A minimal JSON client for the test ground's own apiserver (bearer token + CA file).

The pod runner and the start-up checks work on plain dicts: the kubernetes client's model
classes are slow to deserialize, and its watch machinery hides connection errors that a
long-running process must survive. This client is only used against clusters the test ground
started itself; tests against any other cluster use the kubernetes client and a kubeconfig.
"""

from __future__ import annotations

import json
from typing import Any

import urllib3

__all__ = ["Api", "ApiError"]

Json = dict[str, Any]


class ApiError(Exception):
    """A non-2xx answer: ``status`` and the apiserver's ``reason``/``message``."""

    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        self.status = status
        try:
            doc = json.loads(body)
            self.reason = str(doc.get("reason", ""))
            detail = str(doc.get("message", ""))
        except ValueError:
            self.reason = ""
            detail = body[:200].decode(errors="replace")
        super().__init__(f"{method} {path}: HTTP {status} {self.reason}: {detail}")


class Api:
    """``get``/``post``/``patch``/``delete`` on paths like ``/api/v1/namespaces/x/pods``."""

    def __init__(self, server: str, ca_file: str, token: str, *, timeout: float = 15.0) -> None:
        self.server = server.rstrip("/")
        self._token = token
        self._http = urllib3.PoolManager(
            cert_reqs="CERT_REQUIRED",
            ca_certs=ca_file,
            timeout=urllib3.Timeout(connect=5.0, read=timeout),
            retries=False,
            maxsize=8,
        )

    def __repr__(self) -> str:  # never show the token
        return f"Api({self.server!r})"

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        content_type: str = "application/json",
        query: dict[str, str] | None = None,
    ) -> Json:
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        resp = self._http.request(
            method, self.server + path, body=data, headers=headers, fields=query
        )
        if resp.status >= 300:
            raise ApiError(method, path, resp.status, resp.data)
        if not resp.data:
            return {}
        if not resp.headers.get("Content-Type", "").startswith("application/json"):
            return {"text": resp.data.decode(errors="replace")}  # /readyz, /healthz answer "ok"
        result: Json = json.loads(resp.data)
        return result

    def get(self, path: str, **query: str) -> Json:
        return self.request("GET", path, query=query or None)

    def post(self, path: str, body: Json) -> Json:
        return self.request("POST", path, body)

    def merge_patch(self, path: str, body: Json) -> Json:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def delete(self, path: str, body: Json | None = None) -> Json:
        return self.request("DELETE", path, body)
