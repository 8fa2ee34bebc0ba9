"""``python -m testground.podrunner``: run the pod runner until SIGTERM or SIGINT.

Either ``--cluster-dir DIR`` (a test-ground cluster: server, CA and admin token come from its
``state.json`` and ``pki/``), or ``--server``, ``--ca-file`` and ``--token-file`` with
``--work-dir`` for any apiserver that accepts a bearer token.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from urllib.parse import urlparse

from testground.podrunner.runner import Runner
from testground.rest import Api

__all__ = ["main"]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m testground.podrunner", description=__doc__)
    p.add_argument("--cluster-dir", type=Path, help="a test-ground cluster directory")
    p.add_argument("--server", help="https://HOST:PORT of the apiserver")
    p.add_argument("--ca-file", type=Path)
    p.add_argument("--token-file", type=Path)
    p.add_argument("--work-dir", type=Path, help="pod work directories (logs, volumes)")
    p.add_argument("--volumes-dir", type=Path, help="directories of provisioned volumes")
    p.add_argument("--log-file", type=Path, help="log here instead of stderr")
    p.add_argument(
        "--venv-bin",
        type=Path,
        default=Path(sys.prefix) / "bin",
        help="put first on every pod's PATH (default: this Python's environment)",
    )
    p.add_argument(
        "--entrypoint",
        action="append",
        default=[],
        metavar="PATTERN=COMMAND",
        help="command for images matching the glob PATTERN when a container sets none",
    )
    p.add_argument("--interval", type=float, default=0.25)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(
        filename=args.log_file,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(threadName)s %(message)s",
    )
    if args.cluster_dir is not None:
        d: Path = args.cluster_dir
        state = json.loads((d / "state.json").read_text())
        server = f"https://127.0.0.1:{state['apiserver_port']}"
        ca = d / "pki" / "ca.crt"
        token = (d / "pki" / "admin.token").read_text().strip()
        work = args.work_dir or d / "pods"
        volumes = args.volumes_dir or d / "volumes"
        pki = d / "pki"
        tls = (pki / "apiserver.crt", pki / "apiserver.key", pki / "ca.crt")
    else:
        if not (args.server and args.ca_file and args.token_file and args.work_dir):
            sys.stderr.write("give --cluster-dir, or --server/--ca-file/--token-file/--work-dir\n")
            return 2
        server, ca, work = args.server, args.ca_file, args.work_dir
        token = args.token_file.read_text().strip()
        volumes = args.volumes_dir or work / "volumes"
        tls = None
    work.mkdir(parents=True, exist_ok=True)
    volumes.mkdir(parents=True, exist_ok=True)
    port = urlparse(server).port or 443
    entrypoints = None
    if args.entrypoint:
        entrypoints = {}
        for item in args.entrypoint:
            pattern, _, command = item.partition("=")
            entrypoints[pattern] = command.split()
    runner = Runner(
        Api(server, str(ca), token),
        work,
        volumes.resolve(),
        apiserver_port=port,
        venv_bin=args.venv_bin,
        entrypoints=entrypoints,
        interval=args.interval,
        tls=tls,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runner.run(stop, ready_file=work / "runner.ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
