"""Settings for every test under tests/.

New keys cost Argon2id at 64 MiB, 3 passes, 4 lanes (a tenth of a second per open, format
section 5); the tests' keys cost the least readers accept (8 MiB, one pass), so that the
hundreds of commands the suite runs do not each pay for it. Tests that check the real cost
clear this variable.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from collections.abc import Iterator

import pytest

os.environ.setdefault("TEST_SAFEHOLD_CHEAP_KDF", "1")
# The commands the tests run keep their local cache (docs/cli.md, "Local cache") in a
# directory of this run's, never in the home directory of whoever runs the tests.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="safehold-tests-xdg-cache-")


@pytest.fixture
def silent_apiserver() -> Iterator[str]:
    """An address (``http://127.0.0.1:PORT``) that accepts connections and never answers:
    an apiserver that went away without closing them (a failed-over control plane, a
    dropped route)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()
