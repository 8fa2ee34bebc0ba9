"""An S3 PUT sends its body with its headers (storage/providers/s3.py, ``_client``).

botocore asks for ``Expect: 100-continue`` on a PUT with a file body and holds the body
back until the server says ``100 Continue``, or for a second when it does not. Here a
minimal HTTP server that never says it (as some S3-compatible servers and proxies do not)
times how long the body takes to follow the headers of a pack-sized upload. The provider's
behaviour against a real server (SeaweedFS) is in tests/storage/test_conformance.py.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from safehold.storage import FileBody, open_storage

KEYS = {"access_key_id": "AKEXAMPLE", "secret_access_key": "secret-example"}


class _Server(ThreadingHTTPServer):
    #: Per PUT received: its Expect header, and the seconds its body took to arrive.
    puts: list[tuple[str | None, float]]


class _SilentServer(BaseHTTPRequestHandler):
    """Accepts every PUT and never answers ``Expect: 100-continue``."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def handle_expect_100(self) -> bool:
        return True  # read on without the interim answer

    def do_PUT(self) -> None:
        started = time.monotonic()
        remaining = int(self.headers["Content-Length"])
        while remaining:
            remaining -= len(self.rfile.read(min(remaining, 1 << 20)))
        self.server.puts.append((self.headers.get("Expect"), time.monotonic() - started))
        self.send_response(200)
        self.send_header("ETag", '"0"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _SilentServer)
    httpd.puts = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_a_pack_upload_does_not_wait_for_100_continue(server: _Server) -> None:
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    storage = open_storage(
        "s3://bucket/repo", {"endpoint": endpoint, "region": "us-east-1", **KEYS}
    )
    with tempfile.TemporaryFile() as file:
        file.write(b"\0" * (17 * 1024 * 1024))
        file.flush()
        for n in range(3):
            storage.put(f"data/pack-{n}", FileBody(file))
    assert [expect for expect, _ in server.puts] == [None, None, None]
    # Without the header, the body follows the headers at once; botocore's wait for an
    # answer that never comes would hold every body back a whole second (the quickest of
    # three: one transfer slowed by a loaded machine cannot fail it).
    assert min(seconds for _, seconds in server.puts) < 1.0
