"""Issue 14's check: on a small synthetic catalogue (400 users, 200 items, 12,000 ratings, 1 epoch) over several
nights of different dates, is the published list ever worse than the best baseline of its night beyond noise, and
does the report's first line say which list went out and why? Prints a table per night and appends it to
bench/results/baseline_gate.md; with Chromium present (``apt-get install chromium``), also a screenshot of the
last night's report (bench/results/report_<date>.png).

    .venv/bin/python bench/baseline_gate.py [--dates 2026-11-21,2026-11-22,2026-11-23] [--data-dir DIR]

"Beyond noise" is the gate's own test: the difference over its standard error bound (both lists' Bhatia–Davis
bounds combined, :func:`reelrank.quality.standard_error_bound`) above ``[quality] noise_z``. Higher z means the
baseline is better; a published list at or above the best baseline has z ≤ 0.
"""

from __future__ import annotations

import argparse
import csv
import html
import io
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import append_result, markdown
from reelrank.candidates import is_baseline, names
from reelrank.config import load_config
from reelrank.quality import standard_error_bound

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CATALOGUE = "[synthetic]\nusers = 400\nitems = 200\nratings = 12000\n[train]\nepochs = 1\n"


def reelrank(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "reelrank.cli", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"reelrank {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return r


def query(where: list[str], sql: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(reelrank("query", *where, "--format", "csv", sql).stdout)))


def screenshot(report: Path, out: Path) -> bool:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return False
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", "--hide-scrollbars", "--window-size=1280,5200",
                        f"--screenshot={out}", report.as_uri()], capture_output=True, timeout=120, check=False)
    return out.exists()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dates", default="2026-11-21,2026-11-22,2026-11-23")
    ap.add_argument("--data-dir", default=None, help="default: a fresh temporary folder")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    root = Path(args.data_dir or tempfile.mkdtemp(prefix="reelrank-gate-"))
    conf = root / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "conf" / "base.toml", conf / "base.toml")
    (conf / "small.toml").write_text(CATALOGUE)
    cfg = load_config(conf / "small.toml")
    q = cfg.quality
    where = ["--config", str(conf / "small.toml"), "--data-dir", str(root / "data")]
    load = os.getloadavg()[0]
    rows, verdicts = [], []
    for day in args.dates.split(","):
        t0 = time.monotonic()
        reelrank("nightly", *where, "--date", day)
        seconds = time.monotonic() - t0
        metrics = {r["model"]: (float(r["value"]), int(r["users"])) for r in query(
            where, f"SELECT model, value, users FROM reelrank.metrics WHERE run_date = DATE'{day}' "
                   f"AND metric = '{q.metric}' AND k = {q.k}")}
        [run] = query(where, f"SELECT published_model FROM reelrank.runs WHERE run_date = DATE'{day}' "
                             f"AND status = 'published'")
        published = run["published_model"]
        baselines = {m: v for m, v in metrics.items() if m in names() and is_baseline(m)}
        best = max(baselines, key=lambda m: baselines[m][0])
        (mine, users), (top, top_users) = metrics[published], baselines[best]
        se = math.hypot(standard_error_bound(mine, users), standard_error_bound(top, top_users))
        z = (top - mine) / se if se > 0 else math.inf
        report = Path(reelrank("report", *where).stdout.strip())
        first = re.search(r"<p class=verdict id=verdict>(.*?)</p>", report.read_text(), re.S)
        verdicts.append(f"- {day}: {html.unescape(first.group(1)) if first else '(no verdict line)'}")
        rows.append({"date": day, "published": published, f"{q.metric}@{q.k}": f"{mine:.4f}",
                     "best baseline": best, "its value": f"{top:.4f}", "users": users,
                     "z (baseline − published)": f"{z:.2f}", "worse beyond noise": z > q.noise_z,
                     "lists": ", ".join(f"{m} {v[0]:.3f}" for m, v in sorted(metrics.items())),
                     "nightly s": f"{seconds:.0f}"})
    table = (markdown(rows) + f"\n\nnoise_z {q.noise_z}; the report's first line each night:\n\n"
             + "\n".join(verdicts))
    shot = RESULTS / f"report_{args.dates.split(',')[-1]}.png"
    if not args.no_save and screenshot(report, shot):
        table += f"\n\nscreenshot of the last report: {shot.relative_to(REPO)}"
    print(table)
    if not args.no_save:
        append_result(RESULTS / "baseline_gate.md", f"published list vs the best baseline, 400 users × 200 items, "
                      f"12,000 ratings, 1 epoch, {len(rows)} nights (load {load:.1f} at the start)", table)


if __name__ == "__main__":
    main()
