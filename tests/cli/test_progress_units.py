"""The progress bar counts bytes in the units the summaries use (KiB, MiB, GiB), not MB."""

from __future__ import annotations

import io
import re

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
