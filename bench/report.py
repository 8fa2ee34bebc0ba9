"""The benchmark's results: the record written as JSON, the ratios, the targets, the Markdown.

Ratios are always "Safehold relative to the other tool". For speeds (and CPU time) they are the
other tool's time divided by Safehold's (2.0 = Safehold took half the time); for repository size
and peak memory they are Safehold's value divided by the other's (0.8 = Safehold needs 20 % less).
CPU time is shown beside the wall-time speeds because it is far less disturbed by other processes
on a shared machine (it still ignores how well a tool uses both cores). On S3 parts, "CPU time
with the server's" adds the CPU the S3 server spent on each tool's step: the server runs on the
same cores, so a step that keeps them all busy cannot beat that ratio (docs/performance.md,
session 28).
The targets come from issue 19 and compare against restic in the same run.

A run has parts (the mixed data set on local repositories and on S3, the many small files on
both); each part's record is one :class:`Results`, and :func:`run_markdown` puts the parts'
sections and one table of every target together.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from freshfs import FileSystem
from traffic import KINDS, Traffic

__all__ = [
    "STEPS",
    "DataSetInfo",
    "Results",
    "Step",
    "Target",
    "ToolRun",
    "disturbed_steps",
    "evaluate_targets",
    "markdown",
    "ratios",
    "run_markdown",
    "spread",
]

STEPS = ("init", "full", "incremental", "restore")
TIMED = ("full", "incremental", "restore")
BUSY_CORES = 0.25  # other processes' average CPU use above which a step counts as disturbed


class Step(BaseModel):
    seconds: float
    mb_per_s: float | None  # data set bytes (v1 for the full backup, v2 otherwise) per second
    user_seconds: float
    system_seconds: float
    peak_rss_bytes: int  # with several processes, their peak summed PSS (bench/measure.py)
    processes: int = 1  # the most processes of the tool at once
    repo_bytes: int  # sum of file sizes in the repository after the step
    repo_allocated_bytes: int  # disk blocks allocated, as du shows
    others_cpu_seconds: float
    cache_dropped: bool
    summary: dict[str, Any] | None = None  # the tool's own JSON summary, where it prints one
    traffic: Traffic | None = None  # object-store requests and bytes (S3 parts only)


class ToolRun(BaseModel):
    name: str
    version: str
    settings: str
    steps: dict[str, Step] = {}  # per step, the median round (what the ratios compare)
    rounds: dict[str, list[Step]] = {}  # per timed step, every round in the order run
    restore_verified: bool = False

    @property
    def peak_rss_bytes(self) -> int:
        return max((s.peak_rss_bytes for s in self.steps.values()), default=0)


class DataSetInfo(BaseModel):
    scale: float
    seed: int
    generator_version: int
    v1_bytes: int
    v1_files: int
    v2_bytes: int
    v2_files: int
    edited_bytes: int


class Target(BaseModel):
    name: str
    required: str
    measured: float | None
    status: Literal["MET", "NOT MET", "NOT MEASURED"]


class Results(BaseModel):
    part: str = "engine"  # engine | s3 | smallfiles-local | smallfiles-s3
    title: str = "Mixed data set, local repositories"
    #: What the second backup is: "incremental" (after v2's changes) or "unchanged re-run".
    second_backup: str = "incremental"
    filesystem: FileSystem | None = None
    started: datetime
    finished: datetime | None = None
    host: dict[str, str]
    dataset: DataSetInfo
    cache_dropped: bool
    tools: list[ToolRun]
    skipped: dict[str, str] = {}  # tool name -> why it did not run
    targets: list[Target] = []
    notes: list[str] = []

    def tool(self, name: str) -> ToolRun | None:
        return next((t for t in self.tools if t.name == name and t.restore_verified), None)


def median_round(rounds: list[Step]) -> Step:
    """The round of median wall time (of an even number, the faster of the middle two):
    one slow outlier from a busy moment moves it no more than one fast one."""
    return sorted(rounds, key=lambda s: s.seconds)[(len(rounds) - 1) // 2]


def repository_size(run: ToolRun) -> int:
    """The repository's size after both backups: the median over the rounds. Each round
    backs up into a repository of its own, whose chunker has a seed of its own (restic's a
    polynomial of its own), so each cuts the edited files elsewhere: the same incremental
    stored 24-29 MB in three repositories of the S3 part (docs/performance.md, session 24),
    and the round of median time is as good as a random one of them."""
    sizes = [s.repo_bytes for s in run.rounds.get("incremental", [])]
    return int(statistics.median_low(sizes)) if sizes else run.steps["incremental"].repo_bytes


def _cpu(step: Step) -> float:
    return max(step.user_seconds + step.system_seconds, 0.01)  # GNU time's resolution


def _backup_requests(run: ToolRun) -> int | None:
    """Object-store requests of the full and the second backup (median rounds) together."""
    counts = [run.steps[s].traffic for s in ("full", "incremental") if s in run.steps]
    if len(counts) < 2 or any(t is None for t in counts):
        return None
    return sum(t.total_requests for t in counts if t is not None)


def ratios(ours: ToolRun, other: ToolRun) -> dict[str, float]:
    """Safehold relative to ``other``, per measure (see the module docstring for direction)."""
    out: dict[str, float] = {}
    for step in TIMED:
        if step in ours.steps and step in other.steps:
            out[f"{step} speed"] = other.steps[step].seconds / ours.steps[step].seconds
    for step in TIMED:  # CPU time is less disturbed than wall time on a shared machine
        if step in ours.steps and step in other.steps:
            out[f"{step} CPU time"] = _cpu(other.steps[step]) / _cpu(ours.steps[step])
    for step in TIMED:  # with the server's, on the same cores: what a busy step cannot beat
        mine, theirs = ours.steps.get(step), other.steps.get(step)
        if mine and theirs and mine.traffic and theirs.traffic:
            out[f"{step} CPU time with the server's"] = (
                _cpu(theirs) + theirs.traffic.server_cpu_seconds
            ) / (_cpu(mine) + mine.traffic.server_cpu_seconds)
    if "incremental" in ours.steps and "incremental" in other.steps:
        out["repository size"] = repository_size(ours) / repository_size(other)
    if other.peak_rss_bytes:
        out["peak RSS"] = ours.peak_rss_bytes / other.peak_rss_bytes
    mine, theirs_requests = _backup_requests(ours), _backup_requests(other)
    if mine is not None and theirs_requests:
        out["requests per backup"] = mine / theirs_requests
    return out


def _at_least(limit: float) -> tuple[Callable[[float], bool], str]:
    return (lambda r: r >= limit), f">= {limit:g}x restic"


def _at_most(limit: float, text: str) -> tuple[Callable[[float], bool], str]:
    return (lambda r: r <= limit), text


def _targets_of(results: Results) -> list[tuple[str, str, Callable[[float], bool], str]]:
    """The targets of issue 19 that apply to this part: (ratio key, name, test, required)."""
    small = results.part.startswith("smallfiles")
    second = results.second_backup
    out = [
        ("full speed", "full backup speed", *_at_least(2.0)),
        (
            "incremental speed",
            f"{second} speed" if small else "incremental backup speed",
            *_at_least(2.0),
        ),
        ("restore speed", "restore speed", *_at_least(2.0 if small else 2.5)),
        ("repository size", "repository size (after both backups)", *_at_most(0.95, "<= 0.95x")),
        ("peak RSS", "peak memory (summed PSS)", *_at_most(1.0, "<= restic")),
    ]
    if any(s.traffic for t in results.tools for s in t.steps.values()):
        out.append(
            ("requests per backup", "object-store requests per backup", *_at_most(1.0, "<= restic"))
        )
    return out


def evaluate_targets(results: Results) -> list[Target]:
    ours, restic = results.tool("safehold"), results.tool("restic")
    measured = ratios(ours, restic) if ours and restic else {}
    targets = []
    for key, name, predicate, required in _targets_of(results):
        value = measured.get(key)
        status: Literal["MET", "NOT MET", "NOT MEASURED"] = (
            "NOT MEASURED" if value is None else "MET" if predicate(value) else "NOT MET"
        )
        targets.append(Target(name=name, required=required, measured=value, status=status))
    return targets


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f}"


def _header(results: Results) -> list[str]:
    h = results.host
    return [
        f"# Safehold engine benchmark, {results.started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {h.get('cpus', '?')} CPUs ({h.get('cpu', '?')}), "
        f"Linux {h.get('kernel', '?')}, Python {h.get('python', '?')}.",
        "",
    ]


def spread(rounds: list[Step]) -> str:
    """(slowest - fastest) / median of the rounds' times, as a percentage ("" for one round)."""
    if len(rounds) < 2:
        return ""
    times = [r.seconds for r in rounds]
    return f"{(max(times) - min(times)) / median_round(rounds).seconds:.0%}"


def _step_table(results: Results) -> list[str]:
    lines = [
        "| tool | step | time (s) | MB/s | CPU user+sys (s) | peak RSS (MB) "
        "| repository after (MB) | others' CPU (cores) | rounds (s) | spread |",
        "|---|---|--:|--:|--:|--:|--:|--:|---|--:|",
    ]
    for tool in results.tools:
        for name, step in tool.steps.items():
            rate = f"{step.mb_per_s:,.1f}" if step.mb_per_s is not None else ""
            rounds = " / ".join(f"{r.seconds:.2f}" for r in tool.rounds.get(name, []))
            memory = _mb(step.peak_rss_bytes)
            if step.processes > 1:
                memory += f" ({step.processes} processes)"
            label = results.second_backup if name == "incremental" else name
            lines.append(
                f"| {tool.name} | {label} | {step.seconds:.2f} | {rate} "
                f"| {step.user_seconds + step.system_seconds:.1f} | {memory} "
                f"| {_mb(step.repo_bytes)} | {step.others_cpu_seconds / step.seconds:.2f} "
                f"| {rounds} | {spread(tool.rounds.get(name, []))} |"
            )
    return lines


def _traffic_table(results: Results) -> list[str]:
    """Requests by kind and bytes per step (median round), where the server counted them."""
    rows = [
        (tool.name, name, step.traffic)
        for tool in results.tools
        for name, step in tool.steps.items()
        if step.traffic is not None
    ]
    if not rows:
        return []
    kinds = [*KINDS, *sorted({k for _, _, t in rows for k in t.requests} - set(KINDS))]
    lines = [
        "",
        "Object-store requests and bytes per step (median round; counted by the S3 server; "
        "GET includes HEAD, which SeaweedFS counts as GET), and the CPU time the server spent "
        "meanwhile, on the tools' cores (not counted in others' CPU):",
        "",
        "| tool | step | " + " | ".join(kinds) + " | requests | MB up | MB down | server CPU (s) |",
        "|---|---|" + "--:|" * (len(kinds) + 4),
    ]
    for tool, name, t in rows:
        label = results.second_backup if name == "incremental" else name
        counts = " | ".join(f"{t.requests.get(k, 0):,}" for k in kinds)
        lines.append(
            f"| {tool} | {label} | {counts} | {t.total_requests:,} "
            f"| {_mb(t.bytes_up)} | {_mb(t.bytes_down)} | {t.server_cpu_seconds:.2f} |"
        )
    return lines


def markdown(results: Results, header: bool = True) -> str:
    """One part's section (with the run's header unless ``header`` is False)."""
    d = results.dataset
    fs = results.filesystem.describe() if results.filesystem else "not recorded"
    lines = _header(results) if header else []
    second = (
        f"v2 {_mb(d.v2_bytes)} MB in {d.v2_files:,} files, {_mb(d.edited_bytes)} MB of new content"
        if results.second_backup == "incremental"
        else "the second backup sees the same files unchanged"
    )
    lines += [
        f"## {results.title}",
        "",
        f"Data set: scale {d.scale:g}, seed {d.seed} (generator v{d.generator_version}): "
        f"v1 {_mb(d.v1_bytes)} MB in {d.v1_files:,} files; {second}.",
        f"File system of the timed steps: {fs}.",
        "Page cache dropped before every timed step: "
        + ("yes." if results.cache_dropped else "NO (not permitted; reads may come from RAM)."),
        "",
        "Timed steps ran in rounds (every tool once per round); each row is the tool's median"
        " round, then every round's time and their spread ((slowest - fastest) / median).",
        "",
        *_step_table(results),
        *_traffic_table(results),
    ]
    lines += ["", "Versions and settings:", ""]
    lines += [f"- {t.name}: {t.version}; {t.settings}" for t in results.tools]
    lines += [f"- {name}: not run ({why})" for name, why in results.skipped.items()]
    if results.finished:
        took = (results.finished - results.started).total_seconds()
        lines.append(f"- this part took {took / 60:.1f} min")
    ours = results.tool("safehold")
    others = [t for t in results.tools if t.name != "safehold" and t.restore_verified]
    if ours and others:
        table = {t.name: ratios(ours, t) for t in others}
        keys = list(dict.fromkeys(k for r in table.values() for k in r))
        lines += [
            "",
            "Safehold relative to the others (speed and CPU time: their time / Safehold's,"
            " higher is better; size, RSS and requests: Safehold's / theirs, lower is better):",
            "",
            "| measure | " + " | ".join(f"vs {n}" for n in table) + " |",
            "|---|" + "--:|" * len(table),
        ]
        for key in keys:
            cells = " | ".join(f"{table[n][key]:.2f}x" if key in table[n] else "" for n in table)
            shown = key.replace("incremental", results.second_backup)
            lines.append(f"| {shown} | {cells} |")
    lines += ["", "Targets (issue 19):", "", "| target | required | measured | status |"]
    lines.append("|---|---|--:|---|")
    lines += _target_rows(results, with_part=False)
    if results.notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in results.notes]
    return "\n".join(lines) + "\n"


def _target_rows(results: Results, with_part: bool) -> list[str]:
    rows = []
    for target in results.targets:
        value = f"{target.measured:.2f}x" if target.measured is not None else "-"
        part = f"{results.title} | " if with_part else ""
        rows.append(f"| {part}{target.name} | {target.required} | {value} | **{target.status}** |")
    return rows


def run_markdown(parts: list[Results]) -> str:
    """The whole run: every part's section, then every target in one table."""
    if not parts:
        return "No part of the engine benchmark ran.\n"
    sections = [markdown(part, header=False) for part in parts]
    lines = [
        "## All targets (issue 19: ratios to restic in the same run)",
        "",
        "| part | target | required | measured | status |",
        "|---|---|---|--:|---|",
    ]
    for part in parts:
        lines += _target_rows(part, with_part=True)
    head = "\n".join(_header(parts[0]))
    return head + "\n" + "\n".join(sections) + "\n" + "\n".join(lines) + "\n"


def disturbed_steps(results: Results) -> list[str]:
    """Steps during which other processes used noticeable CPU (the numbers are noisy)."""
    return [
        f"{tool.name} {name} ({step.others_cpu_seconds / step.seconds:.2f} cores)"
        for tool in results.tools
        for name, step in tool.steps.items()
        if name in TIMED and step.others_cpu_seconds / step.seconds > BUSY_CORES
    ]
