"""What the CLI prints for people: the progress bar counts bytes in the units the summaries
use (KiB, MiB, GiB), not MB; long lists of problems end with how many more there were."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from safehold.cli.output import _RichProgress
from safehold.engine.progress import ProgressEvent


def test_the_bar_shows_binary_units_like_the_summaries() -> None:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=160)
    sink = _RichProgress("backup", console)
    sink.bar.auto_refresh = False
    with sink:
        update = sink.callback()
        for done in (0, 3 * 2**20, 6 * 2**20):
            update(ProgressEvent("backup", 1, 2, done, 12 * 2**20, 1.0, 0.0, None))
        sink.bar.refresh()
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.getvalue())
    assert "6.0/12.0 MiB" in shown
    assert not re.search(r"\d MB\b", shown)


def test_the_first_twenty_problems_are_shown_and_the_rest_announced(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from safehold.cli.output import Output

    out = Output(json_mode=False)
    out.warn_first([f"/data/f{i:02}: Permission denied" for i in range(30)], "files unread")
    shown = capsys.readouterr().err
    assert shown.count("Permission denied") == 20
    assert "/data/f19" in shown
    assert "/data/f20" not in shown
    assert "... and 10 more: 30 files unread in all ('--json' lists every one)" in shown
    out.warn_first(["only one"], "files unread")
    assert "more" not in capsys.readouterr().err
