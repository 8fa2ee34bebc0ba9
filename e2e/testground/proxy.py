"""A TCP proxy on loopback that can play an outage: tests put it between a client and an
object store (SeaweedFS, fake-gcs-server, Azurite) and switch it off and on.

While ``down``, every open connection is reset and new ones are accepted and reset at once
(SO_LINGER 0), as a restarting server or a failing load balancer does; the listening port
stays the same, so nothing else can take it. Only 127.0.0.1::

    with TcpProxy(upstream_port) as proxy:
        options = {..., "endpoint": f"http://127.0.0.1:{proxy.port}"}
        proxy.outage_after(bytes_up=2_000_000, seconds=120)  # starts when that much went up
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from types import TracebackType

__all__ = ["TcpProxy"]

_LOOPBACK = "127.0.0.1"
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


def _reset(sock: socket.socket) -> None:
    """Close with RST; SHUT_RD first wakes a thread blocked reading it (sends nothing)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``upstream_port``, one thread per direction."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((_LOOPBACK, 0))
        self._listener.listen(128)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._down = False
        self._closed = False
        #: Bytes forwarded from clients to the server so far.
        self.bytes_up = 0
        self._trigger: tuple[int, float] | None = None
        #: Set when a scheduled outage has ended (or there was none).
        self.outage_over = threading.Event()
        self.outage_over.set()
        #: (start, end) monotonic times of each outage, end None while it lasts.
        self.outages: list[list[float | None]] = []
        self._acceptor = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        self._acceptor.start()

    @property
    def endpoint(self) -> str:
        return f"http://{_LOOPBACK}:{self.port}"

    @property
    def down(self) -> bool:
        return self._down

    # ---------------------------------------------------------------- outages
    def start_outage(self) -> None:
        """Reset every connection and refuse new ones until :meth:`end_outage`."""
        with self._lock:
            if self._down:
                return
            self._down = True
            self.outages.append([time.monotonic(), None])
            victims, self._open = self._open, set()
        for sock in victims:
            _reset(sock)

    def end_outage(self) -> None:
        with self._lock:
            if self._down:
                self._down = False
                self.outages[-1][1] = time.monotonic()
        self.outage_over.set()

    def outage_after(self, *, bytes_up: int, seconds: float) -> None:
        """An outage of ``seconds`` that starts once ``bytes_up`` more bytes came from
        clients: the read that crosses the threshold starts it and is not forwarded."""
        with self._lock:
            self._trigger = (self.bytes_up + bytes_up, seconds)
            self.outage_over.clear()

    def _count(self, n: int) -> None:
        fire: float | None = None
        with self._lock:
            self.bytes_up += n
            if self._trigger is not None and self.bytes_up >= self._trigger[0]:
                fire, self._trigger = self._trigger[1], None
        if fire is not None:
            self.start_outage()
            timer = threading.Timer(fire, self.end_outage)
            timer.daemon = True
            timer.start()

    # ---------------------------------------------------------------- forwarding
    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            if self._down:
                _reset(client)
                continue
            try:
                server = socket.create_connection((_LOOPBACK, self.upstream_port), timeout=10)
                server.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                if self._down or self._closed:
                    _reset(client)
                    _reset(server)
                    continue
                self._open.update((client, server))
            for source, target, up in ((client, server, True), (server, client, False)):
                threading.Thread(
                    target=self._pump, args=(source, target, up), name="proxy-pump", daemon=True
                ).start()

    def _pump(self, source: socket.socket, target: socket.socket, up: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if up:  # counted before it is sent: an answer to it finds the outage begun
                    self._count(len(data))
                target.sendall(data)
        except OSError:
            pass
        with self._lock:  # the first pump to stop closes the connection (if not reset)
            mine = source in self._open
            self._open.discard(source)
            self._open.discard(target)
        if mine:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()

    # ---------------------------------------------------------------- lifetime
    def close(self) -> None:
        with self._lock:
            self._closed = True
            victims, self._open = self._open, set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for sock in victims:
            _reset(sock)
        self._acceptor.join(timeout=5)
        self.end_outage()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
