"""RestoreRequest ``spec.paths`` become the restore's ``--include`` patterns inside the
snapshot, where the volume is the top-level ``volume`` directory: the same meaning as a
volume source's include patterns, relative to the volume's root."""

from __future__ import annotations

import pytest

from safehold.controller.restorerequest import volume_pattern
from safehold.engine.patterns import PathFilter


@pytest.mark.parametrize(
    ("path", "pattern", "matches", "not_matches"),
    [
        ("dir/file", "volume/dir/file", ["volume/dir/file"], ["volume/x/dir/file", "dir/file"]),
        ("/top", "volume/top", ["volume/top"], ["volume/a/top"]),
        ("./a/b", "volume/a/b", ["volume/a/b"], []),
        ("*.conf", "volume/**/*.conf", ["volume/a.conf", "volume/d/e/b.conf"], ["other/a.conf"]),
        ("cache/", "volume/**/cache", ["volume/cache", "volume/x/cache"], ["volume/cachex"]),
        ("logs/**/*.gz", "volume/logs/**/*.gz", ["volume/logs/a/b.gz"], ["volume/x/logs/b.gz"]),
        ("/", "volume", ["volume"], []),
    ],
)
def test_paths_are_patterns_below_the_volume(
    path: str, pattern: str, matches: list[str], not_matches: list[str]
) -> None:
    assert volume_pattern(path) == pattern
    selection = PathFilter(include=[pattern])
    for rel in matches:
        assert selection.included(rel), rel
    for rel in not_matches:
        assert not selection.included(rel), rel
