"""``safehold validate FILE...``: check Safehold manifests before they are applied.

The apiserver checks custom resources against the CRDs' schemas, but only as far as a
schema can say: a misspelt optional field is pruned silently (and on Kubernetes 1.20,
``kubectl`` does not warn), and checks that span fields (a schedule's time zone, a
retention rule, a location that needs a bucket) only run in the controller, after the
apply. This command runs the controller's own validation (:func:`validate_object`) on
files, so that CI or a GitOps pipeline can refuse a bad manifest before it reaches a
cluster. Documents of other API groups (Secrets, Deployments ...) are skipped.
"""

from __future__ import annotations

import argparse
import sys
from argparse import Namespace
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safehold.cli import exitcodes
from safehold.cli.output import Output

__all__ = ["register", "validate"]

_GROUP = "safehold.io/"
_SUFFIXES = (".yaml", ".yml", ".json")


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """``safehold validate`` (it opens no repository: not ``common``'s options)."""
    p = sub.add_parser(
        "validate",
        help="check Safehold manifests (files, directories or - for stdin) before applying them",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="FILE",
        help="a YAML or JSON file (several documents allowed), a directory (its *.yaml, *.yml "
        "and *.json files, recursively) or - for stdin",
    )
    p.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,  # also given before the command (a global option)
        help="print one JSON summary line on stdout",
    )
    p.set_defaults(func=validate)


def _files(paths: list[str]) -> Iterator[tuple[str, str | OSError]]:
    """(name, text or the error reading it) for every file the arguments name."""
    for arg in paths:
        if arg == "-":
            yield "<stdin>", sys.stdin.read()
            continue
        path = Path(arg)
        found = (
            sorted(p for p in path.rglob("*") if p.suffix in _SUFFIXES and p.is_file())
            if path.is_dir()
            else [path]
        )
        for file in found:
            try:
                yield str(file), file.read_text()
            except OSError as exc:
                yield str(file), exc


def _documents(doc: Any) -> Iterator[Any]:
    """A document, or the items of a ``kind: List`` (as kubectl accepts them)."""
    if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
        yield from doc["items"]
    elif doc is not None:
        yield doc


def validate(args: Namespace, out: Output) -> int:
    import yaml  # only this command and the resource commands read YAML

    # pydantic and the models: loaded by this command, not by every safehold command
    from safehold.api import FieldError, validate_object

    counts = {"documents": 0, "valid": 0, "invalid": 0, "skipped": 0}
    problems: list[dict[str, str]] = []

    def problem(file: str, what: str, field: str, message: str) -> None:
        problems.append({"file": file, "resource": what, "field": field, "message": message})
        out.print(f"{file}: {what}: {field}: {message}" if field else f"{file}: {message}")

    for name, text in _files(args.paths):
        if isinstance(text, OSError):
            counts["invalid"] += 1
            problem(name, "", "", f"cannot read: {text.strerror or text}")
            continue
        try:
            docs = [d for raw in yaml.safe_load_all(text) for d in _documents(raw)]
        except yaml.YAMLError as exc:
            counts["invalid"] += 1
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            problem(name, "", "", f"not valid YAML{where}: {getattr(exc, 'problem', exc)}")
            continue
        for doc in docs:
            counts["documents"] += 1
            api_version = str(doc.get("apiVersion", "")) if isinstance(doc, dict) else ""
            kind = str(doc.get("kind", "?")) if isinstance(doc, dict) else "?"
            meta = doc.get("metadata") if isinstance(doc, dict) else None
            meta = meta if isinstance(meta, dict) else {}
            named = str(meta.get("name") or meta.get("generateName") or "")
            what = f"{kind}/{named or '(no name)'}"
            if isinstance(doc, dict) and not api_version.startswith(_GROUP):
                counts["skipped"] += 1
                continue
            errors = validate_object(doc)
            if not named:
                errors = [*errors, FieldError("metadata.name", "is required (or generateName)")]
            if errors:
                counts["invalid"] += 1
                for error in errors:
                    problem(name, what, error.path, error.message)
            else:
                counts["valid"] += 1
                out.print(f"{name}: {what}: valid")
    ok = counts["invalid"] == 0
    out.print(
        f"{counts['valid']} valid, {counts['invalid']} invalid, "
        f"{counts['skipped']} skipped (not Safehold resources)"
    )
    code = exitcodes.OK if ok else exitcodes.INVALID
    out.summary({"ok": ok, **counts, "errors": problems, "exit_code": code})
    return code
