"""The nightly in one process (issue 15): the night bench/nightly_scale.py runs in Spark, on the same synthetic data
and settings, done by one Python process with pandas, scipy, implicit and torch, so that the Spark night's cost
reads as a ratio to what one process does. Per stage seconds, rows and the peak RSS so far (``ru_maxrss``); the
night's total, its peak RSS and NDCG@10 of every list on the validation users. Appends to
bench/results/single_process.md.

    .venv/bin/pip install -e '.[bench]'      # implicit
    .venv/bin/python bench/single_process.py [--sizes 1M] [--seq-positions N] [--config FILE] [--root DIR] [--no-save]

The config loads as the CLI loads it (``--config``, default conf/local.toml over base.toml) with [synthetic] set
to each size (and [sequence] max_positions to ``--seq-positions``). The ratings are generated and written as CSV first
(not timed); each night then runs in a fresh child process, so its peak RSS is the night's alone. Where a stage
differs from the Spark night (approximations are named; the rest follows the reelrank module cited):

* ingest: the CSV read with pandas as strings and checked like :mod:`reelrank.inputs.ingest` (rating range and step,
  integer unix seconds, future timestamps, duplicates, superseded ratings); no ISO-8601 dates, no
  blank/wrong-field-count lines. The Spark night's synthetic source starts from the generator's frame, not a CSV.
* matrix: indexes in sorted id order as :func:`reelrank.matrix.extend_index` numbers a first night's; holdout
  "latest" only. neighbours: :func:`reelrank.neighbours.pair_similarities` over the Spark night's block pairs,
  in the same chunks of ``max_pairs_per_chunk``; always exact (the Spark night down-samples above
  ``exact_work_budget``; at ≤ 1M it does not).
* candidates: ALS is implicit's CPU ALS (conjugate gradient; its regularisation is not scaled by each user's and
  item's count as Spark's is, so the same ``reg_param`` regularises less); item neighbours, popularity, EASE and
  SASRec use reelrank's own kernels (``top_reachable``, ``top_n_block``, ``ease_weights``/``top_n_ease``,
  ``SequenceModel``).
* features: :func:`reelrank.features.build_features` in numpy/pandas (same columns and fills; float rounding aside).
* train: the MLP ranker's own network (``models.make_ranker``) trained on in-memory tensors, not Petastorm shards;
  validation users by the same hash as :func:`reelrank.features.is_validation_user`.
* evaluate: NDCG@k of each list only (no item-neighbour RMSE); the champion is the best list, with no standard-error
  gate. score: the ranker scores all of tonight's candidates; the champion's top-n is written as one Parquet file
  (no warehouse, no publish stage).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from benchlib import append_result, markdown
from reelrank import columns as C
from reelrank import knn, pair_kernel, ranking_metrics
from reelrank import neighbours as nbr
from reelrank.candidates import refit_plan
from reelrank.config import STEP_TOLERANCE, Config, load_config
from reelrank.device import choose_device
from reelrank.ease import ease_weights, top_n_ease
from reelrank.factorize import top_n_block
from reelrank.features import MISSING_Z, SECONDS_PER_DAY, membership_only, missing_rank, prefix, sources
from reelrank.inputs.ingest import FINER_UNITS, future_limit
from reelrank.inputs.synthetic import generate
from reelrank.models import make_ranker
from reelrank.seqmodels import SequenceModel

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "single_process.md"
SIZES = {"30k": (1_000, 500, 30_000), "300k": (5_000, 2_000, 300_000), "1M": (20_000, 5_000, 1_000_000),
         "3M": (50_000, 10_000, 3_000_000), "10M": (100_000, 20_000, 10_000_000)}
"""name -> (users, items, ratings), as bench/nightly_scale.py (30k: a quick check of this script)."""
DAY = date(2026, 12, 1)
"""The run date of bench/nightly_scale.py's nights (the ingest's future-timestamp limit)."""
ROW = C.SOURCE_ROW
Lists = dict[str, pd.DataFrame]


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30


class Night:
    """Stage timings: ``with night.stage(name) as st: ...; st["rows"], st["detail"] = ...``."""

    def __init__(self) -> None:
        self.stages: list[dict] = []

    @contextmanager
    def stage(self, name: str):
        st = {"stage": name, "rows": 0, "detail": ""}
        t0 = time.perf_counter()
        yield st
        st["seconds"], st["peak GiB"] = time.perf_counter() - t0, peak_gib()
        self.stages.append(st)
        print(f"{name:<11}{st['seconds']:8.1f} s {st['rows']:>12,} rows  {st['detail']}", file=sys.stderr, flush=True)


def ingest(csv: Path, cfg: Config) -> tuple[pd.DataFrame, str]:
    """Accepted rows (user_id, item_id, rating, ts, source_row) as :func:`reelrank.inputs.ingest.annotate` decides."""
    ing = cfg.ingest
    raw = pd.read_csv(csv, dtype=str, keep_default_na=False)
    user, item = raw[C.USER].str.strip(), raw[C.ITEM].str.strip()
    rating = pd.to_numeric(raw[C.RATING].str.strip(), errors="coerce")
    ts_text = raw["timestamp"].str.strip()
    ts = pd.to_numeric(ts_text.where(ts_text.str.fullmatch(r"[+-]?\d{1,19}")), errors="coerce").astype("float64")
    per_s = np.select([ts.abs() >= lo for lo, _, _ in FINER_UNITS], [p for _, _, p in FINER_UNITS], 1)
    if ing.timestamp_units == "auto":
        ts = np.floor(ts / per_s)
    steps = (rating - ing.rating_min) / ing.rating_step if ing.rating_step else rating * 0.0
    checks = [("missing_user_id", user.eq("")), ("missing_item_id", item.eq("")),
              ("unparseable_rating", rating.isna()),
              ("rating_out_of_range", (rating < ing.rating_min) | (rating > ing.rating_max)),
              ("rating_off_scale", (steps - steps.round()).abs() >= STEP_TOLERANCE),
              ("missing_timestamp", ts_text.eq("")), ("unparseable_timestamp", ts.isna()),
              ("timestamp_not_seconds", pd.Series((per_s > 1) & (ing.timestamp_units != "auto"), raw.index)),
              ("timestamp_in_future", ts > future_limit(DAY, ing))]
    reason = pd.Series(None, index=raw.index, dtype=object)
    for name, failed in checks:
        reason = reason.mask(reason.isna() & failed, name)
    good = pd.DataFrame({C.USER: user, C.ITEM: item, C.RATING: rating, C.TS: ts, ROW: np.arange(1, len(raw) + 1)})
    good = good[reason.isna()].astype({C.TS: np.int64})
    # exact duplicates keep the first in input order; of one user's ratings of an item the latest (ts, row) wins
    good = good.sort_values([C.USER, C.ITEM, C.TS, C.RATING, ROW])
    dup = good.duplicated([C.USER, C.ITEM, C.TS, C.RATING])
    rest = good[~dup].sort_values([C.USER, C.ITEM, C.TS, ROW])
    superseded = rest.duplicated([C.USER, C.ITEM], keep="last")
    accepted = rest[~superseded].sort_values(ROW)
    counts = reason.value_counts().to_dict() | {"duplicate": int(dup.sum()), "superseded": int(superseded.sum())}
    invalid = int(reason.notna().sum())
    if invalid > ing.max_rejected_share * len(raw):
        raise SystemExit(f"ingest: {invalid:,} of {len(raw):,} rows invalid, above [ingest] max_rejected_share")
    why = ", ".join(f"{r} {n:,}" for r, n in counts.items() if n)
    return accepted, f"input {len(raw):,} = accepted {len(accepted):,} + rejected {len(raw) - len(accepted):,}" + (
        f" ({why})" if why else "")


def holdout_split(inter: pd.DataFrame, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's ``n`` latest (ts, input row, item) are held out; users with ≤ n keep all (reelrank.splits)."""
    s = inter.sort_values([C.USER_IDX, C.TS, ROW, C.ITEM_IDX], ascending=[True, False, False, False])
    g = s.groupby(C.USER_IDX, sort=False)
    keep = (g[C.ITEM_IDX].transform("size").to_numpy() <= n) | (g.cumcount().to_numpy() >= n)
    return s[keep], s[~keep]


def pearson_lists(ent: np.ndarray, other: np.ndarray, rating: np.ndarray, cfg: Config) -> tuple[pd.DataFrame, str]:
    """Top-k Pearson lists of ``ent`` co-rating ``other``, block pair by block pair as the Spark tasks do."""
    nb = cfg.neighbours
    blocks = nb.blocks
    part, found = ent % blocks, []
    for a in range(blocks):
        for b in range(a, blocks):
            sel = (part == a) | (part == b)
            in_a = None if a == b else part[sel] == a
            found.append(pair_kernel.pair_similarities(ent[sel], other[sel], rating[sel], in_a, nb.min_support,
                                                       nb.shrinkage, nb.top_k, nb.list_shrinkage,
                                                       nb.max_pairs_per_chunk))
    work = int((np.bincount(other).astype(np.int64) ** 2).sum())
    how = "exact" + ("; the Spark night down-samples: work" if work > nb.exact_work_budget else ", work")
    return pair_kernel.local_top_k(pd.concat(found, ignore_index=True), nb.top_k, nb.list_shrinkage), f"{how} {work:,}"


def als(data: pd.DataFrame, seen: sp.csr_matrix, users: np.ndarray, cfg: Config, n: int) -> pd.DataFrame:
    a = cfg.als
    r = sp.csr_matrix((data[C.RATING].to_numpy(np.float32), (data[C.USER_IDX], data[C.ITEM_IDX])), shape=seen.shape)
    with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, single-threaded BLAS
        model = AlternatingLeastSquares(factors=a.rank, regularization=a.reg_param, alpha=a.alpha,
                                        iterations=a.max_iter, random_state=a.seed)
        model.fit(r, show_progress=False)
        ids, scores = model.recommend(users, r[users], N=n, filter_already_liked_items=True)
    keep = np.isfinite(scores) & (ids >= 0)
    ranks = np.broadcast_to(np.arange(1, ids.shape[1] + 1, dtype=np.int32), ids.shape)
    return pd.DataFrame({C.USER_IDX: np.repeat(users, ids.shape[1])[keep.ravel()], C.ITEM_IDX: ids[keep],
                         C.SCORE: scores[keep], C.RANK: ranks[keep]})


def by_blocks(users: np.ndarray, seen: list[np.ndarray], block: int, top: Callable) -> pd.DataFrame:
    """``top(block_users, their seen items)`` for every block of users, concatenated."""
    return pd.concat([top(b, [seen[u] for u in b]) for b in np.array_split(users, max(1, len(users) // block))],
                     ignore_index=True)


def popular(data: pd.DataFrame, users, seen, n: int, window_days: float, block: int) -> pd.DataFrame:
    if window_days > 0:
        data = data[data[C.TS] >= data[C.TS].max() - window_days * SECONDS_PER_DAY]
    counts = data.groupby(C.ITEM_IDX)[C.USER_IDX].nunique()
    ids, vec = counts.index.to_numpy(np.int64), counts.to_numpy(np.float32)[:, None]
    return by_blocks(users, seen, block, lambda b, s: top_n_block(b, np.ones((len(b), 1), np.float32), s, ids, vec, n))


def sequences(data: pd.DataFrame, length: int) -> tuple[np.ndarray, torch.Tensor]:
    """Each user's latest ``length`` items as tokens (item + 1), oldest first, left-padded (reelrank.sequences)."""
    s = data.sort_values([C.USER_IDX, C.TS, ROW, C.ITEM_IDX])
    users, start, count = np.unique(s[C.USER_IDX].to_numpy(), return_index=True, return_counts=True)
    from_end = np.repeat(start + count, count) - np.arange(len(s)) - 1
    keep = from_end < length
    tokens = np.zeros((len(users), length), np.int64)
    tokens[np.repeat(np.arange(len(users)), count)[keep], length - 1 - from_end[keep]] = \
        s[C.ITEM_IDX].to_numpy(np.int64)[keep] + 1
    return users.astype(np.int32), torch.from_numpy(tokens)


def sasrec(data: pd.DataFrame, seen, cfg: Config, device, warm: SequenceModel | None, n: int):
    """Fit as candidates.SequenceSource (the full fit starts from the history fit's weights for the epochs
    ``refit_plan`` allows, or the history fit scores tonight's sequences), score as sequences.score_sequences
    (SequenceModel.last_hidden, then top_n_block)."""
    c = cfg.sequence
    refit = refit_plan(warm, c)[0] if warm is not None else None
    if warm is not None and refit is None:
        model = warm
        users, tokens = sequences(data[data[C.ITEM_IDX] < warm.n_items], c.max_len + 1)
        note = "served by the history fit"
    else:
        users, tokens = sequences(data, c.max_len + 1)
        n_items = int(tokens.max())
        if warm is not None and refit is not None and warm.n_items <= n_items:
            c, model = refit, warm.grown_to(n_items)
        else:
            model = SequenceModel("sasrec", n_items, c)
        model.cfg = c
        h = model.fit(tokens, device)
        why = (" (stopped early)" if h.stopped_early
               else f" (work cap {c.max_positions:,} positions)" if h.capped else "")
        note = f"{len(h.epochs)} epochs{why}"
    hidden = model.last_hidden(tokens[:, 1:]).numpy()
    vecs = model.item_embedding.weight[1:].detach().float().numpy()
    out = [top_n_block(users[idx], hidden[idx], [seen[u] for u in users[idx]], np.arange(model.n_items), vecs, n)
           for idx in np.array_split(np.arange(len(users)), max(1, len(users) // 256))]
    return pd.concat(out, ignore_index=True), model, note


def candidates(data: pd.DataFrame, n_users: int, n_items: int, cfg: Config, device, warm, seconds: dict) -> tuple:
    """Every configured source fitted on ``data``, each user's top-n: lists, the SASRec model, notes."""
    cand, block = cfg.candidates, cfg.als.topn_block_users
    u, i = data[C.USER_IDX].to_numpy(), data[C.ITEM_IDX].to_numpy()
    x = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(n_users, n_items))
    seen, users = np.split(x.indices.astype(np.int64), x.indptr[1:-1]), np.unique(u).astype(np.int32)
    lists, notes, model = {}, {}, None

    def item_neighbours() -> pd.DataFrame:
        nb = cfg.neighbours
        lists_, notes["item_neighbours"] = pearson_lists(i, u, data[C.RATING].to_numpy(np.float64), cfg)
        e = lists_[lists_[nbr.SIMILARITY] > 0]
        sim = e[nbr.SIMILARITY] * e[nbr.SUPPORT] / (e[nbr.SUPPORT] + nb.recommend_shrinkage)  # sim itself at 0
        s = sp.csr_matrix((sim.to_numpy(), (e[nbr.ENTITY], e[nbr.NEIGHBOUR])), shape=(n_items, n_items))
        return by_blocks(users, seen, block, lambda b, sb: knn.top_reachable(b, sb, s, cand["item_neighbours"].n))

    def ease() -> pd.DataFrame:
        ids = np.unique(i)
        if len(ids) > cand["ease"].max_items:
            raise SystemExit(f"EASE: {len(ids):,} items > candidates.ease.max_items")
        b = ease_weights(x[:, ids].astype(np.float32), cand["ease"].lam, cfg.train.device)
        return by_blocks(users, seen, block, lambda bu, sb: top_n_ease(bu, sb, ids, b, cand["ease"].n))

    fits = {"als": lambda: als(data, x, users, cfg, cand["als"].n), "item_neighbours": item_neighbours,
            "popular": lambda: popular(data, users, seen, cand["popular"].n, 0.0, block),
            "recent_popular": lambda: popular(data, users, seen, cand["recent_popular"].n, cand["recent_popular"].days,
                                                 block),
            "ease": ease}
    for name in cfg.candidates.sources:
        t0 = time.perf_counter()
        if name == "sasrec":
            lists[name], model, notes[name] = sasrec(data, seen, cfg, device, warm, cand["sasrec"].n)
        elif name in fits:
            lists[name] = fits[name]()
        else:
            raise SystemExit(f"candidate source {name!r} has no single-process version here")
        seconds.setdefault(name, []).append(time.perf_counter() - t0)
    return lists, model, notes


def build_features(hist: pd.DataFrame, member: np.ndarray, lists: Lists, miss: float, n_items: int,
                   labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (user, candidate of any feature source) with reelrank.features.build_features' columns."""
    keyed = {s: lists[s][C.USER_IDX].to_numpy(np.int64) * n_items + lists[s][C.ITEM_IDX] for s in sources()}
    keys = np.unique(np.concatenate(list(keyed.values())))
    u, i = (keys // n_items).astype(np.int32), (keys % n_items).astype(np.int32)
    out: dict[str, np.ndarray] = {}
    for s in sources():
        df, pos = lists[s], np.searchsorted(keys, keyed[s])
        if membership_only(s):
            out[f"f_in_{s}"] = np.zeros(len(keys))
            out[f"f_in_{s}"][pos] = 1.0
            continue
        p = prefix(s)
        g = df.groupby(C.USER_IDX)[C.SCORE]
        sd = g.transform("std", ddof=0)
        out[f"f_{p}_score"], out[f"f_{p}_rank"] = np.full(len(keys), MISSING_Z), np.full(len(keys), np.log1p(miss))
        out[f"f_{p}_score"][pos] = (df[C.SCORE] - g.transform("mean")) / sd.where(sd > 0, 1.0)
        out[f"f_{p}_rank"][pos] = np.log1p(df[C.RANK].to_numpy(np.float64))
    hu, hi, r, ts = (hist[c].to_numpy() for c in (C.USER_IDX, C.ITEM_IDX, C.RATING, C.TS))
    n_users, ref = int(u.max(initial=hu.max()) + 1), ts.max()
    gmean = r.mean()
    log_item_mean = math.log(max(len(hist) / max(len(np.unique(hi)), 1), 1.0))
    log_user_mean = math.log(max(len(hist) / max(len(np.unique(hu)), 1), 1.0))
    it = hist.groupby(C.ITEM_IDX).agg(n=(C.RATING, "size"), m=(C.RATING, "mean"), first=(C.TS, "min"),
                                      last=(C.TS, "max"))
    by_user = hist.groupby(C.USER_IDX)[C.RATING]
    us = by_user.agg(["size", "mean"]).assign(sd=by_user.std(ddof=0))

    def per(index, values, fill, n, at):
        a = np.full(n, fill, np.float64)
        a[index] = values
        return a[at]

    out["f_item_pop"] = per(it.index, np.log(it["n"]) - log_item_mean, -log_item_mean, n_items, i)
    out["f_item_mean"] = per(it.index, it["m"], gmean, n_items, i)
    out["f_item_age"] = per(it.index, np.log1p((ref - it["first"]) / SECONDS_PER_DAY), 0.0, n_items, i)
    out["f_item_recency"] = per(it.index, np.log1p((ref - it["last"]) / SECONDS_PER_DAY), math.log1p(1e4), n_items, i)
    out["f_user_count"] = per(us.index, np.log(us["size"]) - log_user_mean, -log_user_mean, n_users, u)
    out["f_user_mean"] = per(us.index, us["mean"], gmean, n_users, u)
    out["f_user_std"] = per(us.index, us["sd"], 0.0, n_users, u)
    # genre affinity: Σ over the item's genres of the user's history share in that genre / the item's genre count
    share = sp.csr_matrix((np.ones(len(hu)), (hu, hi)), shape=(n_users, n_items)) @ member
    share /= np.maximum(np.bincount(hu, minlength=n_users), 1)[:, None]
    norm = member / np.maximum(member.sum(1), 1)[:, None]
    out["f_genre_affinity"] = np.concatenate([np.einsum("ij,ij->i", share[a], norm[b]) for a, b in zip(
        np.array_split(u, max(1, len(u) // 500_000)), np.array_split(i, max(1, len(u) // 500_000)), strict=True)])
    label = np.isin(keys, labels[C.USER_IDX].to_numpy(np.int64) * n_items + labels[C.ITEM_IDX]) if labels is not None \
        else np.zeros(len(keys))
    return pd.DataFrame({C.USER_IDX: u, C.ITEM_IDX: i, C.LABEL: label.astype(np.float32),
                         **{f: out[f].astype(np.float32) for f in sorted(out)}})


def is_validation_user(users: np.ndarray, fraction: float) -> np.ndarray:
    """Spark's ``abs(hash(user_idx)) % 1000 < fraction * 1000`` (Murmur3 x86_32 of the int, seed 42)."""
    k, h = users.astype(np.uint32), np.full(len(users), 42, np.uint32)
    with np.errstate(over="ignore"):
        k = k * np.uint32(0xCC9E2D51)
        h ^= ((k << np.uint32(15)) | (k >> np.uint32(17))) * np.uint32(0x1B873593)
        h = ((h << np.uint32(13)) | (h >> np.uint32(19))) * np.uint32(5) + np.uint32(0xE6546B64)
        h ^= np.uint32(4)
        for shift, mult in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
            h = (h ^ (h >> np.uint32(shift))) * np.uint32(mult)
        h ^= h >> np.uint32(16)
    return np.abs(h.view(np.int32).astype(np.int64)) % 1000 < int(round(fraction * 1000))


def train_ranker(rows: pd.DataFrame, val: pd.DataFrame, n_users: int, n_items: int, cfg: Config, device):
    """The night's ranker fitted as one process would: the rows written as Parquet with pyarrow (no Spark), then
    the same ``fit`` (and so the same training loop, reelrank.training) over them."""
    tc = cfg.train
    threads = torch.get_num_threads()
    if tc.threads > 0:  # as reelrank.train: [train] threads while training only
        torch.set_num_threads(tc.threads)
    ranker = make_ranker(tc, n_users, n_items)
    feats = [c for c in rows.columns if c.startswith("f_")]
    with tempfile.TemporaryDirectory(prefix="rr-single-") as tmp:
        dirs = []
        for name, part in (("train", rows), ("val", val)):
            folder = Path(tmp) / name
            folder.mkdir()
            typed = pd.DataFrame({C.USER_IDX: part[C.USER_IDX].astype(np.int32),
                                  C.ITEM_IDX: part[C.ITEM_IDX].astype(np.int32),
                                  C.LABEL: part[C.LABEL].astype(np.float32),
                                  **{f: part[f].astype(np.float32) for f in feats}})
            typed.to_parquet(folder / "part-0.parquet", index=False,
                             row_group_size=cfg.features.rows_per_row_group)
            dirs.append(folder)
        history = ranker.fit(dirs[0], dirs[1], tc, device=device)
    torch.set_num_threads(threads)
    losses = [e.train_loss for e in history.epochs]
    return ranker, f"mlp on {device}, {len(losses)} epochs, loss {losses[0]:.4f} → {losses[-1]:.4f}"


def top_n(rows: pd.DataFrame, scores: np.ndarray, n: int) -> pd.DataFrame:
    """The ``n`` best-scored rows per user, ranks 1..n, ties to the smaller item (reelrank.score.top_n)."""
    u, i = rows[C.USER_IDX].to_numpy(), rows[C.ITEM_IDX].to_numpy()
    order = np.lexsort((i, -scores, u))
    u, i, s = u[order], i[order], scores[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    rank = np.arange(len(u)) - np.repeat(starts, np.diff(np.r_[starts, len(u)])) + 1
    keep = rank <= n
    return pd.DataFrame({C.USER_IDX: u[keep], C.ITEM_IDX: i[keep], C.SCORE: s[keep], C.RANK: rank[keep]})


def mean_ndcg(recs: pd.DataFrame, truth: pd.DataFrame, k: int) -> float:
    """NDCG@k averaged over the users of ``truth`` (reelrank.ranking_metrics, the evaluate stage's definition)."""
    return float(ranking_metrics.ndcg(ranking_metrics.ranked_hits(recs, truth, k), k).mean())


def night(folder: Path, cfg: Config) -> dict:
    """The whole night on ``folder``'s ratings.csv and items.parquet, in this process."""
    nt, device, seconds = Night(), choose_device(cfg.train.device), {}
    t_start = time.perf_counter()
    with nt.stage("ingest") as st:
        accepted, st["detail"] = ingest(folder / "ratings.csv", cfg)
        raw_items = pd.read_parquet(folder / "items.parquet")
        st["rows"] = len(accepted)
    with nt.stage("matrix") as st:
        u_codes, user_ids = pd.factorize(accepted[C.USER], sort=True)
        i_codes, item_ids = pd.factorize(accepted[C.ITEM], sort=True)
        inter = pd.DataFrame({C.USER_IDX: u_codes.astype(np.int32), C.ITEM_IDX: i_codes.astype(np.int32),
                              C.RATING: accepted[C.RATING].to_numpy(), C.TS: accepted[C.TS].to_numpy(),
                              ROW: accepted[ROW].to_numpy()})
        n_users, n_items = len(user_ids), len(item_ids)
        genres = raw_items.set_index(C.ITEM)[C.GENRES].reindex(item_ids).explode().dropna()
        g_codes, g_names = pd.factorize(genres.to_numpy())
        member = np.zeros((n_items, max(len(g_names), 1)))
        member[item_ids.get_indexer(genres.index), g_codes] = 1.0
        if cfg.evaluate.holdout != "latest":
            raise SystemExit("only [evaluate] holdout = 'latest' has a single-process version")
        history, holdout = holdout_split(inter, cfg.evaluate.holdout_per_user)
        st["rows"], st["detail"] = len(inter), f"{n_users:,} users × {n_items:,} items, holdout {len(holdout):,}"
    with nt.stage("neighbours") as st:
        user_nb, how = pearson_lists(inter[C.USER_IDX].to_numpy(), inter[C.ITEM_IDX].to_numpy(),
                                     inter[C.RATING].to_numpy(np.float64), cfg)
        st["rows"], st["detail"] = len(user_nb), f"top-{cfg.neighbours.top_k} Pearson user-user, {how}"
    with nt.stage("candidates") as st:
        fit_h, model, notes = candidates(history, n_users, n_items, cfg, device, None, seconds)
        fit_f, _, notes_f = candidates(inter, n_users, n_items, cfg, device, model, seconds)
        st["rows"] = sum(map(len, fit_h.values())) + sum(map(len, fit_f.values()))
        st["detail"] = "; ".join(f"{k} on the {split}: {v}" for split, fit in (("history", notes), ("full", notes_f))
                                 for k, v in fit.items())
    with nt.stage("features") as st:
        miss = missing_rank(cfg)
        learn = build_features(history, member, fit_h, miss, n_items, holdout)
        serve = build_features(inter, member, fit_f, miss, n_items)
        is_val = is_validation_user(learn[C.USER_IDX].to_numpy(), cfg.features.val_fraction)
        st["rows"], st["detail"] = len(learn) + len(serve), f"{len(learn):,} labelled + {len(serve):,} to score"
    with nt.stage("train") as st:
        ranker, st["detail"] = train_ranker(learn[~is_val], learn[is_val], n_users, n_items, cfg, device)
        st["rows"] = int((~is_val).sum())
    with nt.stage("evaluate") as st:
        val = learn[is_val]
        kmax, k = max(cfg.evaluate.ks), cfg.evaluate.ks[0]
        truth = holdout[holdout[C.RATING] >= cfg.evaluate.relevance_threshold]
        truth = truth[truth[C.USER_IDX].isin(np.unique(val[C.USER_IDX]))]
        ranked = dict(fit_h) | {cfg.train.model: top_n(val, ranker.score_frame(val).astype(np.float64), kmax)}
        ndcg = {name: mean_ndcg(recs[recs[C.USER_IDX].isin(truth[C.USER_IDX])], truth, k)
                for name, recs in ranked.items()}
        champion = max(ndcg, key=ndcg.__getitem__)
        st["rows"] = truth[C.USER_IDX].nunique()
        st["detail"] = f"ndcg@{k}: " + ", ".join(f"{m} {v:.3f}" for m, v in ndcg.items()) + f"; publishing {champion}"
    with nt.stage("score") as st:
        tonight = top_n(serve, ranker.score_frame(serve).astype(np.float64), cfg.score.top_n)
        if champion != cfg.train.model:
            tonight = fit_f[champion][fit_f[champion][C.RANK] <= cfg.score.top_n]
        recs = pd.DataFrame({C.USER: np.asarray(user_ids)[tonight[C.USER_IDX]],
                             C.ITEM: np.asarray(item_ids)[tonight[C.ITEM_IDX]],
                             C.RANK: tonight[C.RANK].to_numpy(np.int32), C.SCORE: tonight[C.SCORE].to_numpy(np.float64),
                             C.MODEL: champion})
        recs.to_parquet(folder / "recommendations.parquet", index=False)
        st["rows"], st["detail"] = len(recs), f"top {cfg.score.top_n} per user from {champion}"
    return {"stages": nt.stages, "wall": time.perf_counter() - t_start, "peak GiB": peak_gib(), "ndcg": ndcg,
            "champion": champion, "source seconds": seconds,
            "source rows": {k: len(v) for k, v in fit_f.items()}}


def config(args: argparse.Namespace, name: str) -> Config:
    users, items, ratings = SIZES[name]
    over: dict = {"synthetic": {"users": users, "items": items, "ratings": ratings}}
    if args.seq_positions is not None:
        over["sequence"] = {"max_positions": args.seq_positions}
    return load_config(args.config, over)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1M", help=f"comma-separated, of {', '.join(SIZES)}")
    ap.add_argument("--seq-positions", type=int, default=None, help="SASRec work cap per fit in training "
                    "positions (default: [sequence] max_positions)")
    ap.add_argument("--config", default=None, help="environment TOML (extends base.toml beside it); default "
                    "conf/local.toml")
    ap.add_argument("--root", default=None, help="where each night's files go (default: a temp folder, removed)")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--night", help=argparse.SUPPRESS)  # internal: run one night on this folder, in this process
    args = ap.parse_args()
    if args.night:
        folder = Path(args.night)
        result = night(folder, config(args, folder.name))
        (folder / "result.json").write_text(json.dumps(result))
        return
    load = os.getloadavg()[0]
    root = Path(args.root or tempfile.mkdtemp(prefix="reelrank-single-"))
    nights = {}
    for name in args.sizes.split(","):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        ratings, items = generate(config(args, name).synthetic)
        ratings.to_csv(folder / "ratings.csv", index=False)
        items.to_parquet(folder / "items.parquet", index=False)
        del ratings, items
        flags = [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in ("seq_positions", "config")
                 if getattr(args, k) is not None]
        subprocess.run([sys.executable, __file__, "--night", str(folder), *flags], check=True)
        nights[name] = json.loads((folder / "result.json").read_text())
    if not args.root:
        shutil.rmtree(root, ignore_errors=True)
    rows, summary, sources = [], [], []
    for name, n in nights.items():
        rows += [{"size": name, "stage": s["stage"], "seconds": f"{s['seconds']:.1f}", "rows": f"{s['rows']:,}",
                  "peak RSS GiB so far": f"{s['peak GiB']:.2f}"} for s in n["stages"]]
        rows.append({"size": name, "stage": "whole night", "seconds": f"{n['wall']:.1f}",
                     "rows": f"{SIZES[name][2]:,}", "peak RSS GiB so far": f"{n['peak GiB']:.2f}"})
        summary.append({"size": name, "peak RSS GiB": f"{n['peak GiB']:.2f}", "champion": n["champion"],
                        **{f"ndcg@10 {m}": f"{v:.4f}" for m, v in n["ndcg"].items()}})
        sources += [{"size": name, "source": s, "history fit s": f"{t[0]:.1f}", "full fit s": f"{t[-1]:.1f}",
                     "rows (full)": f"{n['source rows'][s]:,}"} for s, t in n["source seconds"].items()]
    body = (markdown(rows) + "\n\ncandidate sources, seconds per fit (fit + lists):\n\n" + markdown(sources)
            + "\n\npeak RSS and NDCG@10 on the validation users' holdout:\n\n" + markdown(summary))
    print(body)
    if not args.no_save:
        append_result(RESULTS, f"the nightly in one process (pandas, scipy, implicit, torch) at {args.sizes} synthetic "
                      f"interactions (load {load:.1f} at the start)", body)


if __name__ == "__main__":
    main()
