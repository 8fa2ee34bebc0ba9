"""The kubelet's log endpoint, so ``kubectl logs`` (and ``read_namespaced_pod_log``) work.

The apiserver forwards ``GET pods/NAME/log`` to ``https://<node address>:<kubelet port>/
containerLogs/NS/POD/CONTAINER`` and presents its kubelet client certificate; this server
requires that certificate (signed by the cluster's CA) and answers from the files the pod runner
captured, honouring ``tailLines``, ``limitBytes``, ``previous`` and ``follow``.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qs, unquote, urlparse

from testground.podlogs import container_log_path

__all__ = ["LogServer"]

log = logging.getLogger("podrunner.logs")
IsRunning = Callable[[str, str], bool]


def _tail(data: bytes, lines: int) -> bytes:
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


class LogServer:
    """A threaded HTTPS server on 127.0.0.1 (a free port) for container logs."""

    def __init__(
        self, pods_dir: Path, cert: Path, key: Path, client_ca: Path, is_running: IsRunning
    ) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(str(client_ca))
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                log.debug(format, *args)

            def do_GET(self) -> None:
                server.handle(self)

        self.pods_dir = pods_dir
        self.is_running = is_running
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        # the handshake happens in the request's thread, so a stalled client blocks nobody
        self.httpd.socket = ctx.wrap_socket(
            self.httpd.socket, server_side=True, do_handshake_on_connect=False
        )
        self.port: int = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="log-server", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        url = urlparse(req.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if len(parts) != 4 or parts[0] != "containerLogs":
            req.send_error(404, "only /containerLogs/NAMESPACE/POD/CONTAINER is served here")
            return
        _, namespace, pod, container = parts
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            path = container_log_path(
                self.pods_dir, namespace, pod, container, previous=query.get("previous") == "true"
            )
        except LookupError as exc:
            req.send_error(404, str(exc))
            return
        with path.open("rb") as f:
            self._send(req, f, query, namespace, pod)

    def _send(
        self,
        req: BaseHTTPRequestHandler,
        f: BinaryIO,
        query: dict[str, str],
        namespace: str,
        pod: str,
    ) -> None:
        data = f.read()
        if "tailLines" in query:
            data = _tail(data, int(query["tailLines"]))
        limit = int(query["limitBytes"]) if "limitBytes" in query else None
        if limit is not None:
            data = data[:limit]
        req.send_response(200)
        req.send_header("Content-Type", "text/plain; charset=utf-8")
        req.end_headers()
        try:
            req.wfile.write(data)
            if query.get("follow") == "true" and limit is None:
                self._follow(req, f, namespace, pod)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass

    def _follow(self, req: BaseHTTPRequestHandler, f: BinaryIO, namespace: str, pod: str) -> None:
        """Stream what the container writes until its pod stops running."""
        while True:
            chunk = f.read(65536)
            if chunk:
                req.wfile.write(chunk)
                req.wfile.flush()
                continue
            if not self.is_running(namespace, pod):
                return
            time.sleep(0.2)
