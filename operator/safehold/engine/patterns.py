"""Include and exclude patterns: which paths under a backed-up directory are stored.

A pattern is matched against a path relative to the backed-up directory, with ``/``
between its names (``cache/x.tmp``); the directory itself is never matched. The
language (docs/cli.md, "Include and exclude patterns"):

* ``*`` matches any run of characters within one name, ``?`` one character; neither
  matches ``/``; a leading ``.`` is not special. Every other character matches itself.
* ``**`` as a whole name matches any number of names: ``a/**/b`` matches ``a/b`` and
  ``a/x/y/b``; a trailing ``/**`` matches everything under a directory (``cache/**``:
  what is in ``cache``, not ``cache`` itself); ``**`` elsewhere in a name acts as ``*``.
* A pattern without ``/`` matches a name at any depth (``*.tmp``, ``node_modules``);
  a pattern with ``/`` is anchored at the backed-up directory (``cache/**``,
  ``logs/*.gz``). A leading ``/`` anchors a single name (``/tmp``); a trailing ``/``
  is ignored.
* A pattern that matches a directory matches all of it: excluding it leaves it out
  without reading it; including it stores all it holds.

Each pattern list compiles once into one regular expression.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = ["PathFilter", "PatternError", "check_pattern", "compile_patterns"]


class PatternError(ValueError):
    """A pattern that cannot be used; the message names it."""


def _components(pattern: str) -> tuple[list[str], bool]:
    """The pattern's names (``**`` runs merged) and whether it is anchored."""
    if not pattern or not pattern.strip("/"):
        raise PatternError(f"{pattern!r} is empty: give a name or a path such as '*.tmp'")
    if "\0" in pattern:
        raise PatternError(f"{pattern!r} holds a NUL character")
    anchored = "/" in pattern.rstrip("/")
    parts = pattern.strip("/").split("/")
    for part in parts:
        if part == "":
            raise PatternError(f"{pattern!r} has an empty name ('//')")
        if part in (".", ".."):
            raise PatternError(
                f"{pattern!r}: names '.' and '..' never match (patterns are relative "
                "to the backed-up directory, without them)"
            )
    merged: list[str] = []
    for part in parts:
        if part == "**" and merged and merged[-1] == "**":
            continue
        merged.append(part)
    if not anchored and merged != ["**"]:
        merged = ["**", *merged]
    return merged, anchored


def _name(part: str) -> str:
    out: list[str] = []
    for ch in part:
        if ch == "*":
            if not out or out[-1] != "[^/]*":
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(ch))
    return "".join(out)


def _regex(parts: Sequence[str]) -> str:
    """A regular expression for the paths the names ``parts`` match (for fullmatch)."""
    out = ""
    sep = ""  # what goes before the next name: "/" once a name was written
    last = len(parts) - 1
    for i, part in enumerate(parts):
        if part == "**":
            if i == last:
                out += ".+" if i == 0 else "/.+"
            else:
                out += sep + "(?:[^/]+/)*"
                sep = ""
            continue
        out += sep + _name(part)
        sep = "/"
    return out


def check_pattern(pattern: str) -> str:
    """``pattern`` when it is usable, else :class:`PatternError` saying why."""
    _components(pattern)
    return pattern


class _Compiled:
    """One list of patterns: what a path matches, and what a directory may hold."""

    def __init__(self, patterns: Iterable[str]) -> None:
        full: list[str] = []
        below: list[str] = []  # directories everything under which matches
        prefix: list[str] = []  # directories under which something may match
        for pattern in patterns:
            parts, _ = _components(pattern)
            full.append(_regex(parts))
            if len(parts) > 1 and parts[-1] == "**":
                below.append(_regex(parts[:-1]))
            for j in range(1, len(parts)):
                prefix.append(_regex(parts[:j]))
            if "**" in parts:
                prefix.append(_regex(parts[: parts.index("**") + 1]))
        self.full = _join(full)
        self.below = _join(below)
        self.prefix = _join(prefix)

    def matches(self, path: str) -> bool:
        return self.full is not None and self.full.fullmatch(path) is not None

    def covers(self, path: str) -> bool:
        """Everything under directory ``path`` matches (it matches, or a trailing ``/**``)."""
        return self.matches(path) or (
            self.below is not None and self.below.fullmatch(path) is not None
        )

    def may_hold(self, path: str) -> bool:
        """Something under directory ``path`` may match."""
        return self.prefix is not None and self.prefix.fullmatch(path) is not None


def _join(regexes: list[str]) -> re.Pattern[str] | None:
    unique = list(dict.fromkeys(regexes))
    if not unique:
        return None
    return re.compile("|".join(f"(?:{r})" for r in unique), re.DOTALL)


class PathFilter:
    """Include and exclude patterns, compiled. Paths are relative, ``/``-separated.

    Exclude wins over include; without include patterns everything not excluded is kept.
    """

    def __init__(self, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> None:
        self.include_patterns = list(include)
        self.exclude_patterns = list(exclude)
        self._include = _Compiled(self.include_patterns)
        self._exclude = _Compiled(self.exclude_patterns)
        self.has_include = bool(self.include_patterns)

    def excluded(self, path: str) -> bool:
        """``path`` (a file or a directory with all it holds) is left out."""
        return self._exclude.matches(path)

    def excludes_all_under(self, path: str) -> bool:
        """Everything under directory ``path`` is left out (a trailing ``/**`` exclude)."""
        return self._exclude.covers(path)

    def included(self, path: str) -> bool:
        """``path`` matches an include pattern (True without include patterns)."""
        return not self.has_include or self._include.matches(path)

    def includes_all_under(self, path: str) -> bool:
        """Everything under directory ``path`` is included (unless excluded)."""
        return not self.has_include or self._include.covers(path)

    def may_include_under(self, path: str) -> bool:
        """Something under directory ``path`` may match an include pattern."""
        return not self.has_include or self._include.may_hold(path)

    def keeps(self, path: str) -> bool:
        """Whether the file (not directory) ``path`` is stored, checking every directory
        above it too (for tests and tools; the backup decides as it walks)."""
        names = path.split("/")
        whole = False  # an including directory above: everything under it is included
        for i in range(1, len(names)):
            above = "/".join(names[:i])
            if self.excluded(above) or self.excludes_all_under(above):
                return False
            whole = whole or self.includes_all_under(above)
            if not whole and not self.may_include_under(above):
                return False
        if self.excluded(path):
            return False
        return whole or self.included(path)


def compile_patterns(include: Sequence[str], exclude: Sequence[str]) -> PathFilter | None:
    """A :class:`PathFilter`, or None when there are no patterns (the walk then checks nothing)."""
    for pattern in include:
        _check(pattern, "include")
    for pattern in exclude:
        _check(pattern, "exclude")
    if not include and not exclude:
        return None
    return PathFilter(include, exclude)


def _check(pattern: str, kind: str) -> None:
    try:
        check_pattern(pattern)
    except PatternError as exc:
        raise PatternError(f"{kind} pattern {exc}") from None
