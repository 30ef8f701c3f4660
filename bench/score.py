"""Scoring throughput: the trained ranker scoring candidate rows in Spark (``score.score_candidates``: weights
broadcast once, pandas batches through ``mapInPandas``) versus single-process torch inference on the same rows
read with pandas. Appends a table to bench/results/score.md.

    python bench/score.py [--rows 2000000] [--features 12] [--model mlp]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from loader import make_data  # the loader bench's synthetic rows

from benchlib import append_result
from reelrank.cli.bootstrap import add_common, config_from_args, setup_logging
from reelrank.loader import write_shards
from reelrank.models import load
from reelrank.score import score_candidates
from reelrank.session import build_spark
from reelrank.train import train

RESULTS = Path(__file__).resolve().parent / "results" / "score.md"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(ap)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--features", type=int, default=12)
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    setup_logging(args.verbose)
    cfg = config_from_args(args)
    tmp = Path(tempfile.mkdtemp(prefix="bench-score-"))
    users, items = 50_000, 10_000
    pdf = make_data(args.rows, args.features, users, items, seed=0)
    write_shards(pdf, tmp / "rows", files=cfg.features.files_per_split, row_group_rows=cfg.features.rows_per_row_group)
    write_shards(pdf.iloc[:200_000], tmp / "train", files=2, row_group_rows=50_000)
    tcfg = dataclasses.replace(cfg.train, model=args.model, epochs=1, early_stopping_patience=0)
    train(str(tmp / "train"), None, tcfg, tmp / "model.pt", users, items)
    model_bytes = load(tmp / "model.pt").to_bytes()

    spark = build_spark(cfg.replace(warehouse={"data_dir": str(tmp / "d")}))
    rows_df = spark.read.parquet(str(tmp / "rows"))
    score_candidates(rows_df.limit(1000), model_bytes).write.format("noop").mode("overwrite").save()  # warm-up

    def spark_run() -> float:
        t = time.perf_counter()
        score_candidates(rows_df, model_bytes).write.format("noop").mode("overwrite").save()
        return time.perf_counter() - t

    def local_run() -> float:
        t = time.perf_counter()
        frame = pd.read_parquet(tmp / "rows")
        torch.set_num_threads(os.cpu_count() or 1)
        load(tmp / "model.pt").score_frame(frame)
        return time.perf_counter() - t

    timings: dict[str, list[float]] = {"spark": [], "local": []}
    for _ in range(args.repeats):  # interleaved, so both see the same machine
        timings["spark"].append(spark_run())
        timings["local"].append(local_run())
    spark.stop()
    best = {k: min(v) for k, v in timings.items()}
    rows = [
        {"path": f"Spark mapInPandas ({cfg.spark.master}, 1 torch thread per task)", "best_s": best["spark"]},
        {"path": f"single process (pandas + torch, {os.cpu_count()} threads)", "best_s": best["local"]},
    ]
    lines = ["| path | best s | rows/s | vs single process |", "|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['path']} | {r['best_s']:.2f} | {args.rows / r['best_s']:,.0f} | "
                     f"{best['local'] / r['best_s']:.2f}× |")
    table = "\n".join(lines)
    print(table)
    if not args.no_save:
        append_result(RESULTS, f"{args.rows:,} rows, {args.features} features, {args.model}, batch "
                      f"{cfg.train.batch_size} · best of {args.repeats} interleaved repeats (spark "
                      f"{', '.join(f'{t:.1f}' for t in timings['spark'])}; local "
                      f"{', '.join(f'{t:.1f}' for t in timings['local'])})", table)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
