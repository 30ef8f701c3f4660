"""``reelrank runs``, a ``count(*)`` query and ``where``, answered by DuckDB from the warehouse's files (through
the publish-time manifest), against the same question as Spark SQL (``reelrank query --spark``: the runs listing's
SQL, the same count; ``where`` has no Spark path), on one warehouse, alternating, in one run. Lower seconds is
better; the ratio is DuckDB / Spark.

    .venv/bin/python bench/cli_fast.py --config CONF --data-dir DIR [--repeats 5]

The warehouse needs at least one published night (``reelrank nightly --config CONF --data-dir DIR``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import append_result, markdown
from reelrank.config import load_config
from reelrank.warehouse.fastread import runs_sql

RESULTS = Path(__file__).resolve().parent / "results" / "cli_fast.md"


def timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    return time.monotonic() - t0, r.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    base = [sys.executable, "-m", "reelrank.cli"]
    where = ["--config", args.config, "--data-dir", args.data_dir]
    db = load_config(args.config).warehouse.database
    spark = ["query", "--spark", *where]
    commands: dict[str, tuple[list[str], list[str] | None]] = {
        "runs": (["runs", *where], [*spark, runs_sql(db, 10)]),
        "query count(*)": (["query", *where, f"SELECT count(*) AS n FROM {db}.recommendations"],
                           [*spark, f"SELECT count(*) AS n FROM {db}.recommendations"]),
        "where": (["where", *where, "recommendations"], None),
    }
    load = os.getloadavg()[0]
    rows, same = [], {}
    for name, (fast_cmd, spark_cmd) in commands.items():
        paths = {"duckdb": fast_cmd, **({"spark": spark_cmd} if spark_cmd else {})}
        times: dict[str, list[float]] = {p: [] for p in paths}
        answers: dict[str, set[str]] = {p: set() for p in paths}
        for _ in range(args.repeats):
            for path, cmd in paths.items():
                seconds, out = timed(base + cmd)
                times[path].append(seconds)
                answers[path].add(out)
        rows += [{"command": name, "path": p, "median s": f"{statistics.median(t):.2f}", "min s": f"{min(t):.2f}",
                  "max s": f"{max(t):.2f}", "runs": len(t)} for p, t in times.items()]
        if "spark" in paths:
            same[name] = answers["duckdb"] == answers["spark"] and len(answers["duckdb"]) == 1
            fast, slow = statistics.median(times["duckdb"]), statistics.median(times["spark"])
            rows.append({"command": name, "path": "ratio duckdb / spark (median)", "median s": f"{fast / slow:.3f}",
                         "min s": "", "max s": "", "runs": ""})
    table = markdown(rows) + "\n\nsame answer on both paths: " + ", ".join(f"{n} {ok}" for n, ok in same.items())
    print(table)
    if not args.no_save:
        append_result(RESULTS, f"reelrank runs / query / where (DuckDB) vs query --spark, {args.repeats} alternating "
                      f"repeats (load {load:.1f} at the start)", table)


if __name__ == "__main__":
    main()
