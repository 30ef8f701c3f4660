"""What the user-user cap changes (issue 15): a night's published top-k Pearson user-user lists, computed on
down-sampled ratings when the co-rating work is over ``[neighbours] exact_work_budget``, against exact lists for a
random sample of users from the same night's interactions table.

    python bench/cap_effect.py --config /work/scale/10M/conf/scale.toml --users 1000

The exact lists are the kernel the nightly runs (:func:`reelrank.neighbours.pair_similarities`) on all ratings,
the sampled users as block A against every user as block B, with the night's config. A night whose lists are
exact should show no change (a check of the script itself). Prints a table and appends it to
``bench/results/cap_effect.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from benchlib import append_result, markdown
from reelrank import columns as C
from reelrank import neighbours as nb
from reelrank import ranking_metrics
from reelrank.config import load_config

RESULTS = Path(__file__).resolve().parent / "results" / "cap_effect.md"


def latest_run(warehouse: Path, table: str) -> Path:
    """The newest run folder of ``table`` whose write finished (``<table>/run_date=*/<run id>/_SUCCESS``)."""
    runs = sorted(d for d in (warehouse / table).glob("run_date=*/*") if (d / "_SUCCESS").exists())
    if not runs:
        raise SystemExit(f"{warehouse / table}: no run folder with _SUCCESS")
    return runs[-1]


def read(folder: Path, columns: list[str]) -> pd.DataFrame:
    return ds.dataset(folder, format="parquet").to_table(columns=columns).to_pandas()


def exact_lists(ratings: pd.DataFrame, users: np.ndarray, k: int, cfg) -> pd.DataFrame:
    """Each of ``users``' top-``k`` neighbours by exact Pearson over all ``ratings``, in the nightly's order
    (:func:`reelrank.neighbours.local_top_k`)."""
    offset = int(ratings[C.USER_IDX].max()) + 1
    mine = ratings[ratings[C.USER_IDX].isin(users)]
    entity = np.concatenate([mine[C.USER_IDX].to_numpy(np.int64) + offset, ratings[C.USER_IDX].to_numpy(np.int64)])
    other = np.concatenate([mine[C.ITEM_IDX].to_numpy(), ratings[C.ITEM_IDX].to_numpy()])
    rating = np.concatenate([mine[C.RATING].to_numpy(), ratings[C.RATING].to_numpy()])
    in_a = np.arange(len(entity)) < len(mine)
    # k + 1 per user: a sampled user's copy meets the user itself in B, with similarity 1
    pairs = nb.pair_similarities(entity, other, rating, in_a, cfg.min_support, cfg.shrinkage, k + 1,
                                 cfg.list_shrinkage, cfg.max_pairs_per_chunk)
    pairs = pairs[pairs[nb.ENTITY] >= offset].copy()
    pairs[nb.ENTITY] -= offset
    return nb.local_top_k(pairs[pairs[nb.ENTITY] != pairs[nb.NEIGHBOUR]], k, cfg.list_shrinkage)


def _as_ranked(lists: pd.DataFrame) -> pd.DataFrame:
    """Neighbour lists in their order as ``ranked_hits`` reads them: user, item and 1-based rank columns."""
    return pd.DataFrame({C.USER_IDX: lists[nb.ENTITY].to_numpy(), C.ITEM_IDX: lists[nb.NEIGHBOUR].to_numpy(),
                         C.RANK: lists.groupby(nb.ENTITY).cumcount().to_numpy() + 1})


def compare(published: pd.DataFrame, exact: pd.DataFrame, users: np.ndarray, k: int) -> dict:
    """Share of lists changed, overlap@k, NDCG@k of the published list against the exact one (binary relevance:
    in the exact top-k) and the similarity error on the pairs both hold."""
    pub = {u: g for u, g in published.groupby(nb.ENTITY)}
    ex = {u: g for u, g in exact.groupby(nb.ENTITY)}
    changed, reordered, overlap, errors, top1, compared = 0, 0, [], [], 0, []
    for u in users:
        p = pub.get(u, pd.DataFrame(columns=[nb.NEIGHBOUR, nb.SIMILARITY]))
        e = ex.get(u, pd.DataFrame(columns=[nb.NEIGHBOUR, nb.SIMILARITY]))
        pn, en = p[nb.NEIGHBOUR].to_numpy(), e[nb.NEIGHBOUR].to_numpy()
        if len(en) == 0 and len(pn) == 0:
            continue
        changed += int(set(pn) != set(en))
        reordered += int(set(pn) == set(en) and not np.array_equal(pn, en))
        top1 += int(len(pn) > 0 and len(en) > 0 and pn[0] == en[0])
        overlap.append(len(set(pn) & set(en)) / max(len(en), 1))
        compared.append(u)
        both = p.merge(e, on=nb.NEIGHBOUR, suffixes=("_p", "_e"))
        errors.append((both[f"{nb.SIMILARITY}_p"] - both[f"{nb.SIMILARITY}_e"]).to_numpy(np.float64))
    err = np.concatenate(errors) if errors else np.zeros(0)
    n = len(overlap)
    if n == 0:
        raise SystemExit("none of the sampled users has a neighbour list, published or exact")
    # a user with an empty exact list (nothing relevant) counts 0, as before
    ndcg_sum = ranking_metrics.ndcg(ranking_metrics.ranked_hits(
        _as_ranked(published[published[nb.ENTITY].isin(compared)]),
        _as_ranked(exact[exact[nb.ENTITY].isin(compared)]), k), k).sum()
    return {"users compared": n, "neighbour set changed": f"{changed / n:.1%}",
            "same set, other order": f"{reordered / n:.1%}", "same first neighbour": f"{top1 / n:.1%}",
            f"overlap@{k}": f"{np.mean(overlap):.3f}", f"ndcg@{k} vs exact": f"{ndcg_sum / n:.3f}",
            "similarity RMSE (shared pairs)": f"{np.sqrt(np.mean(err**2)) if len(err) else 0.0:.4f}",
            "max |Δ similarity|": f"{np.abs(err).max(initial=0.0):.3f}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="the night's config (its [warehouse] data_dir holds the run)")
    ap.add_argument("--data-dir", default=None, help="the night's --data-dir, when the config does not name it")
    ap.add_argument("--users", type=int, default=1000, help="users sampled for the exact lists")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    cfg = load_config(args.config, {"warehouse": {"data_dir": args.data_dir}} if args.data_dir else None)
    warehouse = Path(cfg.data_dir) / "warehouse" / f"{cfg.warehouse.database}.db"
    lists = latest_run(warehouse, "user_neighbours")
    run = lists.relative_to(warehouse / "user_neighbours")  # the same night's interactions
    if not (warehouse / "interactions" / run / "_SUCCESS").exists():
        raise SystemExit(f"{warehouse / 'interactions' / run}: no interactions of the run that wrote {lists}")
    ratings = read(warehouse / "interactions" / run, [C.USER_IDX, C.ITEM_IDX, C.RATING])
    published = read(lists, [nb.ENTITY, nb.NEIGHBOUR, nb.SIMILARITY, C.RANK, nb.SAMPLED, nb.CAPPED_SHARE])
    k = cfg.neighbours.top_k
    if int(published[C.RANK].max()) != k:
        raise SystemExit(f"{lists}: lists of {published[C.RANK].max()} neighbours, the config says top_k = {k}; "
                         "pass the night's own config")
    all_users = np.unique(ratings[C.USER_IDX].to_numpy())
    users = np.sort(np.random.default_rng(args.seed).choice(all_users, min(args.users, len(all_users)), False))
    started = time.perf_counter()
    exact = exact_lists(ratings, users, k, cfg.neighbours)
    seconds = time.perf_counter() - started
    mine = published[published[nb.ENTITY].isin(users)].sort_values([nb.ENTITY, C.RANK])
    sampled = bool(published[nb.SAMPLED].any())
    row = {"ratings": f"{len(ratings):,}", "users": f"{len(all_users):,}", "published on": (
        f"sampled ratings ({published[nb.CAPPED_SHARE].max():.1%} of items capped)" if sampled else "exact")}
    row |= compare(mine, exact, users, k)
    row["exact s (sample)"] = f"{seconds:.0f}"
    print(markdown([row]))
    if not args.no_save:
        append_result(RESULTS, f"user-user top-{k}: published vs exact Pearson for {len(users):,} sampled users",
                      f"`python bench/cap_effect.py --config {args.config} --users {args.users}`\n\n"
                      + markdown([row]))


if __name__ == "__main__":
    main()
