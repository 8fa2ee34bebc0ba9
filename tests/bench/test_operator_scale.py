"""The operator benchmark's arithmetic: the apiserver's counters read right, turned into rates,
the operator's share told apart from everything else, and the targets judged on the figures.

The benchmark itself (bench/operator_scale.py) needs a test ground, the chart and about two
and a half minutes even at 20 policies; these checks need none of it, and the last one checks
that bench/run.py starts it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import run
from operator_figures import (
    Figures,
    median,
    operator_share,
    rates,
    request_totals,
    table,
)

METRICS = """\
# HELP apiserver_request_total [STABLE] Counter of apiserver requests broken out for each verb.
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="safehold.io",\
resource="backuppolicies",scope="resource",subresource="",verb="GET",version="v1alpha1"} 120
apiserver_request_total{code="404",component="apiserver",dry_run="",group="safehold.io",\
resource="backuppolicies",scope="resource",subresource="",verb="GET",version="v1alpha1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="safehold.io",\
resource="backuppolicies",scope="resource",subresource="status",verb="PATCH",version="v1alpha1"} 7
apiserver_request_total{code="200",component="",dry_run="",group="",resource="",scope="",\
subresource="/metrics",verb="GET",version=""} 2
# HELP apiserver_request_duration_seconds Response latency distribution.
# TYPE apiserver_request_duration_seconds histogram
apiserver_request_duration_seconds_bucket{group="",le="0.05",resource="pods",verb="LIST"} 99
apiserver_request_duration_seconds_count{group="",resource="pods",verb="LIST"} 99
apiserver_request_duration_seconds_sum{group="",resource="pods",verb="LIST"} 1.5
"""


def test_request_totals_sum_codes_per_verb_and_resource() -> None:
    totals = request_totals(METRICS)
    assert totals == {
        ("GET", "backuppolicies"): 123.0,  # both answer codes
        ("PATCH", "backuppolicies/status"): 7.0,
        ("GET", "/metrics"): 2.0,
    }


def test_rates_are_per_second_and_count_new_keys_from_zero() -> None:
    before = {("GET", "pods"): 10.0}
    after = {("GET", "pods"): 40.0, ("LIST", "jobs"): 6.0}
    assert rates(before, after, 3.0) == {("GET", "pods"): 10.0, ("LIST", "jobs"): 2.0}
    with pytest.raises(ValueError, match="positive"):
        rates(before, after, 0.0)


def test_operator_share_is_running_minus_baseline_largest_first() -> None:
    running = {("GET", "backuppolicies"): 300.0, ("LIST", "pods"): 4.0, ("GET", "nodes"): 1.0}
    baseline = {("LIST", "pods"): 4.001, ("GET", "nodes"): 1.5, ("LIST", "leases"): 0.2}
    share = operator_share(running, baseline)
    assert list(share) == [("GET", "backuppolicies"), ("LIST", "leases"), ("GET", "nodes")]
    assert share[("GET", "backuppolicies")] == 300.0
    assert share[("GET", "nodes")] == pytest.approx(-0.5)
    assert ("LIST", "pods") not in share  # noise below 0.005 requests/s is left out


def test_median_of_an_even_count_is_the_mean_of_the_middle_two() -> None:
    assert median([0.4, 0.1, 0.3]) == 0.3
    assert median([0.4, 0.1, 0.3, 0.2]) == pytest.approx(0.25)


def _figures(operator_rps: float, peak_mb: float, latency: float, problems: bool) -> Figures:
    f = Figures("2026-12-04T20:00:00+00:00", 1000, 20, 1, "operator at abc123")
    f.idle.operator_rps = operator_rps
    f.memory_peak_bytes = int(peak_mb * 1e6)
    f.latencies = [latency] * 5
    f.latency_median = latency
    f.burst.runs = 50
    if problems:
        f.burst.problems["bench-00/burst-0"] = "phase Succeeded, 2 Jobs, 1 Events"
    f.evaluate()
    return f


def test_targets_of_issue_17() -> None:
    good = _figures(1.9, 149, 0.35, problems=False)
    assert set(good.targets.values()) == {"MET"}
    bad = _figures(295, 151, 1.2, problems=True)
    assert set(bad.targets.values()) == {"NOT MET"}


def test_table_names_each_figure_and_what_polls() -> None:
    f = _figures(295.0, 132, 0.35, problems=True)
    f.idle.by_request = {"GET backuppolicies": 180.5, "LIST jobs": 60.0}
    text = table(f)
    assert "| idle API traffic (operator) | 295.00 requests/s |" in text
    assert "| 180.50 | GET backuppolicies |" in text
    assert "| idle traffic <= 2 requests/s | NOT MET |" in text
    assert "- run bench-00/burst-0: phase Succeeded, 2 Jobs, 1 Events" in text


def test_run_py_starts_the_entry_only_when_asked(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """``--only operator`` runs bench/operator_scale.py (its --help here: no cluster needed);
    the default run leaves it out (it needs a test ground and minutes)."""
    assert "operator" not in run.SCRIPTS
    code = run.main(["--only", "operator", "--operator-args=--help", f"--results-dir={tmp_path}"])
    assert code == 0
    out = capfd.readouterr().out
    assert "--policies" in out
    assert "--source" in out
