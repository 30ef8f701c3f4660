"""Pearson neighbours at scale: reelrank's blocked Spark computation vs the single-process scipy floor.

For each data set (ml-100k u.data and synthetic catalogues of the given sizes) and each side (item-item by
default), this times in one run:

* ``spark-lists``: :func:`reelrank.neighbours.neighbour_lists` (the pipeline's path: fused top-k),
* ``spark-all``: :func:`reelrank.neighbours.similarities` written to a no-op sink (every pair, both directions),
* ``spark-selfjoin`` (small sizes only): the row-level alternative, a self-join on the co-rated side and a
  group-by of the six sums, to justify the blocked design,
* ``scipy``: the same kernel (:func:`reelrank.neighbours.pair_similarities`) over the same block pairs in one
  plain Python process, no Spark: the arithmetic floor (run in a child process so its peak RSS is its own),
* ``surprise``: scikit-surprise's ``pearson`` (KNNBasic fit) where its dense n×n matrices fit in memory.

Peak memory: the driver (this process), the JVM (driver and executors are one JVM in local mode) and the
Python workers, sampled from /proc every 0.2 s. Appends a table to bench/results/neighbours.md.

    python bench/neighbours.py [--sizes ml-100k,1M,10M] [--by item] [--blocks 4] [--selfjoin-max 1000000]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import multiprocessing as mp
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
from pyspark.sql import functions as F
from pyspark.sql import types as T

from benchlib import DATASETS
from reelrank import columns as C
from reelrank import neighbours as nbr
from reelrank import pair_kernel
from reelrank.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "neighbours.md"
SURPRISE_MAX_BYTES = 4 << 30
"""surprise's pearson holds six dense n×n float64 matrices; skip it above this."""

# users, items per synthetic size (ratings / users ≈ 100 per user on average, long-tailed)
SYNTHETIC_SHAPES = {1_000_000: (10_000, 5_000), 10_000_000: (100_000, 10_000)}
SCHEMA = T.StructType(
    [
        T.StructField(C.USER_IDX, T.IntegerType(), False),
        T.StructField(C.ITEM_IDX, T.IntegerType(), False),
        T.StructField(C.RATING, T.DoubleType(), False),
    ]
)


def parse_size(s: str) -> int | str:
    s = s.strip()
    if s == "ml-100k":
        return s
    mult = {"K": 1_000, "M": 1_000_000}.get(s[-1].upper(), 1)
    return int(float(s[:-1] if mult > 1 else s) * mult)


def load(size: int | str, cfg: Config) -> pd.DataFrame:
    """user_idx, item_idx, rating for ml-100k or a synthetic catalogue with ``size`` ratings."""
    if size == "ml-100k":
        raw = pd.read_csv(DATASETS / "ml-100k" / "u.data", sep="\t", names=["u", "i", "r", "t"])
        return pd.DataFrame({C.USER_IDX: raw.u - 1, C.ITEM_IDX: raw.i - 1, C.RATING: raw.r.astype(float)})
    from reelrank.inputs.synthetic import generate

    users, items = SYNTHETIC_SHAPES.get(size, (max(size // 100, 100), max(size // 200, 100)))
    scfg = dataclasses.replace(cfg.synthetic, users=users, items=items, ratings=size)
    ratings, _ = generate(scfg)
    u, _ = pd.factorize(ratings[C.USER], sort=True)
    i, _ = pd.factorize(ratings[C.ITEM], sort=True)
    return pd.DataFrame({C.USER_IDX: u.astype(np.int32), C.ITEM_IDX: i.astype(np.int32), C.RATING: ratings[C.RATING]})


class PeakMemory:
    """Samples RSS of this process, the JVM child and the JVM's Python workers; keeps the peaks."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval, self.me = interval, psutil.Process()
        self.peak = {"driver": 0, "jvm": 0, "workers": 0}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _jvm(self) -> psutil.Process | None:
        for ch in self.me.children(recursive=True):
            try:
                if "java" in ch.name():
                    return ch
            except psutil.Error:
                pass
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak["driver"] = max(self.peak["driver"], self.me.memory_info().rss)
                jvm = self._jvm()
                if jvm:
                    self.peak["jvm"] = max(self.peak["jvm"], jvm.memory_info().rss)
                    workers = sum(p.memory_info().rss for p in jvm.children(recursive=True))
                    self.peak["workers"] = max(self.peak["workers"], workers)
            except psutil.Error:
                pass
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def _floor_child(path: str, by: str, blocks: int, min_support: int, k: int, q: mp.Queue) -> None:
    """The scipy floor in a fresh process: same kernel, same block pairs, sequentially, no Spark."""
    import resource

    d = np.load(path)
    ent, oth = (d["u"], d["i"]) if by == "user" else (d["i"], d["u"])
    r = d["r"]
    t0 = time.perf_counter()
    pairs = 0
    lists = []
    blk = ent % blocks
    for a in range(blocks):
        for b in range(a, blocks):
            m = (blk == a) | (blk == b)
            out = pair_kernel.pair_similarities(ent[m], oth[m], r[m], None if a == b else blk[m] == a, min_support)
            pairs += len(out)
            lists.append(pair_kernel.local_top_k(out, k))
            del out
    top = pair_kernel.local_top_k(pd.concat(lists, ignore_index=True), k)
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    q.put({"secs": secs, "pairs": pairs // 2, "rows_top": len(top), "peak": peak})


def _surprise_child(path: str, by: str, q: mp.Queue) -> None:
    import resource

    import surprise

    d = np.load(path)
    df = pd.DataFrame({"u": d["u"], "i": d["i"], "r": d["r"]})
    ts = surprise.Dataset.load_from_df(df, surprise.Reader(rating_scale=(1, 5))).build_full_trainset()
    t0 = time.perf_counter()
    sim_options = {"name": "pearson", "user_based": by == "user", "min_support": 2}
    algo = surprise.KNNBasic(sim_options=sim_options, verbose=False)
    algo.fit(ts)
    secs = time.perf_counter() - t0
    pairs = int((np.count_nonzero(algo.sim) - algo.sim.shape[0]) // 2)
    q.put({"secs": secs, "pairs": pairs, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024})


def in_child(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    res = q.get()
    p.join()
    return res


def selfjoin_similarities(ratings, by: str, min_support: int):
    """The row-level alternative: self-join on the co-rated side, group the six sums per pair (one direction)."""
    ent, oth = (C.USER_IDX, C.ITEM_IDX) if by == "user" else (C.ITEM_IDX, C.USER_IDX)
    a = ratings.select(F.col(oth).alias("o"), F.col(ent).alias("i"), F.col(C.RATING).alias("x"))
    b = ratings.select(F.col(oth).alias("o"), F.col(ent).alias("j"), F.col(C.RATING).alias("y"))
    g = (
        a.join(b, "o")
        .where(F.col("i") < F.col("j"))
        .groupBy("i", "j")
        .agg(
            F.count(F.lit(1)).alias("n"), F.sum("x").alias("sx"), F.sum("y").alias("sy"),
            F.sum(F.col("x") * F.col("x")).alias("sxx"), F.sum(F.col("y") * F.col("y")).alias("syy"),
            F.sum(F.col("x") * F.col("y")).alias("sxy"),
        )
        .where(F.col("n") >= min_support)
    )
    vx = F.col("n") * F.col("sxx") - F.col("sx") ** 2
    vy = F.col("n") * F.col("syy") - F.col("sy") ** 2
    num = F.col("n") * F.col("sxy") - F.col("sx") * F.col("sy")
    return g.where((vx > 0) & (vy > 0)).select("i", "j", (num / F.sqrt(vx * vy)).alias("sim"))


def timed(fn) -> tuple[float, dict]:
    with PeakMemory() as pm:
        t0 = time.perf_counter()
        out = fn()
        secs = time.perf_counter() - t0
    return secs, {**pm.peak, "out": out}


def row(base: dict, method: str, secs: float, pairs: int, driver: int = 0, jvm: int = 0, workers: int = 0,
        out: object = None) -> dict:
    """One result row: the data set's fields plus this method's time, pair count and peak memory (bytes)."""
    return {**base, "method": method, "secs": secs, "pairs": pairs, "driver": driver, "jvm": jvm, "workers": workers}


def gib(b: float) -> str:
    return f"{b / 2**30:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="ml-100k,1M,10M")
    ap.add_argument("--by", default="item", help="item, user or item,user")
    ap.add_argument("--blocks", type=int, default=0, help="0: the config's neighbours.blocks")
    ap.add_argument("--selfjoin-max", type=float, default=1e6, help="largest size the self-join variant runs at")
    ap.add_argument("--skip-all-pairs-above", type=float, default=2e6, help="spark-all only up to this size")
    ap.add_argument("--driver-memory", default="6g")
    args = ap.parse_args()

    from reelrank.session import build_spark

    tmp = Path(tempfile.mkdtemp(prefix="nb-bench-"))
    cfg = load_config(REPO / "conf" / "base.toml", overrides={
        "warehouse": {"data_dir": str(tmp)}, "spark": {"driver_memory": args.driver_memory, "shuffle_partitions": 8},
    })
    ncfg = cfg.neighbours if not args.blocks else dataclasses.replace(cfg.neighbours, blocks=args.blocks)
    spark = build_spark(cfg)
    warm = spark.createDataFrame(load("ml-100k", cfg).head(20_000), SCHEMA)
    nbr.neighbour_lists(warm, "item", ncfg).count()  # JVM and Python workers warm before anything is timed
    rows = []
    for size in [parse_size(s) for s in args.sizes.split(",")]:
        pdf = load(size, cfg)
        n = len(pdf)
        df = spark.createDataFrame(pdf, SCHEMA).cache()
        df.count()
        for by in args.by.split(","):
            capped = nbr.capped_ratings(df, by, ncfg)[0].toPandas()  # the exact input every method sees
            oth = C.ITEM_IDX if by == "user" else C.USER_IDX
            d = capped.groupby(oth).size().to_numpy().astype(np.int64)
            work = int((d * d).sum())
            path = str(tmp / f"r-{size}-{by}.npz")
            u, i = capped[C.USER_IDX].to_numpy(np.int32), capped[C.ITEM_IDX].to_numpy(np.int32)
            np.savez(path, u=u, i=i, r=capped[C.RATING].to_numpy())
            n_ent = capped[C.USER_IDX if by == "user" else C.ITEM_IDX].nunique()
            label = f"{size} {by}-{by}"
            base = {"data": label, "ratings": n, "kept": len(capped), "entities": n_ent, "work": work}

            fl = in_child(_floor_child, path, by, ncfg.blocks, ncfg.min_support, ncfg.top_k)
            method = f"scipy floor (1 process, {ncfg.blocks} blocks)"
            rows.append(row(base, method, fl["secs"], fl["pairs"], fl["peak"]))
            print(rows[-1], flush=True)

            secs, m = timed(lambda: nbr.neighbour_lists(df, by, ncfg).count())
            rows.append(row(base, f"spark neighbour_lists (top {ncfg.top_k}, B={ncfg.blocks})", secs, fl["pairs"], **m))
            assert m["out"] == fl["rows_top"], (m["out"], fl["rows_top"])
            print(rows[-1], flush=True)

            if n <= args.skip_all_pairs_above:
                secs, m = timed(lambda: nbr.similarities(df, by, ncfg).count())
                assert m["out"] == 2 * fl["pairs"], (m["out"], fl["pairs"])
                rows.append(row(base, "spark similarities (all pairs)", secs, m["out"] // 2, **m))
                print(rows[-1], flush=True)
            if n <= args.selfjoin_max:
                cdf = spark.createDataFrame(capped, SCHEMA)
                secs, m = timed(lambda: selfjoin_similarities(cdf, by, ncfg.min_support).count())
                rows.append(row(base, "spark self-join (row level)", secs, m["out"], **m))
                print(rows[-1], flush=True)
            if 6 * 8 * n_ent**2 <= SURPRISE_MAX_BYTES:
                sr = in_child(_surprise_child, path, by)
                rows.append(row(base, "scikit-surprise pearson", sr["secs"], sr["pairs"], sr["peak"]))
                print(rows[-1], flush=True)
        df.unpersist()
    spark.stop()
    report(rows, args, ncfg)


def report(rows: list[dict], args, ncfg) -> None:
    floors = {r["data"]: r["secs"] for r in rows if r["method"].startswith("scipy")}
    lines = [
        f"\n## {dt.datetime.now():%Y-%m-%d %H:%M} — sizes {args.sizes}, by {args.by}, {os.cpu_count()} CPUs "
        f"({platform.machine()}), load average {os.getloadavg()[0]:.1f}",
        "",
        f"min_support {ncfg.min_support}, top_k {ncfg.top_k}, max_ratings_per_user {ncfg.max_ratings_per_user}, "
        f"blocks {ncfg.blocks}, Spark local[2], driver {args.driver_memory}. work = Σ over the co-rated side of "
        "(ratings kept)², the number of co-rating products; pairs = distinct pairs with a similarity.",
        "",
        "| data | ratings (kept) | entities | work | method | wall s | × scipy | pairs | peak driver GiB "
        "| peak JVM GiB | peak py workers GiB |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r["secs"] / floors[r["data"]] if r["data"] in floors else float("nan")
        lines.append(
            f"| {r['data']} | {r['ratings']:,} ({r['kept']:,}) | {r['entities']:,} | {r['work']:,} | {r['method']} | "
            f"{r['secs']:.1f} | {ratio:.2f} | {r['pairs']:,} | {gib(r['driver'])} | {gib(r['jvm'])} "
            f"| {gib(r['workers'])} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if not RESULTS.exists():
        RESULTS.write_text("# Pearson neighbours (bench/neighbours.py)\n\nWall time and peak memory of the blocked "
                           "Spark computation against the single-process scipy floor, scikit-surprise and a row-level "
                           "self-join. Goal: reelrank / scipy ≤ 5 at 10M ratings.\n")
    with RESULTS.open("a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
