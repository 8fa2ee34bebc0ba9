"""What the CLI prints: the JSON summary line, progress as JSON lines or a rich bar.

What is printed at which verbosity is decided here, and only here (:class:`Output`'s
``level``): ``-q`` (:data:`QUIET`) prints errors, warnings and what a command is asked
for (a listing, a file) but no progress and no summary lines; the default
(:data:`NORMAL`) adds progress on a terminal and the summary lines; ``-v``
(:data:`VERBOSE`) and ``-vv`` (:data:`VERY_VERBOSE`) add the engine's per-file events
(:data:`FILE_EVENTS`: backup's new and changed files, restore's written ones). ``--json``
output is the same at every level: the summary on stdout, progress on stderr unless ``-q``.

With ``--json`` stdout holds exactly one JSON object, complete, on its last line,
and progress events go to stderr as JSON lines. The copy written to ``--termination-log``
(a pod's termination message, which Kubernetes cuts at 4 KiB) is trimmed by
:func:`fit_summary` to whole items of its lists and mappings. On a terminal without
``--json``, progress is a rich bar on stderr. rich is imported only when something is
printed through it: a Job's ``--json --quiet`` command never loads it.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, TextIO

from safehold.units import human_size

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from safehold.engine import ProgressEvent

__all__ = [
    "FILE_EVENTS",
    "MAX_SUMMARY",
    "NORMAL",
    "QUIET",
    "VERBOSE",
    "VERY_VERBOSE",
    "Output",
    "fit_summary",
    "human_size",
]

MAX_SUMMARY = 4000

#: Verbosity levels: ``-q``, none, ``-v``, ``-vv``.
QUIET, NORMAL, VERBOSE, VERY_VERBOSE = -1, 0, 1, 2
#: The level from which each per-file event of the engine (``ProgressTracker.file``) is
#: printed, one line each: ``new       /data/a.txt`` (backup: the path read; restore: the
#: path written, in the target).
FILE_EVENTS = {
    "new": VERBOSE,  # backup: a file the parent snapshot does not have
    "changed": VERBOSE,  # backup: a file read again because it changed
    "unchanged": VERY_VERBOSE,  # backup: a file whose parent's chunks were reused
    "restored": VERBOSE,  # restore: a file written
    "skipped": VERY_VERBOSE,  # restore: a file already complete in the target
}


def _encode(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, default=str)


def fit_summary(doc: dict[str, Any], limit: int = MAX_SUMMARY) -> str:
    """Encode ``doc`` as one line of at most ``limit`` bytes.

    When the whole does not fit, every top-level list and mapping keeps as many whole
    items, from its start, as fit, taking turns (one item of each in turn, so a short
    one stays whole), and a cut one gets ``<name>_truncated``: its full length; a list inside
    a mapping that does not fit whole keeps its first items the same way. Only when
    even the scalars do not fit are the collections dropped (``"truncated": true``) and
    long strings shortened.
    """
    line = _encode(doc)
    if len(line.encode()) <= limit:
        return line
    parts: dict[str, list[Any]] = {
        k: list(v.items()) if isinstance(v, dict) else list(v)
        for k, v in doc.items()
        if isinstance(v, list | dict) and v
    }
    trimmed: dict[str, Any] = {k: v for k, v in doc.items() if k not in parts}
    for key, value in parts.items():
        trimmed[key] = {} if isinstance(doc[key], dict) else []
        trimmed[f"{key}_truncated"] = len(value)
    if len(_encode(trimmed).encode()) > limit:
        keep = {
            k: v[:500] + "..." if isinstance(v, str) and len(v) > 500 else v
            for k, v in doc.items()
            if not isinstance(v, list | dict)
        }
        keep["truncated"] = True
        return _encode(keep)
    taken = dict.fromkeys(parts, 0)
    turn = list(parts)
    while turn:
        for key in list(turn):
            item = parts[key][taken[key]]
            kept = trimmed[key]
            if isinstance(kept, dict):
                kept[item[0]] = item[1]
            else:
                kept.append(item)
            complete = taken[key] + 1 == len(parts[key])
            if complete:
                del trimmed[f"{key}_truncated"]
            if len(_encode(trimmed).encode()) > limit:
                if isinstance(kept, dict):
                    del kept[item[0]]
                    _fit_nested_list(trimmed, kept, item, limit)
                else:
                    kept.pop()
                if complete:
                    trimmed[f"{key}_truncated"] = len(parts[key])
                turn.remove(key)
                continue
            taken[key] += 1
            if complete:
                turn.remove(key)
    return _encode(trimmed)


def _fit_nested_list(
    whole: dict[str, Any], kept: dict[str, Any], item: tuple[str, Any], limit: int
) -> None:
    """A mapping's list that does not fit whole (e.g. ``verify.problems``): as many of its
    first items as fit, and ``<name>_truncated`` with its full length."""
    name, value = item
    if not isinstance(value, list) or not value:
        return
    kept[f"{name}_truncated"] = len(value)
    low, high = 0, len(value)  # the longest prefix that fits: low fits, high + 1 does not
    while low < high:
        mid = (low + high + 1) // 2
        kept[name] = value[:mid]
        if len(_encode(whole).encode()) <= limit:
            low = mid
        else:
            high = mid - 1
    if low:
        kept[name] = value[:low]
    else:
        kept.pop(name, None)
        if len(_encode(whole).encode()) > limit:
            del kept[f"{name}_truncated"]


class Output:
    def __init__(
        self,
        *,
        json_mode: bool,
        level: int = NORMAL,
        stdout: TextIO | None = None,
        termination_log: str | None = None,
        color: bool = True,
    ):
        self.json = json_mode
        self.color = color
        self.termination_log = termination_log
        #: :data:`QUIET`, :data:`NORMAL`, :data:`VERBOSE` or :data:`VERY_VERBOSE`
        self.level = level
        self.stdout = stdout or sys.stdout
        self.stderr = sys.stderr
        self._lines = threading.Lock()
        self._bar: _RichProgress | None = None

    @property
    def quiet(self) -> bool:
        """``-q``: no progress, no summary lines."""
        return self.level < NORMAL

    @cached_property
    def console(self) -> Console:
        return _console(self.stdout, self.color)

    @cached_property
    def err_console(self) -> Console:
        return _console(self.stderr, self.color)

    def new_table(self, *headers: str) -> Table:
        """A table with these column headers, for :meth:`table`."""
        from rich.table import Table

        return Table(*headers)

    def print(self, text: str = "") -> None:
        """A summary line; suppressed with --json (stdout then holds only the summary)
        and with -q."""
        if not self.json and not self.quiet:
            self.console.print(text, markup=False)

    def file_events(self) -> Callable[[str, str], None] | None:
        """The engine's per-file callback (``ProgressTracker.file``) printing the events
        this level shows (:data:`FILE_EVENTS`) to stdout, one line each; None when it
        shows none (always with --json), so that the engine reports nothing."""
        shown = {event for event, level in FILE_EVENTS.items() if level <= self.level}
        if self.json or not shown:
            return None
        width = max(map(len, FILE_EVENTS))

        def line(event: str, path: str) -> None:
            if event not in shown:
                return
            text = f"{event:<{width}} {_printable(path)}"
            bar = self._bar
            if bar is not None and bar.bar.live.is_started and self.stdout.isatty():
                # the terminal the bar is drawn on: printed above it, not through it
                bar.bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
                return
            with self._lines:  # from the engine's threads
                self.stdout.write(text + "\n")
                self.stdout.flush()

        return line

    def table(self, renderable: Any) -> None:
        if not self.json:
            self.console.print(renderable)

    def summary(self, doc: dict[str, Any]) -> None:
        """The command's JSON summary (stdout with --json, the termination log), with what
        the command cost (:func:`usage`)."""
        doc = {**doc, **usage()}
        if self.json:
            self.stdout.write(_encode(doc) + "\n")  # complete: only the copy below is cut
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
        console = self.err_console
        console.print(f"[bold red]error:[/] {_plain(message)}", markup=True, highlight=False)

    def warn(self, message: str) -> None:
        console = self.err_console
        console.print(f"[yellow]warning:[/] {_plain(message)}", markup=True, highlight=False)

    def warn_first(self, messages: list[str], what: str, limit: int = 20) -> None:
        """Warn with the first ``limit`` messages, then how many more there were and where
        they all are, never dropping the rest without a word."""
        for message in messages[:limit]:
            self.warn(message)
        if len(messages) > limit:
            self.warn(
                f"... and {len(messages) - limit} more: {len(messages)} {what} in all "
                "('--json' lists every one)"
            )

    def progress(self, title: str) -> _ProgressSink:
        if self.quiet:
            return _ProgressSink()
        if self.json:
            return _JsonProgress(self.stderr)
        if not self.stderr.isatty():
            return _ProgressSink()
        self._bar = _RichProgress(title, self.err_console)
        return self._bar


def _console(stream: TextIO, color: bool = True) -> Console:
    from rich.console import Console

    # Off a terminal (logs, pods) lines are not wrapped at 80 columns. Without colour (the
    # --no-color option, $NO_COLOR) no escape sequence at all is written, not even bold.
    return Console(
        file=stream,
        highlight=False,
        soft_wrap=True,
        width=None if stream.isatty() else 200,
        color_system="auto" if color else None,
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
            ProgressColumn,
            Task,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class Speed(ProgressColumn):
            """Bytes per second in KiB/MiB/GiB, as the summaries count (rich's own column
            counts in MB)."""

            def render(self, task: Task) -> Text:
                speed = task.finished_speed or task.speed
                return Text("" if speed is None else f"{human_size(speed)}/s")

        self.bar = Progress(
            TextColumn(f"[bold]{title}[/]"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            Speed(),
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


def usage() -> dict[str, Any]:
    """CPU seconds of this process and its waited-for children, and the peak resident
    memory of the largest of them (Linux reports ``ru_maxrss`` in KiB)."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    return {
        "cpu_seconds": round(cpu, 3),
        "peak_memory_bytes": max(own.ru_maxrss, children.ru_maxrss) * 1024,
    }


def _printable(path: str) -> str:
    """A path as one line of text: control characters and bytes that are not UTF-8 (kept
    by ``surrogateescape``) as ``\\xNN``."""
    escaped = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(f"\\x{ord(c):02x}" if ord(c) < 32 or ord(c) == 127 else c for c in escaped)


def _plain(message: str) -> str:
    """``message`` as text, not markup: a pattern or a file name such as ``[abc]`` or
    ``x[/y]`` is printed as it is (and never makes rich fail)."""
    from rich.markup import escape

    return escape(message)
