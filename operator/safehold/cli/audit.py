"""The audit trail from the command line: ``safehold audit`` lists the records, and
:func:`audited` wraps a command so that it appends its record when it ends (one line per
command where it is registered). Format: section 15 of docs/design/repository-format.md.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from safehold.cli import context
from safehold.cli.output import Output

__all__ = ["CAUSE_ENV", "audited", "register"]

#: The operator gives a Job the custom resource that caused it: JSON with namespace,
#: kind, name and uid (controller/commands.py).
CAUSE_ENV = "SAFEHOLD_AUDIT_CAUSE"
_ID = re.compile(r"^[0-9a-f]{64}$")
Handler = Callable[[argparse.Namespace, Output], int]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: Summary fields whose ids are not snapshots (a key, a backup's parent, trees, packs).
_NOT_SNAPSHOTS = frozenset({"key", "keys", "parent", "tree", "pack", "packs", "index"})


def _snapshot_ids(doc: object) -> list[str]:
    """The snapshot ids a command's summary names (the one it wrote or read, those it
    removed or copied), in order, once; a snapshot a forget kept is not involved."""
    found: list[str] = []
    stack = [doc]
    while stack:
        item = stack.pop(0)
        if isinstance(item, dict):
            if item.get("keep") is True and item.get("removed") is False:
                continue
            stack.extend(v for k, v in item.items() if k not in _NOT_SNAPSHOTS)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and _ID.match(item) and item not in found:
            found.append(item)
    return found


def _counts(doc: dict[str, Any]) -> dict[str, int]:
    return {
        k: v
        for k, v in doc.items()
        if type(v) is int and k.startswith(("files", "bytes", "data_", "snapshots"))
    }


def _cause() -> dict[str, str]:
    try:
        doc = json.loads(os.environ.get(CAUSE_ENV, "") or "{}")
    except ValueError:
        return {}
    return {k: str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}


def audited(operation: str, func: Handler) -> Handler:
    """``func`` that appends an audit record to the repository it opened when it ends, ok
    or failed (not with ``--dry-run``, which changes nothing). A record that cannot be
    written is a warning, never the command's failure."""

    def run(args: argparse.Namespace, out: Output) -> int:
        summaries: list[dict[str, Any]] = []
        original = out.summary

        def summary(doc: dict[str, Any]) -> None:
            summaries.append(doc)
            original(doc)

        out.summary = summary  # type: ignore[method-assign]
        opened = context.OPENED.set([])
        started, code, error = _now(), 1, ""
        try:
            code = func(args, out)
            return code
        except BaseException as exc:
            error = type(exc).__name__ if isinstance(exc, KeyboardInterrupt) else str(exc)
            raise
        finally:
            repos = context.OPENED.get()
            context.OPENED.reset(opened)
            out.summary = original  # type: ignore[method-assign]
            doc = summaries[-1] if summaries else {}
            if repos and not getattr(args, "dry_run", False):  # a dry run changes nothing
                _write(out, repos[0], operation, started, code, error or doc.get("error"), doc)

    run.__name__ = getattr(func, "__name__", operation)
    return run


def _write(
    out: Output,
    repo: Any,
    operation: str,
    started: str,
    code: int,
    error: object,
    doc: dict[str, Any],
) -> None:
    from safehold.repo.audit import AuditRecord, write_record

    record = AuditRecord(
        operation=operation,
        started=started,
        ended=_now(),
        result="ok" if code == 0 and not error else "failed",
        host=socket.gethostname(),
        user=_user(),
        error=str(error or "")[:200] if code or error else "",
        cause=_cause(),
        snapshots=[] if operation.startswith("key ") else _snapshot_ids(doc),  # ids of keys
        counts=_counts(doc),
    )
    try:
        write_record(repo.storage, repo.aead, record)
    except Exception as exc:  # noqa: BLE001 - a missing record must not fail the command
        out.warn(f"cannot write the audit record of {operation}: {exc}")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser("audit", parents=[common], help="list the repository's audit records")
    p.add_argument(
        "--since", default=None, metavar="TIME", help="only records that ended at or after TIME"
    )
    p.set_defaults(func=list_audit)


def list_audit(args: argparse.Namespace, out: Output) -> int:
    from safehold.repo.audit import read_records

    repo = context.open_repo(args, load_index=False)
    since = context.parse_time_option(args.since, "--since")
    errors: dict[str, str] = {}
    records = [
        r
        for r in read_records(repo.storage, repo.aead, errors)
        if since is None or r.datetime >= since
    ]
    for name, message in errors.items():
        out.warn(f"{name}: {message} (run 'safehold verify')")
    if getattr(args, "json", False):
        out.summary({"ok": True, "records": [_doc(r) for r in records]})
        return 0
    table = out.new_table("time", "operation", "result", "host", "identity", "snapshots")
    for r in records:
        table.add_row(
            r.datetime.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
            r.operation,
            r.result + (f" ({r.error})" if r.error else ""),
            r.host,
            r.user
            + (
                f" {r.cause.get('kind', '')} {r.cause.get('namespace', '')}/"
                f"{r.cause.get('name', '')}"
                if r.cause
                else ""
            ),
            " ".join(s[:8] for s in r.snapshots),
        )
    out.table(table)
    return 0


def _doc(record: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(record)
