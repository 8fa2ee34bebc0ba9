"""The GCS provider resends a read whose kept-alive connection the server had closed.

A server may close an idle or finished connection at any time; the client learns it only
when the next request on it is reset or gets no answer. fake-gcs-server closes the
connection after every 416 (a range starting past the end), which made the conformance
suite's "beyond" cases fail one run in five. The provider resends such a GET or HEAD once,
at once; everything else is raised as before, for the retry wrapper.

The first test is the real symptom on the real server, through a raw provider (no retry
wrapper). The others pin the policy against a loopback server that drops connections on
purpose: how many requests it saw is what the client sent.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO

import pytest

from safehold.storage import TransientError, open_storage
from safehold.storage.base import Storage
from testground.objectstores import RunningStore

BUCKET = "connections"


def test_reads_after_an_unsatisfiable_range_succeed_on_fake_gcs_server(
    gcs_store: RunningStore,
) -> None:
    gcs_store.make_bucket(BUCKET)
    storage = open_storage(gcs_store.url(BUCKET, uuid.uuid4().hex), gcs_store.options)
    storage.put("obj", b"x" * 4096)
    # Each 416 leaves a connection the server closes; without the resend about one read
    # in five after it failed with "cannot reach the GCS endpoint".
    for _ in range(30):
        assert storage.get("obj", 9000) == b""
        assert storage.get("obj", 4000) == b"x" * 96


@dataclass
class Dropper:
    """A loopback HTTP server that answers ``answered`` requests per connection with a
    200 and ``BODY``, keeps the connection alive, and then closes it on the next request
    without a word. ``requests`` counts the request lines it read."""

    answered: int
    requests: list[str] = field(default_factory=list)
    sock: socket.socket = field(default_factory=socket.socket)

    BODY = b"hello"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            for n in range(self.answered + 1):
                head = _read_head(reader)
                if head is None:
                    return
                self.requests.append(head[0])
                length = int(head[1].get("content-length", "0"))
                reader.read(length)
                if n == self.answered:
                    return  # closed with the request unanswered
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                    + f"Content-Length: {len(self.BODY)}\r\n\r\n".encode()
                    + self.BODY
                )


def _read_head(reader: BinaryIO) -> tuple[str, dict[str, str]] | None:
    lines: list[str] = []
    while True:
        line = reader.readline()
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            break
        lines.append(line.decode("latin-1").rstrip("\r\n"))
    fields = (h.split(":", 1) for h in lines[1:])
    return lines[0], {k.strip().lower(): v.strip() for k, v in fields}


@contextmanager
def dropper(answered: int) -> Iterator[tuple[Dropper, Storage]]:
    server = Dropper(answered)
    server.sock.bind(("127.0.0.1", 0))
    server.sock.listen()
    threading.Thread(target=server.serve, daemon=True).start()
    try:
        options = {"endpoint": server.endpoint, "anonymous": "true", "timeout": "5"}
        yield server, open_storage("gs://bucket/prefix", options)
    finally:
        server.sock.close()


DOWNLOAD = "GET /download/storage/v1/b/bucket/o/prefix%2Fobj?alt=media HTTP/1.1"


def test_a_read_is_the_only_request_the_client_sends() -> None:
    """google-cloud-storage 3.17 reads the bucket's metadata in a thread of its own at the
    first object call; the provider turns that off. The thread starts before the download,
    so a second is ample for its request to arrive if it were sent."""
    with dropper(answered=5) as (server, storage):
        assert storage.get("obj") == Dropper.BODY
        time.sleep(1.0)
        assert server.requests == [DOWNLOAD]


def test_a_read_on_a_connection_the_server_closed_is_resent_once() -> None:
    with dropper(answered=1) as (server, storage):
        assert storage.get("obj") == Dropper.BODY
        assert storage.get("obj") == Dropper.BODY  # its kept-alive connection is dropped
        assert server.requests == [DOWNLOAD] * 3


def test_a_server_that_drops_every_request_is_asked_twice_and_reported() -> None:
    with dropper(answered=0) as (server, storage):
        with pytest.raises(TransientError, match="cannot reach the GCS endpoint"):
            storage.get("obj")
        assert server.requests == [DOWNLOAD] * 2


def test_an_upload_whose_connection_broke_is_not_resent() -> None:
    with dropper(answered=0) as (server, storage):
        with pytest.raises(TransientError, match="cannot reach the GCS endpoint"):
            storage.put("obj", b"data")
        assert len([r for r in server.requests if r.startswith("POST /upload/")]) == 1


def test_a_refused_connection_is_reported_at_once() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    storage = open_storage(
        "gs://bucket/prefix",
        {"endpoint": f"http://127.0.0.1:{port}", "anonymous": "true", "timeout": "5"},
    )
    with pytest.raises(TransientError, match="cannot reach the GCS endpoint"):
        storage.get("obj")
