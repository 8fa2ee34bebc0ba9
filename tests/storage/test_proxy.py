"""The test ground's outage proxy (e2e/testground/proxy.py): forwards bytes both ways, resets
open connections and refuses new ones during an outage, and forwards again afterwards on the
same port."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from testground.proxy import TcpProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except ConnectionResetError:  # the proxy's outage resets the connection: expected
            return


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _roundtrip(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def _fails(port: int, payload: bytes) -> bool:
    """Whether a round trip is reset, refused or cut short."""
    try:
        return _roundtrip(port, payload) != payload
    except OSError:
        return True


def test_forwards_both_ways_and_counts_bytes_up(echo_port: int) -> None:
    with TcpProxy(echo_port) as proxy:
        payload = bytes(range(256)) * 4096  # 1 MiB
        assert _roundtrip(proxy.port, payload) == payload
        assert proxy.bytes_up == len(payload)
        assert proxy.endpoint == f"http://127.0.0.1:{proxy.port}"


def test_an_outage_resets_open_connections_and_refuses_new_ones(echo_port: int) -> None:
    with TcpProxy(echo_port) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        sock.sendall(b"hello")
        assert sock.recv(5) == b"hello"
        proxy.start_outage()
        try:  # reset (or closed) under the client's feet
            sock.sendall(b"again")
            answer = sock.recv(5)
        except OSError:
            answer = b""
        assert answer == b""
        sock.close()
        assert _fails(proxy.port, b"during")
        proxy.end_outage()
        assert _roundtrip(proxy.port, b"after") == b"after"  # same port, forwarding again
        assert len(proxy.outages) == 1


def test_a_scheduled_outage_starts_after_so_many_bytes_and_ends_by_itself(
    echo_port: int,
) -> None:
    with TcpProxy(echo_port) as proxy:
        proxy.outage_after(bytes_up=1000, seconds=2.0)
        assert not proxy.outage_over.is_set()
        assert _roundtrip(proxy.port, b"x" * 500) == b"x" * 500
        assert not proxy.down
        # crosses the threshold: the bytes that cross it are not forwarded
        assert _fails(proxy.port, b"y" * 600)
        assert proxy.down
        assert _fails(proxy.port, b"during")  # a new connection in the outage is refused
        assert proxy.outage_over.wait(10)
        assert _roundtrip(proxy.port, b"after") == b"after"
        start, end = proxy.outages[0]
        assert start is not None
        assert end is not None
        assert 1.9 <= end - start < 6
        time.sleep(0.05)
        assert _roundtrip(proxy.port, b"back") == b"back"
