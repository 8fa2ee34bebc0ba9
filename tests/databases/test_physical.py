"""WAL positions, and where a restore may write a data directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from safehold.engine.databases.physical import format_lsn, parse_lsn, record_end

BLOCK = 8192
SEGMENT = 16 * 1024 * 1024


@pytest.mark.parametrize(
    ("insert", "end"),
    [
        ("0/40000E0", "0/40000E0"),  # inside a page: where the last record ended
        ("0/4002018", "0/4002000"),  # past a page's short header: the page's start
        ("0/5000028", "0/5000000"),  # past a segment's long header: the segment's start
        ("0/4000028", "0/4000000"),  # (the long header is 40 bytes, 0x28)
        ("0/4002030", "0/4002030"),  # a record ended 24 bytes after a page header
        ("1/28", "1/0"),  # a segment past 4 GiB
        ("1/2018", "1/2000"),
    ],
)
def test_record_end_steps_back_over_a_page_header_nothing_follows(insert: str, end: str) -> None:
    assert format_lsn(record_end(parse_lsn(insert), BLOCK, SEGMENT)) == end


def test_a_data_directory_is_refused_where_the_server_could_not_own_it(tmp_path: Path) -> None:
    """Before anything is written: a directory holding files, and, for a restore that cannot
    give files away (not root), one that belongs to another user (a claim's root): the
    message says what to do instead."""
    from safehold.engine.databases.client import DumpError
    from safehold.engine.databases.pitr import check_target

    theirs = tmp_path / "claim"
    theirs.mkdir()
    os.chown(theirs, os.geteuid() + 1, -1)  # another user's (the tests run as root)
    with pytest.raises(DumpError, match=r"belongs to uid \d+.*target\.path, e\.g\. pgdata"):
        check_target(str(theirs), keep_owners=False)
    check_target(str(theirs), keep_owners=True)  # root gives the files to the server later
    check_target(str(theirs / "pgdata"), keep_owners=False)  # a new directory inside: ours
    (theirs / "old").write_text("x")
    with pytest.raises(DumpError, match="not an empty directory"):
        check_target(str(theirs), keep_owners=True)
    assert (theirs / "old").read_text() == "x"
