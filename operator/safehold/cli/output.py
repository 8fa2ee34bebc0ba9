"""What the CLI prints: the JSON summary line, progress as JSON lines or a rich bar.

With ``--json`` stdout holds exactly one JSON object, on its last line (the
operator copies it into a pod's termination message, so it stays under 4 KiB),
and progress events go to stderr as JSON lines. On a terminal without
``--json``, progress is a rich bar on stderr. rich is imported only when something is
printed through it: a Job's ``--json --quiet`` command never loads it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from safehold.engine import ProgressEvent

__all__ = ["MAX_SUMMARY", "Output", "fit_summary"]

MAX_SUMMARY = 4000


def fit_summary(doc: dict[str, Any]) -> str:
    """Encode ``doc`` as one line under 4 KiB, trimming long lists if it has to."""
    line = json.dumps(doc, sort_keys=True, default=str)
    if len(line.encode()) <= MAX_SUMMARY:
        return line
    trimmed = dict(doc)
    for key, value in doc.items():
        if isinstance(value, list) and len(value) > 3:
            trimmed[key] = value[:3]
            trimmed[f"{key}_truncated"] = len(value)
        if isinstance(value, dict) and len(json.dumps(value, default=str)) > 1000:
            trimmed[key] = dict(list(value.items())[:3])
            trimmed[f"{key}_truncated"] = len(value)
    line = json.dumps(trimmed, sort_keys=True, default=str)
    if len(line.encode()) > MAX_SUMMARY:
        keep = {k: v for k, v in trimmed.items() if not isinstance(v, (list, dict))}
        keep["truncated"] = True
        line = json.dumps(keep, sort_keys=True, default=str)
    return line


class Output:
    def __init__(
        self,
        *,
        json_mode: bool,
        quiet: bool = False,
        stdout: TextIO | None = None,
        termination_log: str | None = None,
    ):
        self.json = json_mode
        self.termination_log = termination_log
        self.quiet = quiet
        self.stdout = stdout or sys.stdout
        self.stderr = sys.stderr

    @cached_property
    def console(self) -> Console:
        return _console(self.stdout)

    @cached_property
    def err_console(self) -> Console:
        return _console(self.stderr)

    def new_table(self, *headers: str) -> Table:
        """A table with these column headers, for :meth:`table`."""
        from rich.table import Table

        return Table(*headers)

    def print(self, text: str = "") -> None:
        """Human output; suppressed with --json (stdout then holds only the summary)."""
        if not self.json and not self.quiet:
            self.console.print(text, markup=False)

    def table(self, renderable: Any) -> None:
        if not self.json:
            self.console.print(renderable)

    def summary(self, doc: dict[str, Any]) -> None:
        if self.json:
            self.stdout.write(fit_summary(doc) + "\n")
            self.stdout.flush()
        if self.termination_log:
            # The pod's termination message: how the operator learns the result without
            # any API rights in the pod. Best effort: the summary is also on stdout.
            try:
                with open(self.termination_log, "w") as f:
                    f.write(fit_summary(doc) + "\n")
            except OSError as exc:
                self.warn(f"cannot write the termination log {self.termination_log}: {exc}")

    def error(self, message: str) -> None:
        self.err_console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)

    def warn(self, message: str) -> None:
        self.err_console.print(f"[yellow]warning:[/] {message}", markup=True, highlight=False)

    def progress(self, title: str) -> _ProgressSink:
        if self.quiet:
            return _ProgressSink()
        if self.json:
            return _JsonProgress(self.stderr)
        if not self.stderr.isatty():
            return _ProgressSink()
        return _RichProgress(title, self.err_console)


def _console(stream: TextIO) -> Console:
    from rich.console import Console

    # Off a terminal (logs, pods) lines are not wrapped at 80 columns.
    return Console(
        file=stream, highlight=False, soft_wrap=True, width=None if stream.isatty() else 200
    )


class _ProgressSink:
    """No progress output (not a terminal, or --quiet)."""

    def callback(self) -> Callable[[ProgressEvent], None] | None:
        return None

    def __enter__(self) -> _ProgressSink:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class _JsonProgress(_ProgressSink):
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def callback(self) -> Callable[[ProgressEvent], None]:
        def emit(event: ProgressEvent) -> None:
            self.stream.write(json.dumps(event.to_dict()) + "\n")
            self.stream.flush()

        return emit


class _RichProgress(_ProgressSink):
    def __init__(self, title: str, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.bar = Progress(
            TextColumn(f"[bold]{title}[/]"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[files]} files"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.task = self.bar.add_task(title, total=None, files=0)

    def __enter__(self) -> _RichProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def callback(self) -> Callable[[ProgressEvent], None]:
        def update(event: ProgressEvent) -> None:
            self.bar.update(
                self.task,
                completed=event.bytes_done,
                total=event.bytes_total,
                files=event.files_done,
            )

        return update
