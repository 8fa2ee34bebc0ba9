"""Object-store requests and bytes, counted at the server, so every tool is counted alike.

The benchmark's S3 server is SeaweedFS (``weed mini``, as the tests run it) started with
``-metricsPort``: its Prometheus endpoint counts every S3 request by kind
(``SeaweedFS_s3_request_total{type=...}``) and the bytes received and sent per bucket
(``SeaweedFS_s3_bucket_traffic_{received,sent}_bytes_total``). The harness reads the counters
before and after each command; the difference is that command's traffic (commands run one at a
time). Nothing sits between the tools and the server, so counting costs them nothing.

SeaweedFS counts HEAD requests as GET (its handlers share the label), so the kinds reported are
PUT, GET (including HEAD), LIST and DELETE; a request of another kind would appear under its
own label. Requests that failed (4xx, 5xx) are counted too: they cost money as well.

The server's own CPU time (``process_cpu_seconds_total``) is read with the counters. On the
benchmark's machine the server shares the tools' cores: what it spends storing or serving a
tool's bytes is time that tool cannot use, and it narrows every ratio (docs/performance.md,
"Where an S3 step's time goes"). A real bucket's servers do not run on the machine that backs
up, so the report gives this figure beside the requests.
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

if TYPE_CHECKING:
    from testground.objectstores import RunningStore

__all__ = ["KINDS", "Counter", "Traffic", "parse_metrics", "start_counted_s3"]

#: The kinds reported, in this order (others, should they appear, follow).
KINDS = ("PUT", "GET", "LIST", "DELETE")

_LINE = re.compile(r"^(?P<name>[A-Za-z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_REQUESTS = "SeaweedFS_s3_request_total"
_UP = "SeaweedFS_s3_bucket_traffic_received_bytes_total"
_DOWN = "SeaweedFS_s3_bucket_traffic_sent_bytes_total"
_CPU = "process_cpu_seconds_total"


class Traffic(BaseModel):
    """Requests by kind and bytes each way (up: to the server) of one command, or totals;
    and the CPU time the server spent meanwhile."""

    requests: dict[str, int] = {}
    bytes_up: int = 0
    bytes_down: int = 0
    server_cpu_seconds: float = 0.0

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def __sub__(self, before: Traffic) -> Traffic:
        kinds = dict.fromkeys([*self.requests, *before.requests])
        return Traffic(
            requests={
                k: self.requests.get(k, 0) - before.requests.get(k, 0)
                for k in kinds
                if self.requests.get(k, 0) != before.requests.get(k, 0)
            },
            bytes_up=self.bytes_up - before.bytes_up,
            bytes_down=self.bytes_down - before.bytes_down,
            server_cpu_seconds=round(self.server_cpu_seconds - before.server_cpu_seconds, 2),
        )

    def describe(self) -> str:
        """``PUT 12, GET 3; 4.2 MB up, 0.0 MB down; server CPU 1.23 s``."""
        kinds = [k for k in KINDS if k in self.requests] + sorted(
            k for k in self.requests if k not in KINDS
        )
        counts = ", ".join(f"{k} {self.requests[k]:,}" for k in kinds) or "none"
        return (
            f"{counts}; {self.bytes_up / 1e6:,.1f} MB up, {self.bytes_down / 1e6:,.1f} MB down; "
            f"server CPU {self.server_cpu_seconds:.2f} s"
        )


def parse_metrics(text: str) -> Traffic:
    """The S3 counters of a Prometheus text exposition, summed over buckets and status codes,
    and the server process's CPU seconds."""
    requests: dict[str, int] = {}
    up = down = 0
    cpu = 0.0
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        name = match["name"]
        if name == _CPU:
            cpu = float(match["value"])
            continue
        if name not in (_REQUESTS, _UP, _DOWN):
            continue
        value = int(float(match["value"]))
        if name == _REQUESTS:
            labels = dict(_LABEL.findall(match["labels"] or ""))
            kind = labels.get("type", "OTHER").upper()
            requests[kind] = requests.get(kind, 0) + value
        elif name == _UP:
            up += value
        else:
            down += value
    return Traffic(requests=requests, bytes_up=up, bytes_down=down, server_cpu_seconds=cpu)


class Counter:
    """Reads a server's counters; ``read()`` gives the totals so far."""

    def __init__(self, metrics_url: str) -> None:
        self.url = metrics_url

    def read(self) -> Traffic:
        with urllib.request.urlopen(self.url, timeout=10) as response:  # noqa: S310 - loopback
            return parse_metrics(response.read().decode())


def start_counted_s3(workdir: Path) -> tuple[RunningStore, Counter]:
    """Start SeaweedFS as the tests do (``e2e/testground/objectstores.py``), with its
    Prometheus endpoint on a free loopback port; returns the store and its counter."""
    from testground import objectstores

    store = objectstores.start_store("s3", workdir)
    port = objectstores._free_port()  # the test ground's own port picker
    # start_store has no way to pass a flag: restart the same server (same ports and data)
    # with the metrics listener added.
    store.stop()
    store._argv.append(f"-metricsPort={port}")
    store.start()
    return store, Counter(f"http://127.0.0.1:{port}/metrics")
