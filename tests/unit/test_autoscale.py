"""The fleet simulator (``benchmarks/autoscale.py``) replays a trace as a user of its figures
expects: every job runs once, on a node that can hold it, and the per-class policy starts no
node that nothing queued needs. Figures themselves are not asserted (STYLE 12)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "autoscale.py"
sys.path.insert(0, str(SCRIPT.parent))

import autoscale  # noqa: E402
from autoscale import LARGE, SMALL, Config, Policy, TraceJob, simulate  # noqa: E402

MINUTE = 60.0

# Fits and trainings interleaved, a burst, and a training arriving while fits run.
TRACE = [
    TraceJob(0.0, 16_000, 5 * MINUTE),
    TraceJob(5.0, 80_000, 30 * MINUTE),
    TraceJob(12.0, 16_000, 8 * MINUTE),
    TraceJob(12.0, 16_000, 3 * MINUTE),
    TraceJob(200.0, 80_000, 45 * MINUTE),
    TraceJob(610.0, 16_000, 6 * MINUTE),
    TraceJob(615.0, 16_000, 12 * MINUTE),
    TraceJob(1500.0, 80_000, 25 * MINUTE),
    TraceJob(1500.0, 16_000, 2 * MINUTE),
]
TRAININGS_ONLY = [TraceJob(i * 90.0, 80_000, 20 * MINUTE) for i in range(5)]


@pytest.mark.parametrize("policy", list(Policy))
def test_every_job_runs_exactly_once_on_a_node_kind_that_fits_it(policy: Policy) -> None:
    result = simulate(TRACE, policy)
    assert [r.job for r in result.runs] == list(range(len(TRACE)))
    sizes = {k.name: k.gpu_mem for k in (SMALL, LARGE)}
    for run in result.runs:
        assert TRACE[run.job].gpu_mem <= sizes[run.kind]
        assert run.start_s >= run.arrival_s
        assert run.end_s - run.start_s == TRACE[run.job].duration_s
    # A training fits only a large node: never on a small one, whatever the policy started.
    assert {r.kind for r in result.runs if TRACE[r.job].gpu_mem > SMALL.gpu_mem} == {LARGE.name}


@pytest.mark.parametrize("policy", list(Policy))
def test_a_node_runs_one_job_at_a_time(policy: Policy) -> None:
    result = simulate(TRACE, policy)
    by_node: dict[str, list[tuple[float, float]]] = {}
    for run in result.runs:
        by_node.setdefault(run.node, []).append((run.start_s, run.end_s))
    for spans in by_node.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def test_demand_by_class_starts_no_small_node_for_trainings_only() -> None:
    by_class = simulate(TRAININGS_ONLY, Policy.CLASS_DEMAND).summary()
    by_length = simulate(TRAININGS_ONLY, Policy.QUEUE_LENGTH).summary()
    assert by_class["nodes_started"][SMALL.name] == 0
    assert by_class["node_min"][SMALL.name] == 0
    # Queue length cannot tell: it starts small nodes that then only idle.
    assert by_length["nodes_started"][SMALL.name] > 0
    assert by_class["idle_node_min"] < by_length["idle_node_min"]


@pytest.mark.parametrize("policy", list(Policy))
def test_the_backlog_clears_no_sooner_than_the_longest_job_runs(policy: Policy) -> None:
    figures = simulate(TRACE, policy, Config(startup_s=180.0)).summary()
    longest = max(j.duration_s for j in TRACE) / MINUTE
    assert figures["clear_min"] >= longest
    # Nothing runs before a node is up: the first job waits at least the start-up.
    assert figures["p95_wait_min"] >= 3.0
    assert figures["busy_node_min"] == round(sum(j.duration_s for j in TRACE) / MINUTE)


def test_a_seed_gives_the_same_trace_and_the_same_figures() -> None:
    trace = autoscale.generate_trace(7, 60)
    assert trace == autoscale.generate_trace(7, 60)
    assert trace != autoscale.generate_trace(8, 60)
    assert len(trace) == 60
    assert {j.gpu_mem for j in trace} == {16_000, 80_000}
    assert autoscale.compare(trace, Config()) == autoscale.compare(trace, Config())


def test_a_trace_file_replays_as_the_same_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        {"arrival_s": j.arrival_s, "gpu_mem": j.gpu_mem, "duration_s": j.duration_s} for j in TRACE
    ]
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(rows))
    assert autoscale.main(["--trace", str(path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["parameters"]["jobs"] == len(TRACE)
    assert printed["policies"] == autoscale.compare(TRACE, Config())["policies"]


def test_several_seeds_are_judged_on_their_totals(capsys: pytest.CaptureFixture[str]) -> None:
    assert autoscale.main(["--seed", "3", "--seeds", "2", "--jobs", "40", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert sorted(printed["runs"]) == ["3", "4"]
    assert printed["runs"]["4"] == autoscale.compare(autoscale.generate_trace(4, 40), Config())
    for policy in Policy:
        total = sum(r["policies"][policy.value]["idle_node_min"] for r in printed["runs"].values())
        assert printed["totals"][policy.value]["idle_node_min"] == total
    with pytest.raises(SystemExit):
        autoscale.main(["--seeds", "2", "--trace", "trace.json"])
    assert "cannot go with --trace" in capsys.readouterr().err


def test_a_trace_no_node_can_run_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("arrival_s,gpu_mem,duration_s\n0,160000,600\n")
    answer = subprocess.run(
        [sys.executable, str(SCRIPT), "--trace", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert answer.returncode == 2
    assert "largest node kind (80000 MiB)" in answer.stderr.splitlines()[-1]
    assert "Traceback" not in answer.stderr


def test_help_prints_its_usage_and_exits_0() -> None:
    answer = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60
    )
    assert (answer.returncode, answer.stderr) == (0, "")
    assert answer.stdout.startswith("usage: autoscale.py")
