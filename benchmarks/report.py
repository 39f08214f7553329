"""Markdown tables from the JSON lines that load.py prints (or from its --out files).

uv run python benchmarks/load.py ... | tee run.jsonl
uv run python benchmarks/report.py run.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

CYCLE_COLUMNS = [
    ("db", "database"),
    ("upstream", "upstream"),
    ("processes", "API processes"),
    ("workers", "workers"),
    ("cycles_per_s", "cycles/s"),
    ("updates_per_s", "updates/s"),
    ("pull_p50_ms", "pull p50 ms"),
    ("pull_p99_ms", "pull p99 ms"),
    ("update_p50_ms", "update p50 ms"),
    ("update_p99_ms", "update p99 ms"),
    ("api_cpu_ms_per_cycle", "API CPU ms/cycle"),
    ("postgres_cpu_ms_per_cycle", "PostgreSQL CPU ms/cycle"),
    ("client_cpu_ms_per_cycle", "client CPU ms/cycle"),
    ("duplicates", "duplicates"),
    ("errors", "errors"),
]
PULL_COLUMNS = [
    ("db", "database"),
    ("queued_not_fitting", "queued jobs that do not fit"),
    ("pulls", "pulls"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("mean_ms", "mean ms"),
]


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    lines = [
        "| " + " | ".join(title for _, title in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        cells = ["-" if row.get(key) is None else str(row[key]) for key, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: uv run python benchmarks/report.py run.jsonl",
    )
    parser.add_argument(
        "files", nargs="+", type=Path, help="JSON lines of load.py, or its --out JSON files"
    )
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for path in args.files:
        try:
            text = path.read_text()
        except OSError as error:
            parser.error(f"cannot read {path}: {error.strerror}")
        if text.lstrip().startswith("{") and '"rows"' in text[:200]:
            rows += json.loads(text)["rows"]
            continue
        for line in text.splitlines():
            if line.startswith("{") and '"machine"' not in line:
                rows.append(json.loads(line))
    cycles = [r for r in rows if "cycles_per_s" in r]
    pulls = [r for r in rows if "queued_not_fitting" in r]
    if cycles:
        print(table(cycles, CYCLE_COLUMNS), end="\n\n")
    if pulls:
        print(table(pulls, PULL_COLUMNS))


if __name__ == "__main__":
    main()
