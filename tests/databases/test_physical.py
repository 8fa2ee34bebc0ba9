"""WAL positions: the end of the last record from PostgreSQL's insert position."""

from __future__ import annotations

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
