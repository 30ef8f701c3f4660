"""ALS fit time and top-N time on synthetic ratings: blocked top-N vs recommendForAllUsers + anti-join.

    python bench/als.py --sizes 1M,10M          # appends to bench/results/als.md
    python bench/als.py --sizes 200k --block-sizes 128,4096
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

from benchlib import append_result, markdown
from reelrank.cli.bootstrap import add_common, config_from_args, setup_logging
from reelrank.columns import ITEM, ITEM_IDX, RATING, TS, USER, USER_IDX
from reelrank.factorize import fit_als, recommend_all_users_spark, recommend_top_n
from reelrank.inputs.synthetic import generate
from reelrank.session import build_spark

RESULTS = Path(__file__).resolve().parent / "results" / "als.md"


def _count(text: str) -> int:
    text = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text[:-1] if text[-1] in "km" else text) * mult)


def _ratings(spark, cfg, n: int, ratings_per_user: int, items_per_rating: float, tmp: Path):
    """Synthetic ratings indexed to (user_idx, item_idx, rating, ts), written to Parquet and read back."""
    users = max(n // ratings_per_user, 10)
    items = max(int(n * items_per_rating), 200)
    syn = dataclasses.replace(cfg.synthetic, ratings=n, users=users, items=items)
    pdf, _ = generate(syn)
    out = pd.DataFrame(
        {
            USER_IDX: pd.factorize(pdf[USER])[0].astype("int32"),
            ITEM_IDX: pd.factorize(pdf[ITEM])[0].astype("int32"),
            RATING: pdf[RATING].astype("float64"),
            TS: pdf["timestamp"].astype("int64"),
        }
    )
    path = tmp / f"ratings_{n}.parquet"
    out.to_parquet(path, index=False)
    return spark.read.parquet(str(path)), users, items


def _drain(df) -> None:
    """Run the whole plan without collecting (the ``noop`` sink)."""
    df.write.format("noop").mode("overwrite").save()


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _timed_or_cancel(spark, fn, limit_s: float) -> float | None:
    """Seconds ``fn`` took, or ``None`` when it ran past ``limit_s`` and its Spark jobs were cancelled."""
    done = threading.Event()
    timer = threading.Timer(limit_s, lambda: done.is_set() or spark.sparkContext.cancelAllJobs())
    timer.start()
    t = time.perf_counter()
    try:
        fn()
        return time.perf_counter() - t
    except Exception as exc:  # noqa: BLE001 - a cancelled job surfaces as a Py4J/Spark error
        if time.perf_counter() - t >= limit_s:
            return None
        raise exc
    finally:
        done.set()
        timer.cancel()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.add_argument("--sizes", default="1M,10M", help="comma-separated rating counts, e.g. 200k,1M,10M")
    p.add_argument("--n", type=int, default=None, help="top-N (default: [candidates.als] n)")
    p.add_argument("--block-sizes", default="128,4096", help="recommendForAllUsers blockSize values")
    p.add_argument("--ratings-per-user", type=int, default=100)
    p.add_argument("--items-per-rating", type=float, default=0.002, help="catalogue size as a share of ratings")
    p.add_argument("--no-save", action="store_true", help="print only, do not append to bench/results/als.md")
    p.add_argument("--rfau-max-s", type=float, default=1800.0,
                   help="cancel a recommendForAllUsers run after this many seconds (recorded as '> N')")
    args = p.parse_args()
    setup_logging(args.verbose)
    tmp = Path(tempfile.mkdtemp(prefix="bench-als-"))
    if not args.data_dir:
        args.data_dir = str(tmp / "data")
    cfg = config_from_args(args)
    spark = build_spark(cfg)
    n_top = args.n or cfg.candidates["als"].n
    block_sizes = [int(b) for b in args.block_sizes.split(",")]
    rows = []
    for size in (_count(s) for s in args.sizes.split(",")):
        ratings, users, items = _ratings(spark, cfg, size, args.ratings_per_user, args.items_per_rating, tmp)
        ratings = ratings.cache()
        ratings.count()
        seen = ratings.select(USER_IDX, ITEM_IDX)
        holder = {}
        fit_s = _timed(lambda: holder.update(m=fit_als(ratings, cfg.als)) or holder["m"].als.userFactors.count())
        model = holder["m"]
        users_df = ratings.select(USER_IDX).distinct()
        _drain(recommend_top_n(model, users_df.limit(10), seen, n_top))  # warm-up: start the Python workers
        blocked_s = _timed(lambda: _drain(recommend_top_n(model, users_df, seen, n_top)))
        print(f"{size:,} ratings: fit {fit_s:.1f} s, blocked top-{n_top} {blocked_s:.1f} s", flush=True)
        row = {"ratings": size, "users": users, "items": items, "rank": cfg.als.rank, "iter": cfg.als.max_iter,
               "top_n": n_top, "fit_s": round(fit_s, 1), "blocked_topn_s": round(blocked_s, 1)}
        for bs in block_sizes:
            s = _timed_or_cancel(spark, lambda: _drain(recommend_all_users_spark(model, seen, n_top, bs)),
                                 args.rfau_max_s)
            row[f"rfau_bs{bs}_s"] = round(s, 1) if s is not None else f"> {args.rfau_max_s:.0f} (cancelled)"
            row[f"ratio_bs{bs}"] = round(blocked_s / s, 2) if s is not None else f"< {blocked_s / args.rfau_max_s:.2f}"
            print(f"  recommendForAllUsers blockSize {bs}: {row[f'rfau_bs{bs}_s']}", flush=True)
        rows.append(row)
        print(pd.DataFrame([row]).to_string(index=False), flush=True)
        ratings.unpersist()
    table = markdown(rows)
    print(table)
    if not args.no_save:
        mode = "implicit" if cfg.als.implicit else "explicit"
        append_result(RESULTS, f"{cfg.spark.master} · {mode} ALS · blocked top-N vs recommendForAllUsers(n + max seen) "
                               "+ anti-join (ratio < 1: blocked is faster)", table)
    spark.stop()


if __name__ == "__main__":
    main()
