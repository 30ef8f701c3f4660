"""The nightly's ranker settings measured on a nightly's own shards: id embeddings on or off, the loader's
cross-row-group shuffle buffer on or off, epochs, each over several seeds. NDCG@10 is the evaluate stage's: the
validation users' candidates scored in Spark, top 10 against their held-out interactions. Every candidate list of
the run on the same users is printed for reference. Appends a table to bench/results/nightly_ranker.md.

    reelrank nightly                       # once: writes a run directory with frames and shards
    python bench/nightly_ranker.py         # the latest run under the config's data dir
    python bench/nightly_ranker.py --run-dir DIR --embedding-dims 16,0 --shuffle-buffers 65536,0 --seeds 42,43,44
    python bench/nightly_ranker.py --run-dir DIR --shuffle-buffers 0 --epochs 3,10
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import statistics
import tempfile
import time
from pathlib import Path

from pyspark.sql import functions as F

from benchlib import append_result, markdown
from reelrank import columns as C
from reelrank.cli.bootstrap import add_common, config_from_args, setup_logging
from reelrank.evaluate import ranking_metrics
from reelrank.models import load
from reelrank.score import score_candidates, top_n
from reelrank.session import build_spark
from reelrank.train import train

RESULTS = Path(__file__).resolve().parent / "results" / "nightly_ranker.md"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(ap)
    ap.add_argument("--run-dir", help="a nightly's run directory (frames/, shards/); default: the latest one")
    ap.add_argument("--embedding-dims", type=_ints, default=[16, 0])
    ap.add_argument("--shuffle-buffers", type=_ints, default=[65536, 0])
    ap.add_argument("--seeds", type=_ints, default=[42, 43, 44])
    ap.add_argument("--epochs", type=_ints, default=None, help="train.epochs values (default: the config's)")
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    setup_logging(args.verbose)
    cfg = config_from_args(args)
    runs = sorted(
        (p for p in (Path(cfg.data_dir) / "runs").glob("2*") if (p / "shards" / "val").is_dir()), key=lambda p: p.name
    )
    run = Path(args.run_dir) if args.run_dir else runs[-1]
    tmp = Path(tempfile.mkdtemp(prefix="bench-ranker-"))
    # A private warehouse: the nightly's embedded Derby metastore admits one process at a time.
    spark = build_spark(cfg.replace(warehouse={"data_dir": str(tmp / "d")}))

    val_rows = spark.read.parquet(str(run / "shards" / "val")).cache()
    val_users = val_rows.select(C.USER_IDX).distinct()
    holdout = spark.read.parquet(str(run / "frames" / "holdout"))
    truth = holdout.filter(F.col(C.RATING) >= cfg.evaluate.relevance_threshold).join(val_users, C.USER_IDX).cache()
    n_users_eval = truth.select(C.USER_IDX).distinct().count()
    sizes = spark.read.parquet(*(str(run / "shards" / s) for s in ("train", "val", "score"))).agg(
        F.max(C.USER_IDX), F.max(C.ITEM_IDX)).first()
    n_users, n_items = sizes[0] + 1, sizes[1] + 1
    k = max(cfg.evaluate.ks)

    def ndcg(recs) -> float:
        return ranking_metrics(recs.join(val_users, C.USER_IDX).filter(F.col(C.RANK) <= k), truth, [k])[f"ndcg@{k}"]

    lists = {p.name: ndcg(spark.read.parquet(str(p)))
             for p in sorted((run / "frames" / "candidates_history").iterdir()) if p.is_dir()}
    print(f"run {run.name}: {n_users_eval:,} validation users; candidate lists NDCG@{k}: "
          + ", ".join(f"{name} {v:.4f}" for name, v in lists.items()), flush=True)

    rows = []
    for dim, buffer, epochs in itertools.product(args.embedding_dims, args.shuffle_buffers,
                                                 args.epochs or [cfg.train.epochs]):
        scores, rates, secs = [], [], []
        for seed in args.seeds:
            tcfg = dataclasses.replace(cfg.train, embedding_dim=dim, shuffle_buffer=buffer, seed=seed,
                                       epochs=epochs)
            t = time.perf_counter()
            result = train(
                str(run / "shards" / "train"), str(run / "shards" / "val"), tcfg, tmp / "m.pt", n_users, n_items
            )
            secs.append(time.perf_counter() - t)
            rates.append(result.samples_per_s)
            scores.append(ndcg(top_n(score_candidates(val_rows, load(tmp / "m.pt").to_bytes()), k)))
            print(f"  embedding {dim:>2}, shuffle buffer {buffer:>6}, {epochs} epochs, seed {seed}: "
                  f"NDCG@{k} {scores[-1]:.4f}, "
                  f"{rates[-1]:,.0f} samples/s", flush=True)
        rows.append({
            "model": cfg.train.model, "id embedding": dim, "shuffle buffer": buffer, "epochs": epochs,
            "seeds": len(args.seeds),
            f"NDCG@{k} mean": f"{statistics.mean(scores):.4f}",
            "sd": f"{statistics.stdev(scores):.4f}" if len(scores) > 1 else "",
            "min–max": f"{min(scores):.4f}–{max(scores):.4f}",
            "train samples/s": f"{statistics.median(rates):,.0f}", "train s": f"{statistics.median(secs):.1f}",
        })
    table = markdown(rows)
    print(table)
    if not args.no_save:
        refs = ", ".join(f"{name} {v:.4f}" for name, v in lists.items())
        append_result(RESULTS, f"run {run.name}, {n_users_eval:,} validation users, lists NDCG@{k}: {refs}, "
                               f"batch {cfg.train.batch_size}", table)
    spark.stop()


if __name__ == "__main__":
    main()
