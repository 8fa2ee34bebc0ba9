"""The benchmark's results: the record written as JSON, the ratios, the targets, the Markdown.

Ratios are always "Safehold relative to the other tool". For speeds (and CPU time) they are the
other tool's time divided by Safehold's (2.0 = Safehold took half the time); for repository size
and peak memory they are Safehold's value divided by the other's (0.8 = Safehold needs 20 % less).
CPU time is shown beside the wall-time speeds because it is far less disturbed by other processes
on a shared machine (it still ignores how well a tool uses both cores).
The targets come from issue 4 and compare against restic.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

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


def _cpu(step: Step) -> float:
    return max(step.user_seconds + step.system_seconds, 0.01)  # GNU time's resolution


def ratios(ours: ToolRun, other: ToolRun) -> dict[str, float]:
    """Safehold relative to ``other``, per measure (see the module docstring for direction)."""
    out: dict[str, float] = {}
    for step in TIMED:
        if step in ours.steps and step in other.steps:
            out[f"{step} speed"] = other.steps[step].seconds / ours.steps[step].seconds
    for step in TIMED:  # CPU time is less disturbed than wall time on a shared machine
        if step in ours.steps and step in other.steps:
            out[f"{step} CPU time"] = _cpu(other.steps[step]) / _cpu(ours.steps[step])
    if "incremental" in ours.steps and "incremental" in other.steps:
        theirs = other.steps["incremental"].repo_bytes
        out["repository size"] = ours.steps["incremental"].repo_bytes / theirs
    if other.peak_rss_bytes:
        out["peak RSS"] = ours.peak_rss_bytes / other.peak_rss_bytes
    return out


# (measure in ratios(), name, whether the ratio meets the target, the target as text)
_TARGETS: tuple[tuple[str, str, Callable[[float], bool], str], ...] = (
    ("full speed", "full backup speed", lambda r: r >= 1.5, ">= 1.5x restic"),
    ("incremental speed", "incremental backup speed", lambda r: r >= 1.5, ">= 1.5x restic"),
    ("restore speed", "restore speed", lambda r: r >= 2.0, ">= 2x restic"),
    ("repository size", "repository size (v1 + v2)", lambda r: r <= 1.0, "<= restic"),
    ("peak RSS", "peak RSS", lambda r: r <= 1.0, "<= restic"),
)


def evaluate_targets(results: Results) -> list[Target]:
    ours, restic = results.tool("safehold"), results.tool("restic")
    measured = ratios(ours, restic) if ours and restic else {}
    targets = []
    for key, name, predicate, required in _TARGETS:
        value = measured.get(key)
        status: Literal["MET", "NOT MET", "NOT MEASURED"] = (
            "NOT MEASURED" if value is None else "MET" if predicate(value) else "NOT MET"
        )
        targets.append(Target(name=name, required=required, measured=value, status=status))
    return targets


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f}"


def markdown(results: Results) -> str:
    d = results.dataset
    lines = [
        f"# Safehold engine benchmark, {results.started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {results.host.get('cpus', '?')} CPUs ({results.host.get('cpu', '?')}), "
        f"Linux {results.host.get('kernel', '?')}, Python {results.host.get('python', '?')}.",
        f"Data set: scale {d.scale:g}, seed {d.seed} (generator v{d.generator_version}): "
        f"v1 {_mb(d.v1_bytes)} MB in {d.v1_files:,} files; v2 {_mb(d.v2_bytes)} MB in "
        f"{d.v2_files:,} files, {_mb(d.edited_bytes)} MB of new content.",
        "Page cache dropped before every timed step: "
        + ("yes." if results.cache_dropped else "NO (not permitted; reads may come from RAM)."),
        "",
        "Timed steps ran in rounds (every tool once per round); each row is the tool's median"
        " round, and the last column lists every round's time.",
        "",
        "| tool | step | time (s) | MB/s | CPU user+sys (s) | peak RSS (MB) "
        "| repository after (MB) | others' CPU (cores) | rounds (s) |",
        "|---|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for tool in results.tools:
        for name, step in tool.steps.items():
            rate = f"{step.mb_per_s:,.1f}" if step.mb_per_s is not None else ""
            rounds = " / ".join(f"{r.seconds:.2f}" for r in tool.rounds.get(name, []))
            memory = _mb(step.peak_rss_bytes)
            if step.processes > 1:
                memory += f" ({step.processes} processes)"
            lines.append(
                f"| {tool.name} | {name} | {step.seconds:.2f} | {rate} "
                f"| {step.user_seconds + step.system_seconds:.1f} | {memory} "
                f"| {_mb(step.repo_bytes)} | {step.others_cpu_seconds / step.seconds:.2f} "
                f"| {rounds} |"
            )
    lines += ["", "Versions and settings:", ""]
    lines += [f"- {t.name}: {t.version}; {t.settings}" for t in results.tools]
    lines += [f"- {name}: not run ({why})" for name, why in results.skipped.items()]
    ours = results.tool("safehold")
    others = [t for t in results.tools if t.name != "safehold" and t.restore_verified]
    if ours and others:
        table = {t.name: ratios(ours, t) for t in others}
        keys = list(next(iter(table.values())))
        lines += [
            "",
            "Safehold relative to the others (speed and CPU time: their time / Safehold's,"
            " higher is better; size and RSS: Safehold's / theirs, lower is better):",
            "",
            "| measure | " + " | ".join(f"vs {n}" for n in table) + " |",
            "|---|" + "--:|" * len(table),
        ]
        for key in keys:
            cells = " | ".join(f"{table[n][key]:.2f}x" if key in table[n] else "" for n in table)
            lines.append(f"| {key} | {cells} |")
    lines += ["", "Targets (issue 4):", "", "| target | required | measured | status |"]
    lines.append("|---|---|--:|---|")
    for target in results.targets:
        value = f"{target.measured:.2f}x" if target.measured is not None else "-"
        lines.append(f"| {target.name} | {target.required} | {value} | **{target.status}** |")
    if results.notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in results.notes]
    return "\n".join(lines) + "\n"


def disturbed_steps(results: Results) -> list[str]:
    """Steps during which other processes used noticeable CPU (the numbers are noisy)."""
    return [
        f"{tool.name} {name} ({step.others_cpu_seconds / step.seconds:.2f} cores)"
        for tool in results.tools
        for name, step in tool.steps.items()
        if name in TIMED and step.others_cpu_seconds / step.seconds > BUSY_CORES
    ]
