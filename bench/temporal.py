"""What users do next: every list the nightly can publish, and the baselines, on time-based holdouts of a MovieLens
dataset, with paired bootstrap intervals of each list's difference to the best baseline.

Protocols (lib/reelrank/splits.py):
* ``loo``: each user's last interaction by time (ties by file order) is the test; full ranking, seen items removed.
* ``global``: everything before the ``--quantile`` of time trains; the test is the later interactions of warm
  users on warm items.
* ``stratified``: the fixed random 75/25 split of ``--stratified`` (train.csv / test.csv, ml-100k-stratified's
  protocol), not a time protocol: it shows what the nightly publishes when the held-out rows are random.

Every source is fitted on the train part with the nightly's config (conf/local.toml unless --config); the sequence
models pick their epoch on each user's last train item (an inner split by the same protocol), and EASE's λ is
chosen on an inner split made by the same protocol from the train part. ``--nightly`` also runs the whole nightly
on the train part, as a user would, and scores the list it published.

    python bench/temporal.py                                  # ml-100k, both protocols, appends to results
    python bench/temporal.py --data ~/ml-1m --protocols loo --no-save
    python bench/temporal.py --protocols stratified --nightly
"""

from __future__ import annotations

import argparse
import csv
import itertools
import logging
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from benchlib import DATASETS, append_result, markdown
from reelrank import columns as C
from reelrank.candidates import CandidateSource, make
from reelrank.candidates.popular import RecentPopularSource
from reelrank.cli.bootstrap import add_common, config_from_args, setup_logging
from reelrank.config import Config
from reelrank.evaluate import per_user_ranking
from reelrank.runstate import RunFailed
from reelrank.session import build_spark
from reelrank.splits import global_time_split, holdout_split, leave_last_by_time, stratified_split

RESULTS = Path(__file__).resolve().parent / "results" / "temporal.md"
BASELINES = ("popular", "recent_popular_7d", "recent_popular_30d", "item_neighbours", "als", "ease")
SEQUENTIAL = ("sasrec", "gru4rec")
EASE_LAMBDAS = (50.0, 100.0, 200.0, 500.0, 1000.0)
K = 10
_NIGHTS = itertools.count()
"""One run date per protocol in the bench's own warehouse (each nightly's indexes extend the last one's)."""
log = logging.getLogger("temporal")


def read_movielens(folder: Path) -> pd.DataFrame:
    """user, item, rating, ts and the file row of ml-100k's ``u.data``, ML-1M's ``ratings.dat`` or a MovieLens
    ``ratings.csv``."""
    if (folder / "u.data").is_file():
        df = pd.read_csv(folder / "u.data", sep="\t", names=["user", "item", "rating", "ts"])
    elif (folder / "ratings.dat").is_file():
        df = pd.read_csv(folder / "ratings.dat", sep="::", engine="python", names=["user", "item", "rating", "ts"])
    elif (folder / "ratings.csv").is_file():
        df = pd.read_csv(folder / "ratings.csv").rename(
            columns={"userId": "user", "movieId": "item", "timestamp": "ts"})[["user", "item", "rating", "ts"]]
    else:
        raise SystemExit(f"{folder}: no u.data, ratings.dat or ratings.csv")
    df[C.SOURCE_ROW] = np.arange(1, len(df) + 1)
    return df


def with_stratified_parts(raw: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """``raw`` with a ``part`` column (train / test) from the fixed split in ``folder``, matched on (user, item)."""
    parts = pd.concat([pd.read_csv(folder / f"{part}.csv", usecols=["user", "item"]).assign(part=part)
                       for part in ("train", "test")])
    out = raw.merge(parts, on=["user", "item"], how="inner", validate="one_to_one")
    if len(out) != len(parts):
        raise SystemExit(f"{folder}: {len(parts) - len(out)} rows of the split are not in the dataset")
    return out.sort_values(C.SOURCE_ROW)


def to_spark(spark: SparkSession, df: pd.DataFrame) -> DataFrame:
    """Dense indexes (sorted ids) and reelrank's column names (and the stratified ``part`` when present)."""
    users = {u: i for i, u in enumerate(sorted(df["user"].unique()))}
    items = {u: i for i, u in enumerate(sorted(df["item"].unique()))}
    pdf = pd.DataFrame({C.USER_IDX: df["user"].map(users).astype("int32"),
                        C.ITEM_IDX: df["item"].map(items).astype("int32"),
                        C.RATING: df["rating"].astype(float), C.TS: df["ts"].astype("int64"),
                        C.SOURCE_FILE: "ratings", C.SOURCE_ROW: df[C.SOURCE_ROW].astype("int64")})
    if "part" in df:
        pdf["part"] = df["part"].to_numpy()
    return spark.createDataFrame(pdf).repartition(4).cache()


def split(df: DataFrame, protocol: str, quantile: float) -> tuple[DataFrame, DataFrame]:
    if protocol == "stratified":
        return tuple(df.filter(F.col("part") == part).drop("part") for part in ("train", "test"))
    df = df.drop("part") if "part" in df.columns else df
    if protocol == "loo":
        return leave_last_by_time(df, 1)
    return global_time_split(df, quantile)


def fit_lists(train: DataFrame, users: DataFrame, names: list[str],
              cfg: Config) -> dict[str, tuple[pd.DataFrame, float]]:
    """Top-K of each named list for ``users``, fitted on ``train``, with its fit + recommend seconds.

    ``<source>@refit`` and ``<source>@history`` are the nightly's two ways to tonight's lists: fit on the history
    (``train`` less the nightly's holdout), then fit again on ``train`` from there, or serve ``train`` with the
    history fit (``[candidates] serve_from_history``); their seconds include the shared history fit."""
    out = {}
    history_fits: dict[str, tuple[CandidateSource, float]] = {}
    for name in names:
        t0 = time.perf_counter()
        base, _, how = name.partition("@")
        if how and base not in history_fits:
            history = holdout_split(train, cfg.evaluate)[0]
            history_fits[base] = make(base, cfg).fit(history), time.perf_counter() - t0
            t0 = time.perf_counter()
        if how == "history":
            source = history_fits[base][0].served_on(train)
            if source is None:
                raise SystemExit(f"{base} cannot serve from its history fit: drop {name} from --lists")
        elif name.startswith("recent_popular_"):
            days = float(name.removeprefix("recent_popular_").removesuffix("d"))
            source = RecentPopularSource(cfg.candidates[RecentPopularSource.name], days).fit(train)
        else:
            source = make(base, cfg)
            if how == "refit":
                source.start_from(history_fits[base][0])
            source.fit(train)
        recs = source.recommend(users, K).toPandas()
        if how:
            t0 -= history_fits[base][1]
        out[name] = (recs, time.perf_counter() - t0)
        log.info("%s: %d rows in %.1f s", name, len(recs), out[name][1])
    return out


def choose_ease_lambda(train: DataFrame, protocol: str, quantile: float, cfg: Config) -> float:
    """EASE's λ with the best NDCG@K on an inner split of ``train`` made by the same protocol."""
    if protocol == "stratified":
        inner, inner_test = stratified_split(train, 0.75, seed=7)
    else:
        inner, inner_test = split(train, protocol, quantile)
    truth = inner_test.toPandas()
    users = inner_test.select(C.USER_IDX).distinct()
    best, best_lam = -1.0, cfg.candidates["ease"].lam
    for lam in EASE_LAMBDAS:
        c = cfg.replace(candidates={"ease": {"lam": lam}})
        recs = make("ease", c).fit(inner).recommend(users, K).toPandas()
        ndcg = per_user_ranking(recs, truth, K)["ndcg"].mean()
        log.info("EASE λ %g: inner ndcg@%d %.4f", lam, K, ndcg)
        if ndcg > best:
            best, best_lam = ndcg, lam
    return best_lam


def run_nightly_on(train: DataFrame, cfg: Config, spark: SparkSession) -> tuple[pd.DataFrame, str]:
    """The nightly run as a user would on ``train`` (a CSV of it): its published top-K with indexes, and why."""
    from reelrank.pipeline import run_nightly

    work = Path(cfg.data_dir)
    pdf = train.toPandas().sort_values(C.SOURCE_ROW)
    path = work / "ratings.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["user_id", "item_id", "rating", "timestamp"])
        w.writerows(pdf[[C.USER_IDX, C.ITEM_IDX, C.RATING, C.TS]].itertuples(index=False))
    ncfg = cfg.replace(source={"kind": "csv", "input": str(path)})
    ctx = run_nightly(spark, ncfg, date(2026, 1, 1) + timedelta(days=next(_NIGHTS)))
    recs = ctx.table("recommendations").select(
        F.col(C.USER).cast("int").alias(C.USER_IDX), F.col(C.ITEM).cast("int").alias(C.ITEM_IDX), C.SCORE,
        C.RANK).toPandas()
    return recs, f"{ctx.record.published_model}: {ctx.record.published_why}"


def bootstrap_diff(a: np.ndarray, b: np.ndarray, reps: int, seed: int) -> tuple[float, float, float]:
    """Mean of ``a - b`` (paired by user) and its percentile-bootstrap 95% interval."""
    d = a - b
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(reps, len(d)))].mean(axis=1)
    return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def table(lists: dict[str, tuple[pd.DataFrame, float]], truth: pd.DataFrame, n_items: int, reps: int,
          seed: int) -> tuple[str, dict]:
    per = {name: per_user_ranking(recs, truth, K) for name, (recs, _) in lists.items()}
    base = max((n for n in per if n in BASELINES), key=lambda n: per[n]["ndcg"].mean())
    rows = []
    for name, (recs, seconds) in lists.items():
        m = per[name]
        mean, lo, hi = bootstrap_diff(m["ndcg"].to_numpy(), per[base]["ndcg"].to_numpy(), reps, seed)
        rows.append({
            "list": name + (" (best baseline)" if name == base else ""),
            f"ndcg@{K}": f"{m['ndcg'].mean():.4f}", f"hr@{K}": f"{m['hit'].mean():.4f}",
            f"recall@{K}": f"{m['recall'].mean():.4f}",
            f"coverage@{K}": f"{recs.loc[recs[C.RANK] <= K, C.ITEM_IDX].nunique() / n_items:.3f}",
            f"× {base}": f"{m['ndcg'].mean() / max(per[base]['ndcg'].mean(), 1e-12):.2f}",
            "Δ ndcg [95% CI]": "" if name == base else f"{mean:+.4f} [{lo:+.4f}, {hi:+.4f}]",
            "seconds": f"{seconds:.0f}",
        })
    return markdown(rows), {n: float(per[n]["ndcg"].mean()) for n in per}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(ap)
    ap.add_argument("--data", type=Path, default=DATASETS / "ml-100k", help="a MovieLens folder")
    ap.add_argument("--protocols", default="loo,global", help="any of loo, global, stratified")
    ap.add_argument("--stratified", type=Path, default=DATASETS / "ml-100k-stratified",
                    help="train.csv / test.csv of the stratified protocol")
    ap.add_argument("--quantile", type=float, default=0.9)
    ap.add_argument("--lists", default=",".join(BASELINES + SEQUENTIAL))
    ap.add_argument("--nightly", action="store_true", help="also run the nightly on the train part")
    ap.add_argument("--holdouts", default="window",
                    help="the nightly's evaluate.holdout values, one nightly each (window, latest, random)")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    setup_logging(args.verbose)
    cfg = config_from_args(args)
    if args.nightly and not args.data_dir:
        # a warehouse (and metastore) of its own: the session's metastore is fixed when Spark starts
        cfg = cfg.replace(warehouse={"data_dir": tempfile.mkdtemp(prefix="reelrank-temporal-")})
    spark = build_spark(cfg)
    raw = read_movielens(args.data)
    if "stratified" in args.protocols.split(","):
        raw = with_stratified_parts(raw, args.stratified)
    df = to_spark(spark, raw)
    n_items = int(raw["item"].nunique())
    for protocol in args.protocols.split(","):
        train, test = (d.cache() for d in split(df, protocol, args.quantile))
        truth = test.toPandas()
        users = test.select(C.USER_IDX).distinct()
        names = args.lists.split(",")
        pcfg = cfg
        if "ease" in names:
            pcfg = cfg.replace(candidates={"ease": {"lam": choose_ease_lambda(train, protocol, args.quantile, cfg)}})
        lists = fit_lists(train, users, names, pcfg)
        whys = []
        for holdout in args.holdouts.split(",") if args.nightly else []:
            t0 = time.perf_counter()
            label = f"published by the nightly (holdout {holdout})"
            try:
                recs, why = run_nightly_on(train, cfg.replace(evaluate={"holdout": holdout}), spark)
                lists[label] = (recs, time.perf_counter() - t0)
            except RunFailed as e:  # the lists above still make a table
                why = f"nothing: {e}"
            whys.append(f"{label}: {why}")
        body, ndcg = table(lists, truth, n_items, args.bootstrap, args.seed)
        where = {"global": f" at the {args.quantile} quantile", "stratified": f" ({args.stratified.name})"}.get(
            protocol, "")
        title = (f"{args.data.name} · {protocol}{where}"
                 + f" · {truth[C.USER_IDX].nunique()} test users, {len(truth)} test rows · EASE λ "
                 f"{pcfg.candidates['ease'].lam:g} (inner split) · sequence L {cfg.sequence.max_len}, d "
                 f"{cfg.sequence.dim}, {cfg.sequence.blocks} blocks, dropout {cfg.sequence.dropout}")
        note = "".join(f"\n\n{why}" for why in whys)
        print(f"\n{title}\n\n{body}{note}")
        if not args.no_save:
            append_result(RESULTS, title, body + note)
        train.unpersist()
        test.unpersist()
    spark.stop()


if __name__ == "__main__":
    main()
