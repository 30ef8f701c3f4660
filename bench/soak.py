"""Soak: many nights in a row on one warehouse, with a rerun, a killed run, a resumed run and a run on a bad file.

After every night a separate process (the embedded metastore admits one at a time) reads the warehouse as a user
would and checks: the published dates are the expected ones; every table of each night comes from the one run
``published_runs`` names (the run id inside recommendations, factors and neighbours, the row counts ``runs``
recorded for that run); no duplicate (user, item) in recommendations or interactions; and disk stays bounded
(replaced versions, unpublished attempts, work folders and checkpoints collected after the grace period, set
short here). Prints a table and appends it to bench/results/soak.md.

    .venv/bin/python bench/soak.py [--users 200] [--grace-hours 0.02]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import append_result, markdown

RESULTS = Path(__file__).resolve().parent / "results" / "soak.md"


def small_config(folder: Path, users: int, grace_hours: float) -> Path:
    """A config beside a copy of base.toml: a small synthetic catalogue, a short grace period."""
    from reelrank.config import default_conf_dir

    shutil.copy(default_conf_dir() / "base.toml", folder / "base.toml")
    (folder / "soak.toml").write_text(
        f"[synthetic]\nusers = {users}\nitems = {max(users * 3 // 4, 50)}\nratings = {users * 30}\n"
        f"[train]\nepochs = 2\nreader_workers = 1\n[spark]\nshuffle_partitions = 4\n"
        f"[sequence]\nepochs = 4\nmax_positions = 0\n[warehouse]\ngrace_hours = {grace_hours}\n"
    )
    return folder / "soak.toml"


def reelrank(config: Path, data: Path, *args: str, env: dict | None = None) -> tuple[int, str, float]:
    cmd = [sys.executable, "-m", "reelrank.cli", *args[:1], "--config", str(config), "--data-dir", str(data),
           *args[1:]]
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    return r.returncode, r.stdout + r.stderr, time.monotonic() - t0


def check(config: str, data: str) -> dict:
    """What the warehouse shows (run in its own process)."""
    from pyspark.sql import functions as F

    from reelrank import catalog
    from reelrank.config import load_config
    from reelrank.session import build_spark
    from reelrank.warehouse import publishing

    cfg = load_config(config, {"warehouse": {"data_dir": data}})
    spark = build_spark(cfg)
    db = cfg.warehouse.database
    shown = {str(d): r for d, r in publishing.published_runs(spark, db).items()}
    runs = spark.sql(f"SELECT run_id, status, stage_rows FROM (SELECT *, row_number() OVER (PARTITION BY run_id "
                     f"ORDER BY recorded_at DESC) AS n FROM {db}.runs) WHERE n = 1").collect()
    latest = {r.run_id: (r.status, dict(r.stage_rows or {})) for r in runs}
    nights = {}
    for day, run_id in shown.items():
        on = F.col("run_date") == F.lit(day)
        t = {name: spark.table(f"{db}.{name}").filter(on) for name in catalog.TABLES}
        markers = set()
        markers |= {r[0] for r in t["recommendations"].select("model_version").distinct().collect()}
        for name in ("user_factors", "item_factors"):
            markers |= {r[0] for r in t[name].select("model_version").distinct().collect()}
        status, rows = latest.get(run_id, ("missing", {}))
        nights[day] = {
            "run": run_id, "status": status, "one_run": markers == {run_id},
            "recs": t["recommendations"].count(), "recs_recorded": rows.get("score"),
            "interactions": t["interactions"].count(), "interactions_recorded": rows.get("matrix"),
            "dup_recs": t["recommendations"].groupBy("user_id", "item_id").count().filter("count > 1").count(),
            "dup_interactions": t["interactions"].groupBy("user_id", "item_id").count().filter("count > 1").count(),
            "empty_tables": sorted(n for n, df in t.items()
                                   if n != "rejected_interactions" and df.limit(1).count() == 0),
        }
    spark.stop()
    return {"shown": shown, "nights": nights, "statuses": sorted(s for s, _ in latest.values())}


def disk(data: Path) -> dict:
    """Bytes under the data dir and the folders that must stay bounded."""
    warehouse = data / "warehouse" / "reelrank.db"
    versions = {p.name: sum(1 for d in p.glob("run_date=*/*") if d.is_dir()) for p in warehouse.iterdir()
                if p.is_dir() and any(p.glob("run_date=*"))} if warehouse.exists() else {}
    return {
        "mb": round(sum(f.stat().st_size for f in data.rglob("*") if f.is_file()) / 1e6, 1),
        "max_versions": max(versions.values(), default=0),
        "work_dirs": sum(1 for d in (data / "runs").iterdir() if d.is_dir()) if (data / "runs").exists() else 0,
        "checkpoints": sum(1 for _ in (data / "checkpoints").iterdir()) if (data / "checkpoints").exists() else 0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--grace-hours", type=float, default=0.02)
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--check", nargs=2, metavar=("CONFIG", "DATA"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.check:
        print("SOAK-JSON " + json.dumps(check(*args.check)))
        return
    root = Path(tempfile.mkdtemp(prefix="reelrank-soak-"))
    config, data = small_config(root, args.users, args.grace_hours), root / "data"
    bad = root / "bad.csv"
    bad.write_text("user_id,item_id,rating,timestamp\n" + "u1,i1,seven,yesterday\n" * 50)
    day = [f"2026-03-0{i}" for i in range(1, 10)]
    nights = [  # (what, arguments, environment, expected exit, dates published after it)
        ("first night", ["nightly", "--date", day[0]], {}, 0, day[:1]),
        ("second night", ["nightly", "--date", day[1]], {}, 0, day[:2]),
        ("rerun of the second", ["nightly", "--date", day[1]], {}, 0, day[:2]),
        ("killed while publishing", ["nightly", "--date", day[2]],
         {"REELRANK_FAILPOINTS": "publish.registered#7=kill"}, -9, day[:2]),
        ("resumed", ["nightly", "--date", day[2], "--resume"], {}, 0, day[:3]),
        ("bad input file", ["nightly", "--date", day[3], "--source", "csv", "--input", str(bad)], {}, 1, day[:3]),
        ("killed in training", ["nightly", "--date", day[3]], {"REELRANK_FAILPOINTS": "stage.train=kill"}, -9, day[:3]),
        ("resumed", ["nightly", "--date", day[3], "--resume"], {}, 0, day[:4]),
        ("fifth night", ["nightly", "--date", day[4]], {}, 0, day[:5]),
        ("rerun of the fifth", ["nightly", "--date", day[4]], {}, 0, day[:5]),
    ]
    rows, before = [], None
    for what, cli_args, env, want_rc, want_dates in nights:
        rc, log, seconds = reelrank(config, data, *cli_args, env=env)
        r = subprocess.run([sys.executable, __file__, "--check", str(config), str(data)], capture_output=True,
                           text=True)
        line = next((x for x in r.stdout.splitlines() if x.startswith("SOAK-JSON ")), None)
        if line is None:
            raise SystemExit(f"check failed after {what}:\n{r.stdout[-2000:]}{r.stderr[-3000:]}")
        seen = json.loads(line.removeprefix("SOAK-JSON "))
        nights_ok = all(
            n["status"] == "published" and n["one_run"] and n["recs"] == n["recs_recorded"] > 0
            and n["interactions"] == n["interactions_recorded"] and n["dup_recs"] == 0 and n["dup_interactions"] == 0
            and not n["empty_tables"] for n in seen["nights"].values())
        unchanged = before is None or rc == 0 or all(seen["shown"].get(d) == r for d, r in before.items())
        space = disk(data)
        bounded = space["max_versions"] <= len(want_dates) + 2 and space["work_dirs"] <= 3
        ok = rc == want_rc and sorted(seen["shown"]) == want_dates and nights_ok and unchanged and bounded
        rows.append({"night": what, "exit": rc, "s": round(seconds), "dates shown": len(seen["shown"]),
                     "tables from one run": all(n["one_run"] for n in seen["nights"].values()),
                     "rows = recorded, no duplicates": nights_ok, "failed run left nights as they were": unchanged,
                     "MB": space["mb"], "versions/table (max)": space["max_versions"],
                     "work dirs": space["work_dirs"], "ok": ok})
        print(rows[-1], flush=True)
        if not ok:
            print(log[-3000:], json.dumps(seen, indent=1)[:3000], flush=True)
        before = seen["shown"]
    table = markdown(rows)
    print(table)
    if not args.no_save:
        append_result(RESULTS, f"soak: {len(rows)} nights on one warehouse, {args.users} synthetic users, grace "
                      f"{args.grace_hours} h (load {os.getloadavg()[0]:.1f} at the end)", table)
    shutil.rmtree(root, ignore_errors=True)
    sys.exit(0 if all(r["ok"] for r in rows) else 1)


if __name__ == "__main__":
    main()
