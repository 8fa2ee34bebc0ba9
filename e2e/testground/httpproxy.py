"""A real HTTP proxy on loopback (tinyproxy, a Debian package): the egress proxy of a
cluster whose Jobs may reach object stores only through it.

:func:`start_proxy` runs ``tinyproxy -d`` with a configuration of its own under
``workdir`` (a free port, loopback clients only, every request logged);
``RunningProxy.requests()`` reads the log: each plain-HTTP request line (``GET
http://host:port/path``) and each ``CONNECT host:port`` a client tunnelled through it.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RunningProxy", "start_proxy"]

_REQUEST = re.compile(r"Request \(file descriptor \d+\): (\S+ \S+)")


@dataclass
class RunningProxy:
    url: str  # http://127.0.0.1:PORT
    log: Path
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def requests(self) -> list[str]:
        """``METHOD target`` of every request the proxy took, oldest first."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return _REQUEST.findall(text)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_proxy(workdir: Path) -> RunningProxy:
    """tinyproxy on a free loopback port, logging every request to ``workdir``."""
    binary = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
    if not Path(binary).exists():
        raise RuntimeError("tinyproxy is not installed: run e2e/install-deps")
    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = workdir / "tinyproxy.log"
    config = workdir / "tinyproxy.conf"
    # no ConnectPort line: CONNECT to any port (object stores listen on many)
    config.write_text(
        f'Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile "{log}"\nLogLevel Connect\n'
        "MaxClients 128\nAllow 127.0.0.1\nDisableViaHeader Yes\n"
    )
    out = (workdir / "tinyproxy.out").open("ab")
    proc = subprocess.Popen(
        [binary, "-d", "-c", str(config)],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    out.close()
    proxy = RunningProxy(url=f"http://127.0.0.1:{port}", log=log, _proc=proc)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tinyproxy exited with {proc.returncode}; see {workdir}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            time.sleep(0.05)
            continue
        return proxy
    proxy.stop()
    raise RuntimeError(f"tinyproxy did not listen on {port}; see {workdir}")
