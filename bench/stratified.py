"""Top-10 table on the fixed ml-100k stratified 75/25 split: popular, item neighbours, implicit ALS, and the
deep re-rankers (MLP, NeuMF) trained through Petastorm on reelrank's own feature shards.

The re-rankers learn the way the nightly does, without touching the test file: the train file is split again per
user 75/25 (seeded); ALS, neighbours and popularity fit on the inner 75% give the candidates and features, and
the inner 25% gives the labels. The models then re-rank candidates built from the whole train file.

    python bench/stratified.py                  # appends to bench/results/stratified.md
    python bench/stratified.py --models mlp --epochs 3 --no-save
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from pyspark.sql import functions as F

from benchlib import DATASETS, append_result, markdown
from reelrank import columns as C
from reelrank.candidates import list_length, make
from reelrank.cli.bootstrap import add_common, config_from_args, setup_logging
from reelrank.evaluate import evaluate_top_n
from reelrank.features import build_features, is_validation_user, missing_rank, sources, write_shards
from reelrank.inputs.sources import read_source
from reelrank.matrix import items_frame
from reelrank.models import load
from reelrank.score import score_candidates, top_n
from reelrank.session import build_spark
from reelrank.splits import read_stratified_split, stratified_split
from reelrank.train import train

RESULTS = Path(__file__).resolve().parent / "results" / "stratified.md"
# The implicit-ALS settings tuned on this split (tests/test_als_oracle.py).
ALS = dict(implicit=True, rank=64, reg_param=0.25, alpha=0.5, max_iter=15)
METRICS = ("precision@10", "recall@10", "ndcg@10", "map@10", "hit_rate@10", "coverage@10")


def candidates(history, items, cfg, labels=None):
    """Features for ALS ∪ item-neighbour ∪ popular candidates fit on ``history`` (the nightly's recipe)."""
    users = history.select(C.USER_IDX).distinct()
    lists = {name: make(name, cfg).fit(history).recommend(users, list_length(cfg, name)).cache()
             for name in sources()}
    return lists, build_features(history, items, lists, missing_rank(cfg), labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(ap)
    ap.add_argument("--models", default="mlp,neumf")
    ap.add_argument("--epochs", type=int, default=8, help="0: the config's train.epochs")
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--mlp-embedding-dims", default="16,0", type=lambda t: [int(x) for x in t.split(",")],
                    help="one MLP per value; 0 = features only, no id embeddings")
    ap.add_argument("--inner-seed", type=int, default=7)
    ap.add_argument("--inner-ratio", type=float, default=0.75,
                    help="share of each user's train rows the inner fit keeps")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    setup_logging(args.verbose)
    cfg = config_from_args(args)
    cfg = cfg.replace(als=ALS, train={"epochs": args.epochs or cfg.train.epochs, "batch_size": args.batch_size})
    folder = DATASETS / "ml-100k-stratified"
    if not (folder / "train.csv").is_file():
        raise SystemExit(
            f"{folder}/train.csv not found: set REELRANK_DATASETS to the folder holding ml-100k-stratified"
        )
    spark = build_spark(cfg)
    t0 = time.perf_counter()
    train_df, test = (d.cache() for d in read_stratified_split(spark, folder))
    raw = read_source(spark, dataclasses.replace(cfg.source, kind="movielens-100k", input=str(DATASETS / "ml-100k")),
                      cfg.synthetic)
    index = raw.items.select(C.ITEM, F.col(C.ITEM).cast("int").alias(C.ITEM_IDX))
    items = items_frame(raw.items, index).cache()
    inner, labels = stratified_split(train_df, args.inner_ratio, seed=args.inner_seed)
    inner, labels = inner.cache(), labels.cache()

    work = Path(tempfile.mkdtemp(prefix="reelrank-stratified-"))
    _, learn = candidates(inner, items, cfg, labels)
    learn = learn.cache()
    is_val = is_validation_user(cfg.features.val_fraction)
    write_shards(learn.filter(~is_val), str(work / "train"), cfg.features)
    write_shards(learn.filter(is_val), str(work / "val"), cfg.features)
    lists, serve = candidates(train_df, items, cfg)
    write_shards(serve, str(work / "score"), cfg.features)
    n_learn, pos = learn.count(), learn.filter(F.col(C.LABEL) > 0.5).count()
    print(f"features: {n_learn:,} labelled rows ({pos:,} positive), {time.perf_counter() - t0:.0f} s")

    n_users = train_df.agg(F.max(C.USER_IDX)).first()[0] + 1
    n_items = items.agg(F.max(C.ITEM_IDX)).first()[0] + 1
    score_rows = spark.read.parquet(str(work / "score"))
    runs = [(f"mlp (ids {d})" if d else "mlp (no ids)", "mlp", d) for d in args.mlp_embedding_dims] \
        if "mlp" in args.models.split(",") else []
    runs += [("neumf", "neumf", cfg.train.embedding_dim)] if "neumf" in args.models.split(",") else []
    for name, model, dim in runs:
        tcfg = dataclasses.replace(cfg.train, model=model, embedding_dim=dim)
        res = train(str(work / "train"), str(work / "val"), tcfg, work / f"{model}{dim}.pt", n_users, n_items)
        print(f"{name}: {len(res.train_loss)} epochs, best {res.best_epoch}, {res.samples_per_s:,.0f} samples/s")
        lists[name] = top_n(score_candidates(score_rows, load(work / f"{model}{dim}.pt").to_bytes()), 10)

    rows = []
    for name, recs in lists.items():
        m = evaluate_top_n(recs.filter(F.col(C.RANK) <= 10), test, train_df, [10])
        rows.append({"model": name, **{k: round(m[k], 4) for k in METRICS}})
    base = next(r["ndcg@10"] for r in rows if r["model"] == "als")
    for r in rows:
        r["ndcg vs als"] = f"{100 * (r['ndcg@10'] / base - 1):+.1f}%"
    table = markdown(rows)
    print(table)
    if not args.no_save:
        append_result(RESULTS, f"ALS {ALS['rank']}/{ALS['reg_param']}/{ALS['alpha']}/{ALS['max_iter']} it · candidates "
                      f"{list_length(cfg, 'als')} ALS + {list_length(cfg, 'item_neighbours')} neighbours + "
                      f"{list_length(cfg, 'popular')} popular · {cfg.train.epochs} epochs, batch "
                      f"{cfg.train.batch_size}, dropout {cfg.train.dropout}, weight decay {cfg.train.weight_decay} · "
                      f"inner split {args.inner_ratio} seed {args.inner_seed}", table)
    spark.stop()


if __name__ == "__main__":
    main()
