"""Which entries of a snapshot a restore writes: ``--include`` and ``--exclude`` patterns.

The patterns are the backup's (:mod:`safehold.engine.patterns`, docs/cli.md), matched against
the path inside the snapshot, names joined by ``/`` (``data/docs/a.txt``); written as
``safehold ls`` shows it (``/data/docs/a.txt``) a path is anchored at the snapshot's root, as
is any pattern with a ``/`` in it (``./data/x`` is ``/data/x``); a pattern of one name without
``/`` (``*.txt``, ``hello.txt``) matches that name at any depth. An included directory is
restored with all it holds; the directories that lead to an included entry are restored too,
with their metadata, and no other directory is created. Exclude wins over include.

:func:`plan_selection` walks the snapshot's trees once before anything is written (every part
of a multi-process restore then holds the same :class:`Selection`): it finds the directories
that lead to something selected and the include patterns that match nothing. A selection that
matches nothing raises :class:`NothingSelected`, naming the paths closest to each pattern.
"""

from __future__ import annotations

import difflib
import heapq
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from safehold.engine.patterns import (
    PathFilter,
    _Compiled,
    _components,
    _name,
    compile_patterns,
)
from safehold.repo import CorruptObject, Repository

__all__ = ["NothingSelected", "Selection", "Unmatched", "normalize_pattern", "plan_selection"]

#: Entries the search for close paths looks at, at most (only after a pattern matched nothing).
_HINT_ENTRIES = 200_000
_HINTS = 5
_CLOSE = 0.6  # how similar (difflib's ratio) a name must be to the pattern's to be shown


class NothingSelected(ValueError):
    """The include and exclude patterns select no entry of the snapshot; the message names
    the closest paths that exist (``unmatched``: the include patterns that matched nothing,
    with them)."""

    def __init__(self, message: str, unmatched: list[Unmatched] | None = None) -> None:
        super().__init__(message)
        self.unmatched = unmatched or []


def normalize_pattern(pattern: str) -> str:
    """A restore pattern in the backup's language: ``./x`` (a path typed relative to the
    snapshot's root) is ``/x``."""
    while pattern.startswith("./"):
        pattern = "/" + pattern[2:].lstrip("/")
    return pattern


@dataclass
class Unmatched:
    """An include pattern that matched nothing, and the paths nearest to it."""

    pattern: str
    closest: list[str] = field(default_factory=list)  # as 'safehold ls' shows them
    exists_up_to: str = ""  # the deepest directory a path-like pattern leads into
    holds: list[str] = field(default_factory=list)  # the first names that directory holds

    def lines(self) -> list[str]:
        out = [f"--include {self.pattern!r} matches nothing in the snapshot"]
        if self.closest:
            out.append("closest paths: " + ", ".join(self.closest))
        if self.exists_up_to:
            holds = ", ".join(self.holds) + (", ..." if len(self.holds) >= 8 else "")
            out.append(
                f"the pattern matches as far as {self.exists_up_to}, which holds: "
                + (holds or "nothing")
            )
        return out

    def text(self) -> str:
        """On one line (a warning)."""
        return "; ".join(self.lines())


@dataclass
class Selection:
    """The compiled patterns, and what the walk over the snapshot found."""

    filter: PathFilter
    #: directories that lead to a selected entry (and are not themselves included)
    needed: set[str] = field(default_factory=set)
    #: include patterns that matched nothing, each with the closest paths that exist
    unmatched: list[Unmatched] = field(default_factory=list)

    def decide(self, rel: str, is_dir: bool, whole: bool) -> tuple[bool, bool]:
        """For the entry ``rel`` of a directory (``whole``: everything under that directory
        is selected): (restore it, everything under it is selected). A directory is restored
        (and walked) when it is selected or leads to something selected."""
        f = self.filter
        if f.excluded(rel):
            return False, False
        if whole or f.included(rel):
            return True, is_dir
        if is_dir and rel in self.needed:
            return True, False
        return False, False

    def selects(self, rel: str) -> bool:
        """Whether the file ``rel`` is restored (checking the directories above it)."""
        f = self.filter
        names = rel.split("/")
        whole = False
        for i in range(1, len(names)):
            above = "/".join(names[:i])
            if f.excluded(above):
                return False
            whole = whole or f.included(above)
        return not f.excluded(rel) and (whole or f.included(rel))


def plan_selection(
    repo: Repository, tree_id: str, include: Sequence[str], exclude: Sequence[str]
) -> Selection | None:
    """The selection of ``include``/``exclude`` in the tree ``tree_id`` (None: no patterns,
    everything). Raises :class:`~safehold.engine.patterns.PatternError` for a bad pattern and
    :class:`NothingSelected` when nothing is selected."""
    include = [normalize_pattern(p) for p in include]
    exclude = [normalize_pattern(p) for p in exclude]
    path_filter = compile_patterns(include, exclude)
    if path_filter is None:
        return None
    selection = Selection(path_filter)
    each = [_Compiled([p]) for p in include]
    matched = [False] * len(include)
    open_patterns = len(include)
    selected = 0
    unreadable: list[str] = []
    # (tree, its path, walked only to find what the patterns match: selected whole, or
    # excluded)
    stack: list[tuple[str, str, bool]] = [(tree_id, "", False)]
    while stack:
        tree, rel, probe = stack.pop()
        try:
            nodes = repo.load_tree(tree)
        except CorruptObject:
            unreadable.append("/" + rel)  # the restore reports it too
            continue
        for node in nodes:
            name = node.get("name")
            if not isinstance(name, str) or not name or "/" in name:
                continue  # reported by the restore
            node_rel = f"{rel}/{name}" if rel else name
            is_dir = node.get("type") == "dir"
            if open_patterns:
                for i, done in enumerate(matched):
                    if not done and each[i].matches(node_rel):
                        matched[i] = True
                        open_patterns -= 1
            sub = node.get("subtree")
            if probe or path_filter.excluded(node_rel):  # only to find what patterns match
                if is_dir and isinstance(sub, str) and _may_match(each, matched, node_rel):
                    stack.append((sub, node_rel, True))
                continue
            if path_filter.included(node_rel):
                selected += 1
                _add_parents(selection.needed, rel)
                if (
                    is_dir
                    and isinstance(sub, str)
                    and not path_filter.excludes_all_under(node_rel)
                    and _may_match(each, matched, node_rel)
                ):
                    stack.append((sub, node_rel, True))
                continue
            if is_dir and isinstance(sub, str) and path_filter.may_include_under(node_rel):
                stack.append((sub, node_rel, False))
    unmatched = [p for p, done in zip(include, matched, strict=True) if not done]
    if unmatched:
        selection.unmatched = [_closest(repo, tree_id, p) for p in unmatched]
    if not selected:
        message = _nothing_message(include, exclude, selection.unmatched)
        if unreadable:
            message += "\ndirectories that cannot be read from the repository: " + ", ".join(
                unreadable[:5]
            )
        raise NothingSelected(message, selection.unmatched)
    return selection


def _may_match(each: list[_Compiled], matched: list[bool], rel: str) -> bool:
    return any(not done and c.may_hold(rel) for c, done in zip(each, matched, strict=True))


def _add_parents(needed: set[str], rel: str) -> None:
    while rel and rel not in needed:
        needed.add(rel)
        rel = rel.rpartition("/")[0]


def _nothing_message(
    include: Sequence[str], exclude: Sequence[str], unmatched: list[Unmatched]
) -> str:
    lines = []
    for item in unmatched:
        first, *rest = item.lines()
        lines.append(first)
        lines.extend("  " + line for line in rest)
    shown = " ".join(f"--exclude {p!r}" for p in exclude)
    if len(unmatched) < len(include):
        lines.append(f"everything the includes match is left out by {shown}")
    elif not include:
        lines.append(f"{shown} leave(s) out every path of the snapshot")
    lines.append(
        "nothing was restored (patterns match paths inside the snapshot as 'safehold ls' "
        "shows them, e.g. /data/dir/file or 'data/**/*.txt'; a name without '/' matches at "
        "any depth)"
    )
    return "\n".join(lines)


def _closest(repo: Repository, tree_id: str, pattern: str) -> Unmatched:
    """The paths nearest to ``pattern``. For a path (no ``**``): the paths whose every name
    is the pattern's or close to it, and the deepest directory the pattern leads into with
    the names it holds. With ``**``: the entries whose names are close to its last name."""
    parts, _ = _components(pattern)
    if "**" not in parts:
        return _closest_path(repo, tree_id, pattern, parts)[0]
    fixed = parts[: parts.index("**")]  # the names before the first **: where it looks
    if fixed:
        found, exact = _closest_path(repo, tree_id, pattern, fixed, whole=len(fixed) > 1)
        if not exact:
            return found
    last = next((p for p in reversed(parts) if p != "**"), "")
    best: list[tuple[float, str]] = []  # a min-heap of the best _HINTS
    for rel, name, _, is_dir in _entries(repo, tree_id, _Compiled([pattern])):
        score = _similarity(name, last)
        if score >= _CLOSE:
            item = (score, "/" + rel + ("/" if is_dir else ""))
            if len(best) < _HINTS:
                heapq.heappush(best, item)
            elif item > best[0]:
                heapq.heapreplace(best, item)
    out = Unmatched(pattern, closest=_best(best) if best else [])
    if not best:  # what there is where the pattern looks
        where = "/".join(fixed)
        out.holds = _holds(repo, tree_id, where)
        out.exists_up_to = "/" + where if where else "/ (the snapshot's root)"
    return out


def _holds(repo: Repository, tree_id: str, where: str) -> list[str]:
    """The first names the directory ``where`` holds (directories ending in ``/``)."""
    return [
        name + ("/" if d else "")
        for _, name, _, d in _entries(repo, tree_id, _Compiled([]), only=where, limit=8)
    ]


def _best(scored: list[tuple[float, str]]) -> list[str]:
    """The paths of the best scores, leaving out those clearly behind the best."""
    scored = sorted(scored, reverse=True)
    return [p for score, p in scored if score >= scored[0][0] - 0.12]


def _closest_path(
    repo: Repository, tree_id: str, pattern: str, parts: list[str], whole: bool = True
) -> tuple[Unmatched, bool]:
    """A beam search down the snapshot: at each depth the best :data:`_HINTS` paths whose
    names so far are each the pattern's name (``parts``) there or close to it; and whether
    a path matches every name (``whole``: say how far the pattern leads)."""
    # (mean score so far, path, subtree or None, is a directory)
    beam: list[tuple[float, str, str | None, bool]] = [(1.0, "", tree_id, True)]
    reached: list[tuple[float, str, str | None, bool]] = []
    deepest = ""  # the deepest directory whose path matches the pattern's first names
    for depth, want in enumerate(parts):
        step: list[tuple[float, str, str | None, bool]] = []
        for score, rel, sub, _ in beam:
            if sub is None:
                continue
            try:
                nodes = repo.load_tree(sub)
            except CorruptObject:
                continue
            for node in nodes:
                name = node.get("name")
                if not isinstance(name, str) or not name or "/" in name:
                    continue
                is_dir = node.get("type") == "dir"
                subtree = node.get("subtree")
                if (depth < len(parts) - 1 or not whole) and not is_dir:
                    continue  # a file cannot hold the rest of the path
                close = 1.0 if re.fullmatch(_name(want), name) else _similarity(name, want)
                if close < _CLOSE:
                    continue
                node_rel = f"{rel}/{name}" if rel else name
                if close == 1.0 and score == 1.0 and is_dir and depth < len(parts) - 1:
                    deepest = node_rel
                mean = (score * depth + close) / (depth + 1)
                step.append((mean, node_rel, subtree if isinstance(subtree, str) else None, is_dir))
        if not step:
            break
        beam = heapq.nlargest(_HINTS, step, key=lambda item: item[0])
        reached = beam
    shown = [(score, "/" + rel + ("/" if d else "")) for score, rel, _, d in reached]
    out = Unmatched(pattern, closest=_best(shown) if shown else [])
    exact = len(reached) > 0 and len(beam) == len(reached) and reached[0][0] == 1.0
    exact = exact and len(reached[0][1].split("/")) == len(parts)
    if len(parts) > 1 and whole:
        out.holds = _holds(repo, tree_id, deepest)
        out.exists_up_to = "/" + deepest if deepest else "/ (the snapshot's root)"
    return out, exact


def _similarity(name: str, want: str) -> float:
    """How close ``name`` is to the pattern's name ``want`` (0 to 1); for ``*.ext`` and
    ``prefix*``, how close the end or the start of ``name`` is to the fixed part."""
    fixed = want.strip("*")
    if fixed and "*" not in fixed and "?" not in fixed and fixed != want:
        if want.startswith("*") and not want.endswith("*"):
            name = name[-len(fixed) :]
        elif want.endswith("*") and not want.startswith("*"):
            name = name[: len(fixed)]
    want = want.replace("*", "").replace("?", "")
    return difflib.SequenceMatcher(None, name.lower(), want.lower()).ratio()


def _entries(
    repo: Repository,
    tree_id: str,
    matcher: _Compiled,
    only: str | None = None,
    limit: int = _HINT_ENTRIES,
) -> Iterator[tuple[str, str, int, bool]]:
    """(path, name, depth, is a directory) of the entries in the directories ``matcher``
    may match under (all of them from the root down), at most ``limit``; with ``only``, the
    entries of that one directory."""
    seen = 0
    target = only.split("/") if only else []
    stack: list[tuple[str, str, int]] = [(tree_id, "", 0)]
    while stack:
        tree, rel, depth = stack.pop()
        try:
            nodes = repo.load_tree(tree)
        except CorruptObject:  # the restore reports it
            continue
        for node in nodes:
            name = node.get("name")
            if not isinstance(name, str) or not name or "/" in name:
                continue
            node_rel = f"{rel}/{name}" if rel else name
            is_dir = node.get("type") == "dir"
            sub = node.get("subtree")
            if only is not None:
                if depth == len(target):
                    seen += 1
                    yield node_rel, name, depth, is_dir
                    if seen >= limit:
                        return
                elif name == target[depth] and is_dir and isinstance(sub, str):
                    stack.append((sub, node_rel, depth + 1))
                continue
            seen += 1
            yield node_rel, name, depth, is_dir
            if seen >= limit:
                return
            if is_dir and isinstance(sub, str) and matcher.may_hold(node_rel):
                stack.append((sub, node_rel, depth + 1))
