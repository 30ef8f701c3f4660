"""The whole nightly on the synthetic generator at growing sizes, one process each, in one go (issue 15): per stage
seconds, rows and shuffle bytes; peak memory of the driver's Python, its JVM and the Python workers (from /proc,
sampled every second); the night's wall time; then the cost exponent between sizes, log(time ratio) / log(size
ratio), per stage and overall (1.0 is linear; lower is better). Appends to bench/results/nightly_scale.md. Then
bench/cap_effect.py on each finished night: what the user-user cap changed (nothing where the lists are exact).

    .venv/bin/python bench/nightly_scale.py [--sizes 300k,1M,3M,10M] [--root DIR] [--timeout-min 60]
        [--driver-memory 8g]

Start it on a quiet machine (load below 1.5); the heading records the load. Sizes are scaled like a catalogue:
more users than items, both growing (300k is the embedded default, 5,000 × 2,000).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from benchlib import append_result, markdown
from reelrank.catalog import STAGE_NAMES
from reelrank.runs import stage_line

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "nightly_scale.md"
SIZES = {"300k": (5_000, 2_000, 300_000), "1M": (20_000, 5_000, 1_000_000), "3M": (50_000, 10_000, 3_000_000),
         "10M": (100_000, 20_000, 10_000_000)}
"""name -> (users, items, ratings)."""
DAY = "2026-12-01"
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _children(pid: int) -> list[int]:
    """Children of every thread of ``pid``: the JVM forks Spark's Python workers from threads other than its main
    one, and ``/proc/PID/task/PID/children`` lists only the main thread's."""
    out: list[int] = []
    for children in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(children) as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return out


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += _children(p)
    return out


def _rss_and_kind(pid: int) -> tuple[int, str] | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * PAGE
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    return rss, "jvm" if "java" in cmd.split(" ", 1)[0] else "python"


class MemorySampler(threading.Thread):
    """Peak RSS of the driver's Python (the root), its JVM and the other Python processes (Spark's workers)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, defaultdict(int), threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            now: dict[str, int] = defaultdict(int)
            for p in _tree(self.pid):
                got = _rss_and_kind(p)
                if got is None:
                    continue
                rss, kind = got
                now["driver python" if p == self.pid else kind if kind == "jvm" else "python workers"] += rss
            now["total"] = sum(now.values())
            for k, v in now.items():
                self.peak[k] = max(self.peak[k], v)


def shuffle_bytes(events: Path, windows: dict[str, tuple[float, float]]) -> dict[str, int]:
    """Shuffle bytes written by the tasks that finished within each stage's time window (Spark's event log)."""
    out: dict[str, int] = defaultdict(int)
    for log in events.glob("*"):
        with log.open() as f:
            for line in f:
                if '"SparkListenerTaskEnd"' not in line:
                    continue
                ev = json.loads(line)
                done = ev.get("Task Info", {}).get("Finish Time", 0) / 1000
                written = ev.get("Task Metrics", {}).get("Shuffle Write Metrics", {}).get("Shuffle Bytes Written", 0)
                for stage, (start, end) in windows.items():
                    if start <= done <= end + 1:
                        out[stage] += written
                        break
    return out


def night(name: str, root: Path, timeout_s: float, driver_memory: str) -> dict:
    users, items, ratings = SIZES[name]
    folder = root / name
    shutil.rmtree(folder, ignore_errors=True)
    conf = folder / "conf"
    conf.mkdir(parents=True)
    shutil.copy(REPO / "conf" / "base.toml", conf / "base.toml")
    (conf / "scale.toml").write_text(
        f'[spark]\nmaster = "local[2,2]"\nshuffle_partitions = 8\nevent_log = true\ndriver_memory = "{driver_memory}"\n'
        f"[synthetic]\nusers = {users}\nitems = {items}\nratings = {ratings}\n")
    data = folder / "data"
    cmd = [sys.executable, "-m", "reelrank.cli", "nightly", "--config", str(conf / "scale.toml"), "--data-dir",
           str(data), "--date", DAY]
    t0 = time.monotonic()
    with open(folder / "night.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        sampler = MemorySampler(proc.pid)
        sampler.start()
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        sampler.stop.set()
        sampler.join()
    wall = time.monotonic() - t0
    text = (folder / "night.log").read_text(errors="replace")
    line = stage_line()
    stages, windows = {}, {}
    for raw in text.splitlines():
        m, stamp = line.search(raw), STAMP.match(raw)
        if m and stamp and m["stage"] in STAGE_NAMES:
            end = datetime.strptime(stamp[1], "%Y-%m-%d %H:%M:%S").timestamp()
            seconds = float(m["seconds"])
            stages[m["stage"]] = {"seconds": seconds, "rows": int(m["count"].replace(",", ""))}
            windows[m["stage"]] = (end - seconds - 1, end)
    shuffled = shuffle_bytes(data / "spark-events", windows) if (data / "spark-events").is_dir() else {}
    for stage, v in stages.items():
        v["shuffle MB"] = shuffled.get(stage, 0) / 1e6
    return {"name": name, "ratings": ratings, "rc": rc, "wall": wall, "stages": stages,
            "peak GB": {k: v / 2**30 for k, v in sampler.peak.items()}}


def exponent(t1: float, t2: float, n1: int, n2: int) -> str:
    return f"{math.log(t2 / t1) / math.log(n2 / n1):.2f}" if t1 > 0 and t2 > 0 else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="300k,1M,3M,10M")
    ap.add_argument("--root", default=None, help="where the nights' data dirs go (default: a temp folder)")
    ap.add_argument("--timeout-min", type=float, default=60)
    ap.add_argument("--driver-memory", default="8g",
                    help="the JVM's heap; it grows to it (12g gave 12.7 GiB RSS at 10M), so it sets the JVM's share")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="reelrank-scale-"))
    load = os.getloadavg()[0]
    nights = []
    for name in args.sizes.split(","):
        nights.append(night(name, root, args.timeout_min * 60, args.driver_memory))
        print(json.dumps(nights[-1]), flush=True)
    rows = []
    for n in nights:
        for stage in [*STAGE_NAMES, "whole night"]:
            v = n["stages"].get(stage) if stage != "whole night" else {"seconds": n["wall"], "rows": n["ratings"]}
            if v is None:
                continue
            rows.append({"size": n["name"], "stage": stage, "seconds": f"{v['seconds']:.1f}", "rows": f"{v['rows']:,}",
                         "shuffle MB": f"{v.get('shuffle MB', 0):.0f}" if stage != "whole night" else "",
                         "exit": n["rc"] if stage == "whole night" else ""})
    memory = [{"size": n["name"], **{k: f"{v:.2f}" for k, v in sorted(n["peak GB"].items())}} for n in nights]
    scaling = []
    # consecutive sizes, then each size to the largest (the goal is on 1M → 10M)
    spans = list(zip(nights, nights[1:], strict=False)) + [(a, nights[-1]) for a in nights[:-2]]
    for a, b in spans:
        row = {"from → to": f"{a['name']} → {b['name']}",
               "whole night": exponent(a["wall"], b["wall"], a["ratings"], b["ratings"])}
        for stage in STAGE_NAMES:
            if stage in a["stages"] and stage in b["stages"]:
                row[stage] = exponent(a["stages"][stage]["seconds"], b["stages"][stage]["seconds"],
                                      a["ratings"], b["ratings"])
        scaling.append(row)
    body = (markdown(rows) + "\n\npeak memory, GiB (RSS sampled every second):\n\n" + markdown(memory)
            + "\n\ncost exponent log(time ratio) / log(size ratio) (1.0 = linear):\n\n" + markdown(scaling))
    print(body)
    if not args.no_save:
        append_result(RESULTS, f"the nightly at {args.sizes} synthetic interactions, local[2], driver "
                      f"{args.driver_memory} (load {load:.1f} at the start)", body)
    for n in nights:  # what the user-user cap changed: nothing on exact nights (the bench's self-check), else how much
        folder = root / n["name"]
        if n["rc"] == 0:
            subprocess.run([sys.executable, str(Path(__file__).with_name("cap_effect.py")), "--config",
                            str(folder / "conf" / "scale.toml"), "--data-dir", str(folder / "data"),
                            *(["--no-save"] if args.no_save else [])], check=False)


if __name__ == "__main__":
    main()
