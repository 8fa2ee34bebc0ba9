"""Which objects a resource export or apply takes: types, namespaces, names, labels.

Resource types are matched the way people write them: ``deployments.apps`` (the API's
``plural.group``), ``deployments``, ``Deployment`` or a short name (``deploy``). Label
selectors use the API's query form (``app=web,tier in (a,b),!legacy``) and are matched
here too, because a restore selects among manifests read from a snapshot, not from the
API server.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "LabelSelectorError",
    "Requirement",
    "matches_labels",
    "matches_type",
    "namespace_selected",
    "parse_selector",
]


class LabelSelectorError(ValueError):
    """A label selector that does not parse; the message says where."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        return not present or value not in self.values  # "!=", "notin"


_SET = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ = re.compile(r"^\s*([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s*$")


def _terms(text: str) -> list[str]:
    """Split at the commas outside parentheses."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [t for t in out if t.strip()]


def parse_selector(text: str | None) -> list[Requirement]:
    """``a=b,c!=d,e in (f,g),h notin (i),j,!k`` as requirements (all must match)."""
    if not text:
        return []
    reqs = []
    for term in _terms(text):
        if m := _SET.match(term):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append(Requirement(m.group(1), m.group(2), values))
        elif m := _EQ.match(term):
            op = "!=" if m.group(2) == "!=" else "="
            reqs.append(Requirement(m.group(1), op, frozenset([m.group(3)])))
        elif m := _EXISTS.match(term):
            reqs.append(Requirement(m.group(2), "!exists" if m.group(1) else "exists"))
        else:
            raise LabelSelectorError(
                f"label selector {text!r}: cannot read {term.strip()!r} (write key=value, "
                "key!=value, key in (a,b), key notin (a,b), key or !key)"
            )
    return reqs


def matches_labels(requirements: Iterable[Requirement], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in requirements)


def matches_type(
    patterns: Iterable[str], *, plural: str, group: str, kind: str, short_names: Iterable[str] = ()
) -> bool:
    """Whether any of ``patterns`` names this resource type (case-insensitive)."""
    names = {plural.lower(), kind.lower(), *(s.lower() for s in short_names)}
    full = {f"{n}.{group}".lower() for n in names} if group else set(names)
    if not group:
        full |= {f"{n}.core" for n in names}
    for p in patterns:
        p = p.strip().lower()
        if p in full or ("." not in p and p in names):
            return True
    return False


def namespace_selected(namespace: str, include: Iterable[str], exclude: Iterable[str]) -> bool:
    """Include (globs; empty or ``*`` means all) minus exclude (globs)."""
    inc = list(include)
    if inc and not any(fnmatch.fnmatchcase(namespace, p) for p in inc):
        return False
    return not any(fnmatch.fnmatchcase(namespace, p) for p in exclude)
