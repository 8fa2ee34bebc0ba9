"""The include/exclude pattern language (engine.patterns), rule by rule, and against an
independent reference matcher on random paths and patterns."""

from __future__ import annotations

import fnmatch
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safehold.engine.patterns import PathFilter, PatternError, check_pattern, compile_patterns


def _keeps(path: str, *, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> bool:
    return PathFilter(include, exclude).keeps(path)


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        # a name without "/" matches at any depth
        ("*.tmp", ["x.tmp", "a/x.tmp", "a/b/.tmp"], ["x.tmpl", "x.tmp.gz"]),
        ("node_modules", ["node_modules", "a/node_modules", "a/b/node_modules"], ["node_modulesx"]),
        # "*" and "?" stay within one name
        ("a/*.log", ["a/x.log", "a/.log"], ["a/b/x.log", "x.log", "b/a/x.log"]),
        ("a/?.log", ["a/x.log"], ["a/xy.log", "a/.x.log"]),
        # a pattern with "/" is anchored; a leading "/" anchors a single name
        ("cache/x", ["cache/x"], ["a/cache/x"]),
        ("/tmp", ["tmp"], ["a/tmp"]),
        # a trailing "/" is ignored
        ("build/", ["build", "a/build"], ["buildx"]),
        # "**" as a name: any number of names; trailing "/**": everything under
        ("a/**/b", ["a/b", "a/x/b", "a/x/y/b"], ["b", "x/a/b", "a/bb"]),
        ("**/b", ["b", "x/b", "x/y/b"], ["bb"]),
        ("cache/**", ["cache/x", "cache/x/y"], ["cache", "a/cache/x"]),
        ("**", ["a", "a/b"], []),
        ("a**b", ["ab", "axxb"], ["a/b", "ax/xb"]),
        # everything else is literal
        ("[ab].txt", ["[ab].txt"], ["a.txt"]),
        ("a+b(c)", ["a+b(c)"], ["aab(c)"]),
    ],
)
def test_what_a_pattern_matches(pattern: str, matches: list[str], misses: list[str]) -> None:
    f = PathFilter(exclude=[pattern])
    for path in matches:
        assert f.excluded(path), (pattern, path)
    for path in misses:
        assert not f.excluded(path), (pattern, path)


def test_an_excluded_directory_takes_everything_under_it() -> None:
    assert not _keeps("a/node_modules/x/y.js", exclude=("node_modules",))
    assert not _keeps("cache/x/y", exclude=("cache/**",))
    assert _keeps("cache", exclude=("cache/**",))  # the directory itself stays (empty)
    f = PathFilter(exclude=["cache/**", "*.tmp"])
    assert f.excludes_all_under("cache")
    assert not f.excludes_all_under("a/cache")
    assert not f.excluded("cache")


def test_include_keeps_matches_and_everything_under_an_included_directory() -> None:
    inc = ("docs", "src/**/*.py")
    assert _keeps("docs/a/b.md", include=inc)
    assert _keeps("x/docs/b.md", include=inc)  # "docs" has no "/": any depth
    assert _keeps("src/a.py", include=inc)
    assert _keeps("src/x/y/z.py", include=inc)
    assert not _keeps("src/a.txt", include=inc)
    assert not _keeps("a.py", include=inc)
    f = PathFilter(include=inc)
    assert f.may_include_under("src")
    assert f.may_include_under("src/x/y")
    assert f.may_include_under("anything")  # "docs" may be anywhere
    anchored = PathFilter(include=["src/lib/*.py"])
    assert anchored.may_include_under("src")
    assert anchored.may_include_under("src/lib")
    assert not anchored.may_include_under("docs")
    assert not anchored.may_include_under("src/other")
    assert not anchored.may_include_under("src/lib/deeper")


def test_exclude_wins_over_include() -> None:
    assert not _keeps("src/gen/a.py", include=("src/**",), exclude=("src/gen/**",))
    assert not _keeps("src/a.pyc", include=("src/**",), exclude=("*.pyc",))
    assert _keeps("src/a.py", include=("src/**",), exclude=("*.pyc",))


@pytest.mark.parametrize(
    ("pattern", "why"),
    [("", "empty"), ("/", "empty"), ("a//b", "empty name"), ("./a", "'.'"), ("a/../b", "'..'")],
)
def test_bad_patterns_are_refused_with_their_text(pattern: str, why: str) -> None:
    with pytest.raises(PatternError, match=re.escape(repr(pattern))) as info:
        check_pattern(pattern)
    assert why in str(info.value)
    with pytest.raises(PatternError, match="exclude pattern"):
        compile_patterns([], ["ok", pattern])


def test_no_patterns_compile_to_no_filter() -> None:
    assert compile_patterns([], []) is None
    assert compile_patterns(["a"], []) is not None


# ----------------------------------------------------------------- against a reference
_NAMES = st.sampled_from(["a", "b", "ab", ".h", "x.tmp", "y.py"])
_PATHS = st.lists(_NAMES, min_size=1, max_size=5).map("/".join)
_PARTS = st.sampled_from(["a", "b", "*", "?", "**", "*.tmp", "a*", ".h", "y.py"])
_PATTERNS = st.tuples(st.booleans(), st.lists(_PARTS, min_size=1, max_size=4)).map(
    lambda t: ("/" if t[0] else "") + "/".join(t[1])
)


def _name_match(name: str, part: str) -> bool:
    # fnmatch without its character classes: no pattern here holds "[".
    return fnmatch.fnmatchcase(name, part.replace("**", "*") if part != "**" else "*")


def _ref_match(names: list[str], parts: list[str]) -> bool:
    """Recursive matching of names against pattern names, gitignore-style ``**``."""
    if not parts:
        return not names
    if parts[0] == "**":
        if len(parts) == 1:
            return len(names) >= 1
        return any(_ref_match(names[i:], parts[1:]) for i in range(len(names) + 1))
    return bool(names) and _name_match(names[0], parts[0]) and _ref_match(names[1:], parts[1:])


def _reference(path: str, pattern: str) -> bool:
    anchored = "/" in pattern.rstrip("/")
    parts = pattern.strip("/").split("/")
    if not anchored and parts != ["**"]:
        parts = ["**", *parts]
    return _ref_match(path.split("/"), parts)


@settings(max_examples=400, deadline=None)
@given(path=_PATHS, pattern=_PATTERNS)
def test_the_regexes_agree_with_a_reference_matcher(path: str, pattern: str) -> None:
    assert PathFilter(exclude=[pattern]).excluded(path) == _reference(path, pattern)


@settings(max_examples=300, deadline=None)
@given(path=_PATHS, pattern=_PATTERNS)
def test_a_directory_that_may_hold_a_match_is_never_pruned(path: str, pattern: str) -> None:
    """Walking prunes a directory that cannot hold an included path: every directory
    above a matching path must say it may."""
    f = PathFilter(include=[pattern])
    if not f.included(path):
        return
    names = path.split("/")
    for i in range(1, len(names)):
        above = "/".join(names[:i])
        assert f.includes_all_under(above) or f.may_include_under(above), (above, pattern)


@settings(max_examples=300, deadline=None)
@given(path=_PATHS, pattern=_PATTERNS)
def test_everything_under_a_directory_is_excluded_exactly_when_the_reference_says(
    path: str, pattern: str
) -> None:
    """A directory is skipped whole when it matches, or matches what comes before a
    trailing ``/**``; then every path under it matches too."""
    f = PathFilter(exclude=[pattern])
    trailing = pattern.rstrip("/").endswith("/**") and pattern.strip("/") != "**"
    before = pattern.rstrip("/")
    while before.endswith("/**"):  # "a/**/**" is "a/**"
        before = before[: -len("/**")]
    before = "/" + before.lstrip("/")  # what was anchored stays anchored
    expected = _reference(path, pattern) or (trailing and _reference(path, before))
    assert f.excludes_all_under(path) == expected, (path, pattern)
    if expected and not _reference(path, pattern):
        assert _reference(f"{path}/x", pattern)  # the directory stays; all it holds goes


@settings(max_examples=300, deadline=None)
@given(
    path=_PATHS, include=st.lists(_PATTERNS, max_size=2), exclude=st.lists(_PATTERNS, max_size=2)
)
def test_a_file_is_kept_exactly_as_the_rules_say(
    path: str, include: list[str], exclude: list[str]
) -> None:
    """Kept: no path from its top directory down to itself matches an exclude pattern, and,
    with include patterns, one of those paths matches an include pattern."""
    names = path.split("/")
    chain = ["/".join(names[:i]) for i in range(1, len(names) + 1)]
    left_out = any(_reference(p, x) for p in chain for x in exclude)
    brought = not include or any(_reference(p, i) for p in chain for i in include)
    assert PathFilter(include, exclude).keeps(path) == (brought and not left_out)
