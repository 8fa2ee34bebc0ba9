"""The figures of bench/operator_scale.py: the apiserver's request counters turned into rates,
what the operator adds to them, the targets of issue 17 and the table docs/performance.md shows.

Pure functions and data: tests/bench/test_operator_figures.py checks them without a cluster.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "Burst",
    "Figures",
    "Idle",
    "Totals",
    "median",
    "operator_share",
    "rates",
    "request_totals",
    "table",
]

#: Issue 17's targets.
MAX_IDLE_RPS = 2.0
MAX_MEMORY_BYTES = 150_000_000
MAX_LATENCY_SECONDS = 1.0
#: (verb, resource) -> requests counted so far, from the apiserver's /metrics.
Totals = dict[tuple[str, str], float]


def request_totals(metrics_text: str) -> Totals:
    """``apiserver_request_total`` of a /metrics page, summed per (verb, resource).

    The resource includes its subresource (``pods/status``); a request to no resource counts
    under its path (``/metrics``), which the apiserver reports as the subresource.
    """
    totals: Totals = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name != "apiserver_request_total":
                continue
            labels = sample.labels
            resource, sub = labels.get("resource", ""), labels.get("subresource", "")
            if sub:  # pods/status; a path like /metrics alone (no resource)
                resource = f"{resource}/{sub}" if resource else sub
            key = (labels.get("verb", ""), resource)
            totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def rates(before: Totals, after: Totals, seconds: float) -> Totals:
    """Requests per second per (verb, resource) between two readings ``seconds`` apart."""
    if seconds <= 0:
        raise ValueError("the span between two readings must be positive")
    keys = set(before) | set(after)
    return {k: (after.get(k, 0.0) - before.get(k, 0.0)) / seconds for k in keys}


def operator_share(running: Totals, baseline: Totals) -> Totals:
    """What the operator adds (running minus baseline), per (verb, resource), largest first;
    keys below 0.005 requests/s either way are left out."""
    keys = set(running) | set(baseline)
    diff = {k: running.get(k, 0.0) - baseline.get(k, 0.0) for k in keys}
    kept = [(k, v) for k, v in diff.items() if abs(v) >= 0.005]
    return dict(sorted(kept, key=lambda kv: -kv[1]))


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


@dataclass
class Idle:
    seconds: float = 0.0
    running_rps: float = 0.0
    baseline_rps: float = 0.0
    operator_rps: float = 0.0
    #: "verb resource" -> requests/s the operator adds
    by_request: dict[str, float] = field(default_factory=dict)


@dataclass
class Burst:
    runs: int = 0
    seconds: float = 0.0
    succeeded: int = 0
    #: run name -> what was wrong (phase, Jobs, Events); empty when every run is right
    problems: dict[str, str] = field(default_factory=dict)


@dataclass
class Figures:
    started: str
    policies: int
    namespaces: int
    replicas: int
    #: the operator's code: its source root and git commit ("+changes" when not committed)
    code: str
    policy_sources: str = "one volume (claim `data`, 4 KiB) each; daily schedule 03:00 UTC"
    create_seconds: float = 0.0
    ready_seconds: float = 0.0
    memory_idle_bytes: int = 0
    memory_after_runs_bytes: int = 0
    memory_peak_bytes: int = 0
    idle: Idle = field(default_factory=Idle)
    latencies: list[float] = field(default_factory=list)
    latency_median: float = 0.0
    burst: Burst = field(default_factory=Burst)
    targets: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def evaluate(self) -> None:
        def met(ok: bool) -> str:
            return "MET" if ok else "NOT MET"

        self.targets = {
            "idle traffic <= 2 requests/s": met(self.idle.operator_rps <= MAX_IDLE_RPS),
            "memory < 150 MB": met(self.memory_peak_bytes < MAX_MEMORY_BYTES),
            "BackupRun to Job < 1 s median": met(self.latency_median < MAX_LATENCY_SECONDS),
            f"{self.burst.runs} runs at once: each one Job, one Succeeded Event": met(
                self.burst.runs > 0 and not self.burst.problems
            ),
        }


def table(f: Figures) -> str:
    """The Markdown table of docs/performance.md's "Operator at scale", with the breakdown."""
    mb = 1e6
    rows = [
        ("policies (namespaces)", f"{f.policies} ({f.namespaces})"),
        ("operator replicas", str(f.replicas)),
        ("operator code", f.code),
        ("all policies Ready", f"{f.ready_seconds:.0f} s (created in {f.create_seconds:.0f} s)"),
        ("memory idle / after the runs / peak",
         f"{f.memory_idle_bytes / mb:.0f} / {f.memory_after_runs_bytes / mb:.0f} / "
         f"{f.memory_peak_bytes / mb:.0f} MB"),
        ("idle API traffic (operator)", f"{f.idle.operator_rps:.2f} requests/s"),
        ("  with operator / scaled to 0",
         f"{f.idle.running_rps:.2f} / {f.idle.baseline_rps:.2f} requests/s "
         f"over {f.idle.seconds:.0f} s each"),
        ("BackupRun to Job, median of 5",
         f"{f.latency_median:.2f} s ({', '.join(f'{s:.2f}' for s in f.latencies)})"),
        (f"{f.burst.runs} runs at once: all ended", f"{f.burst.seconds:.0f} s, "
         f"{f.burst.succeeded}/{f.burst.runs} Succeeded, "
         f"{'each one Job and one Event' if not f.burst.problems else 'PROBLEMS'}"),
    ]  # fmt: skip
    lines = ["| measure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    lines += ["", "| idle requests/s the operator adds | verb resource |", "|---:|---|"]
    lines += [f"| {v:.2f} | {k} |" for k, v in list(f.idle.by_request.items())[:15]]
    lines += ["", "| target | |", "|---|---|", *(f"| {k} | {v} |" for k, v in f.targets.items())]
    for run, why in sorted(f.burst.problems.items()):
        lines.append(f"- run {run}: {why}")
    lines += [f"- {note}" for note in f.notes]
    return "\n".join(lines)
