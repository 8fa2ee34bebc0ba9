"""Point-in-time recovery figures (docs/databases.md, "Measured").

A pgbench database on a PostgreSQL 15 of the test ground; ``pg_basebackup`` to disk as the
baseline; two base backups; a WAL drain after 20 s of pgbench and an idle one;
``pg-restore-pitr --check``; a restore; and the recovery of a server started on it, whose
``pgbench_history`` must hold every row the source had at the last drain. Absolute times,
not ratios: restic and borg have no PostgreSQL WAL archive to compare with.

Run: ``PYTHONPATH=operator:e2e python bench/pitr.py [SCALE]`` (default 30, about 480 MB).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from testground.databases import private_dir, run_postgres, start_postgres

SAFEHOLD = [sys.executable, "-m", "safehold"]


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    """Seconds ``argv`` took, and its JSON summary (its last line) when it printed one."""
    started = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed: {done.stderr[-2000:]}")
    lines = done.stdout.strip().splitlines()
    doc = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    return round(time.monotonic() - started, 2), doc


def _wait_promoted(server: Any) -> None:
    while server.sql("SELECT pg_is_in_recovery()").strip() != "f":
        time.sleep(0.1)


def main(scale: int) -> dict[str, Any]:
    server = start_postgres()
    work = Path(tempfile.mkdtemp(prefix="pitr-bench-"))
    try:
        pg = {**os.environ, "PGHOST": server.host, "PGPORT": str(server.port),
              "PGUSER": server.user, "PGPASSWORD": server.password}  # fmt: skip
        _run(["createdb", "bench"], pg)
        _run(["pgbench", "-i", "-q", "-s", str(scale), "bench"], pg)
        password = work / "db-password"
        password.write_text(server.password + "\n")
        cli = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "SAFEHOLD_"))}
        cli.update(SAFEHOLD_REPOSITORY=(work / "repo").as_uri(),
                   SAFEHOLD_PASSWORD="bench point in time")  # fmt: skip
        conn = ["--db-host", server.host, "--db-port", str(server.port), "--db-user",
                server.user, "--db-password-file", str(password), "--source", "b/pg",
                "--json"]  # fmt: skip
        out: dict[str, Any] = {
            "database_bytes": int(server.sql("SELECT pg_database_size('bench')").strip())
        }
        _run([*SAFEHOLD, "repo", "init"], cli)
        _run([*SAFEHOLD, "pg-archive-wal", *conn], cli)
        plain = ["pg_basebackup", "-D", str(work / "plain"), "-Ft", "-X", "fetch", "-c", "fast"]
        out["pg_basebackup_to_disk_s"], _ = _run(plain, pg)
        out["plain_tar_bytes"] = sum(p.stat().st_size for p in (work / "plain").iterdir())
        for which in ("first", "second"):
            seconds, doc = _run([*SAFEHOLD, "pg-basebackup", *conn], cli)
            out[f"{which}_base_s"], out[f"{which}_base_stored"] = seconds, doc["bytes_stored"]
        _run(["pgbench", "-T", "20", "-c", "2", "bench"], pg)
        seconds, doc = _run([*SAFEHOLD, "pg-archive-wal", *conn], cli)
        out["drain_after_pgbench_s"] = seconds
        out["drain_segments"] = len(doc["segments"])
        out["drain_bytes_read"], out["drain_bytes_stored"] = doc["bytes_read"], doc["bytes_stored"]
        out["idle_drain_s"], _ = _run([*SAFEHOLD, "pg-archive-wal", *conn], cli)
        check = [*SAFEHOLD, "pg-restore-pitr", "--source", "b/pg", "--check", "--json"]
        out["check_s"], _ = _run(check, cli)
        root = private_dir("pitr-bench-", "postgres" if os.geteuid() == 0 else None)
        restore = [*SAFEHOLD, "pg-restore-pitr", "--source", "b/pg", str(root / "data"), "--json"]
        out["restore_s"], _ = _run(restore, cli)
        started = time.monotonic()
        restored = run_postgres(root, root / "data")
        try:
            _wait_promoted(restored)
            out["start_to_promotion_s"] = round(time.monotonic() - started, 2)
            count = "SELECT count(*) FROM pgbench_history"
            out["history_rows"] = [server.sql(count, "bench").strip(),
                                   restored.sql(count, "bench").strip()]  # fmt: skip
        finally:
            restored.stop()
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)
        server.stop()


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 30), indent=1))
