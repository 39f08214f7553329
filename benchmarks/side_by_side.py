"""Two checkouts side by side: ``benchmarks/load.py`` run alternately with each checkout's
interpreter (its ``serve`` processes), round after round, and the figures put next to each other.

A machine's speed drifts by more than most changes between one run and the next (docs/
PERFORMANCE.md), so before and after are only compared within one such run: each round runs
"before" then "after" with the same command, and the medians over the rounds are compared.

    git worktree add /tmp/before <commit> && (cd /tmp/before && uv sync --locked)
    uv run python benchmarks/side_by_side.py --before /tmp/before/.venv/bin/python

Prints a Markdown table (each cell: the rounds' figures in order) and, per process count, the
medians of API + PostgreSQL CPU per cycle (the API's alone on SQLite) and their ratio, after /
before. Anything after ``--``
replaces load.py's default arguments (PostgreSQL in a throwaway cluster, 1 and 3 processes,
64 workers, 3 000 jobs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

LOAD = Path(__file__).with_name("load.py")
DEFAULT_LOAD_ARGS = [
    "--db", "postgres", "--processes", "1,3", "--workers", "64", "--jobs", "3000", "--pg-cluster",
]  # fmt: skip
FIGURES = [
    ("api_cpu_ms_per_cycle", "API CPU ms"),
    ("postgres_cpu_ms_per_cycle", "PostgreSQL CPU ms"),
    ("statements_per_cycle", "statements"),
    ("commits_per_cycle", "commits"),
    ("rows_written_per_cycle", "rows written"),
    ("buffers_written_per_cycle", "buffers written"),
    ("wal_records_per_cycle", "WAL records"),
    ("client_cpu_ms_per_cycle", "client CPU ms"),
    ("stub_cpu_ms_per_cycle", "stub CPU ms"),
    ("cycles_per_s", "cycles/s"),
    ("pull_p99_ms", "pull p99 ms"),
    ("errors", "errors"),
    ("duplicates", "duplicates"),
]


def run_load(python: str, load_args: list[str]) -> list[dict[str, Any]]:
    """One run of load.py for the checkout of ``python``; its rows, one per process count."""
    with tempfile.TemporaryDirectory(prefix="wf-sbs-") as tmp:
        out = Path(tmp) / "figures.json"
        command = [sys.executable, str(LOAD), *load_args, "--python", python, "--out", str(out)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        rows: list[dict[str, Any]] = json.loads(out.read_text())["rows"]
        return rows


def cell(rows: list[dict[str, Any]], key: str) -> str:
    return ", ".join("-" if row.get(key) is None else str(row[key]) for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the interpreter of the 'before' checkout")
    parser.add_argument(
        "--after", default=sys.executable, help="the 'after' checkout's (default: this one)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("load_args", nargs="*", help="after --: load.py's arguments instead")
    args = parser.parse_args()
    load_args = args.load_args or DEFAULT_LOAD_ARGS
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for round_ in range(1, args.rounds + 1):
        for side, python in (("before", args.before), ("after", args.after)):
            print(f"# round {round_}: {side}", file=sys.stderr, flush=True)
            for row in run_load(python, load_args):
                runs.setdefault((side, row["processes"]), []).append(row)
    columns = sorted(runs, key=lambda c: (c[1], c[0] != "before"))
    print("| per cycle | " + " | ".join(f"{s}, {p} process(es)" for s, p in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for key, label in FIGURES:
        print(f"| {label} | " + " | ".join(cell(runs[c], key) for c in columns) + " |")
    for processes in sorted({p for _, p in columns}):
        medians = {
            side: statistics.median(
                row["api_cpu_ms_per_cycle"] + (row["postgres_cpu_ms_per_cycle"] or 0.0)
                for row in runs[(side, processes)]
            )
            for side in ("before", "after")
        }
        print(
            f"{processes} process(es): API + PostgreSQL CPU per cycle, median "
            f"{medians['before']:.2f} -> {medians['after']:.2f} ms "
            f"({100 * medians['after'] / medians['before']:.0f} % of before)"
        )


if __name__ == "__main__":
    main()
