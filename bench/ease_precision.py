"""EASE weights factorised in float32 (what the nightly does) against float64, on a finished night's interactions
(issue 15): max |ΔB|, and how many sampled users' top-n unseen lists change, in order or as a set.

    .venv/bin/python bench/ease_precision.py --config <night>/conf/scale.toml --data-dir <night>/data [--users 2000]

Needs ~16 × items² bytes of memory for the float64 side (6.4 GB at 20,000 items). Appends to
bench/results/ease_precision.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from cap_effect import latest_run, read

from benchlib import append_result, markdown
from reelrank import columns as C
from reelrank import ease
from reelrank.config import load_config

RESULTS = Path(__file__).resolve().parent / "results" / "ease_precision.md"


def weights_float64(x: sp.csr_matrix, lam: float) -> np.ndarray:
    """The same B as :func:`reelrank.ease.ease_weights`, factorised and inverted in float64 throughout."""
    g = torch.from_numpy(ease.gram(x.astype(np.float64)))
    g.diagonal().add_(lam)
    p = torch.cholesky_inverse(torch.linalg.cholesky(g))
    del g
    p.div_(-p.diagonal()[None, :])
    p.fill_diagonal_(0.0)
    return p.numpy()


def top_n(x: sp.csr_matrix, b: np.ndarray, n: int) -> np.ndarray:
    """Each row's n best unseen columns of x·B (ties to the smaller column)."""
    s = np.asarray(x @ b, dtype=np.float64)
    s[x.nonzero()] = -np.inf
    return np.argsort(-s, axis=1, kind="stable")[:, :n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    cfg = load_config(args.config, {"warehouse": {"data_dir": args.data_dir}} if args.data_dir else None)
    warehouse = Path(cfg.data_dir) / "warehouse" / f"{cfg.warehouse.database}.db"
    pairs = read(latest_run(warehouse, "interactions"), [C.USER_IDX, C.ITEM_IDX]).drop_duplicates()
    users = pd.factorize(pairs[C.USER_IDX])[0]
    items, cols = np.unique(pairs[C.ITEM_IDX].to_numpy(), return_inverse=True)
    x = sp.csr_matrix((np.ones(len(pairs), np.float32), (users, cols)), shape=(users.max() + 1, len(items)))
    lam, n = cfg.candidates["ease"].lam, cfg.candidates["ease"].n
    t = time.perf_counter()
    b32 = ease.ease_weights(x, lam, device="cpu")
    s32 = time.perf_counter() - t
    t = time.perf_counter()
    b64 = weights_float64(x, lam)
    s64 = time.perf_counter() - t
    delta = float(np.abs(b64 - b32).max())
    b64 = b64.astype(np.float32)  # scores as the nightly computes them, from float32 weights
    sample = np.sort(np.random.default_rng(0).choice(x.shape[0], min(args.users, x.shape[0]), replace=False))
    xs = x[sample]
    a, b = top_n(xs, b32, n), top_n(xs, b64, n)
    row = {"interactions": f"{len(pairs):,}", "users × items": f"{x.shape[0]:,} × {x.shape[1]:,}", "λ": f"{lam:g}",
           "float32 s": f"{s32:.1f}", "float64 s": f"{s64:.1f}", "max |ΔB|": f"{delta:.1e}",
           "max |B|": f"{float(np.abs(b32).max()):.2e}", "users": len(sample),
           f"top-{n} order changed": f"{np.mean((a != b).any(axis=1)):.2%}",
           f"overlap@{n}": f"{np.mean([len(np.intersect1d(p, q)) / n for p, q in zip(a, b, strict=True)]):.4f}"}
    print(markdown([row]))
    if not args.no_save:
        append_result(RESULTS, "EASE weights in float32 against float64 on a night's interactions", markdown([row]))


if __name__ == "__main__":
    main()
