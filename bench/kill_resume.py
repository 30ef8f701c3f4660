"""Kill the nightly in the middle of each stage, resume it, and check the resumed night equals an uninterrupted one.

For every stage S: a copy of a data directory where a reference night was published, the next night's
``reelrank nightly`` killed with SIGKILL halfway through S (timed from the reference run), then
``reelrank nightly --resume``. The resumed run must exit 0, publish, skip
exactly the stages before S whose outputs were complete, and end with the reference's row count in every
stage. Prints a table and appends it to bench/results/kill_resume.md.

    .venv/bin/python bench/kill_resume.py [--stages ingest,features] [--users 400]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import append_result, markdown
from reelrank.catalog import STAGE_NAMES
from reelrank.config import default_conf_dir
from reelrank.runs import stage_line

RESULTS = Path(__file__).resolve().parent / "results" / "kill_resume.md"
STAGE_LINE = stage_line()
RUN_LINE = re.compile(r"INFO\s+run \S+ for \d{4}-\d\d-\d\d")
DATE, NEXT = "2026-01-05", "2026-01-06"


def small_config(folder: Path, users: int) -> Path:
    """base.toml plus a small synthetic catalogue (users × 30 ratings) in ``folder``."""
    shutil.copy(default_conf_dir() / "base.toml", folder / "base.toml")
    (folder / "small.toml").write_text(
        f"[synthetic]\nusers = {users}\nitems = {max(users * 3 // 4, 50)}\nratings = {users * 30}\n"
        "[train]\nepochs = 2\nreader_workers = 1\n[spark]\nshuffle_partitions = 4\n"
    )
    return folder / "small.toml"


def nightly(config: Path, data: Path, day: str, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "reelrank.cli", "nightly", "--config", str(config), "--data-dir", str(data),
           "--date", day, *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def stage_rows(data: Path, day: str) -> tuple[dict[str, int], bool]:
    """Rows per stage and the published flag of the date's latest attempt, from its state file (none: {}, False)."""
    pointer = data / "runs" / f"current-{day}"
    if not pointer.exists():
        return {}, False
    state = json.loads((data / "runs" / pointer.read_text().strip() / "state.json").read_text())
    return {s["name"]: s["rows"] for s in state["stages"]}, state["published"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", default=",".join(STAGE_NAMES))
    ap.add_argument("--users", type=int, default=400)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="reelrank-kill-"))
    config = small_config(root, args.users)

    ref = nightly(config, root / "reference", DATE)
    out, _ = ref.communicate()
    if ref.returncode != 0:
        raise SystemExit(f"reference nightly failed:\n{out[-3000:]}")
    seconds = {m["stage"]: float(m["seconds"]) for m in STAGE_LINE.finditer(out)}
    expected, _ = stage_rows(root / "reference", DATE)
    print(f"reference: {sum(seconds.values()):.0f} s of stages; rows {expected}", flush=True)

    rows = []
    for stage in args.stages.split(","):
        data = root / stage
        shutil.copytree(root / "reference", data)  # last night published: the metastore and warehouse exist
        before = STAGE_NAMES[: STAGE_NAMES.index(stage)]
        proc = nightly(config, data, NEXT)
        t_start = time.monotonic()
        assert proc.stdout is not None
        for line in proc.stdout:  # the stage starts when the one before it logs its line
            m = STAGE_LINE.search(line)
            if (stage == STAGE_NAMES[0] and RUN_LINE.search(line)
                    or m and m["stage"] == (before[-1] if before else None)):
                break
        time.sleep(seconds[stage] / 2)
        killed_after = time.monotonic() - t_start
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        resumed = nightly(config, data, NEXT, "--resume")
        log, _ = resumed.communicate()
        skipped = [s for s in STAGE_NAMES if re.search(rf"INFO\s+{s}\s+skipped", log)]
        got, published = stage_rows(data, NEXT)
        ok = resumed.returncode == 0 and published and got == expected and skipped == list(before)
        rows.append({"killed in": stage, "after s": round(killed_after, 1), "resume exit": resumed.returncode,
                     "skipped": ", ".join(skipped) or "-", "rows = reference": got == expected, "ok": ok})
        print(rows[-1], flush=True)
        if not ok:
            print(log[-3000:], flush=True)
        shutil.rmtree(data, ignore_errors=True)
    table = markdown(rows)
    print(table)
    if not args.no_save:
        load = os.getloadavg()[0]
        append_result(RESULTS, f"SIGKILL halfway through each stage, then --resume; {args.users} synthetic users "
                      f"(load {load:.1f} at the end)", table)
    shutil.rmtree(root, ignore_errors=True)
    sys.exit(0 if all(r["ok"] for r in rows) else 1)


if __name__ == "__main__":
    main()
