"""How the order of the stored top-K lists moves scalable-mode RMSE away from exact mode, on ml-100k u1..u5.

A dense numpy re-implementation of KNNWithMeans(k=40, min_k=1, pearson), independent of reelrank's Spark code,
run in exact mode (all neighbours who rated the item) and in top-K mode with lists ranked by
``sim * n / (n + λ)`` for each λ given. Prints one line per side and fold, and appends the table of
top-K minus exact RMSE to bench/results/topk_shrinkage.md.

    python bench/topk_shrinkage.py --lambdas 0,10,25,50,100
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from benchlib import DATASETS, append_result, markdown

RESULTS = Path(__file__).resolve().parent / "results" / "topk_shrinkage.md"


def pearson(R: np.ndarray, M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson over the common support of every row pair (means over the common support), and the support."""
    n = M @ M.T
    sx, sxx, sxy = R @ M.T, (R * R) @ M.T, R @ R.T
    num = n * sxy - sx * sx.T
    den = np.sqrt(np.maximum(n * sxx - sx**2, 0) * np.maximum(n * sxx.T - sx.T**2, 0))
    with np.errstate(all="ignore"):
        P = np.where((den > 1e-12) & (n >= 2), num / den, np.nan)
    np.fill_diagonal(P, np.nan)
    return P, n


def rmse_by_lambda(fold: str, by: str, lambdas: list[float], K: int = 100, k: int = 40) -> dict:
    names = ["u", "i", "r", "t"]
    tr = pd.read_csv(DATASETS / "ml-100k" / f"{fold}.base", sep="\t", header=None, names=names)
    te = pd.read_csv(DATASETS / "ml-100k" / f"{fold}.test", sep="\t", header=None, names=names)
    R = np.zeros((944, 1683))
    R[tr.u, tr.i] = tr.r
    M = (R > 0).astype(float)
    a, b = te.u.to_numpy(), te.i.to_numpy()
    if by == "item":
        R, M, a, b = R.T.copy(), M.T.copy(), b, a
    P, n = pearson(R, M)
    mean = R.sum(1) / np.maximum(M.sum(1), 1)
    out = {}
    for lam in [None, *lambdas]:
        allowed = ~np.isnan(P)
        if lam is not None:
            key = np.where(np.isnan(P), -np.inf, P * n / (n + lam))
            keep = np.zeros(P.shape, bool)
            keep[np.arange(P.shape[0])[:, None], np.argsort(-key, 1)[:, :K]] = True
            allowed &= keep
        preds = np.empty(len(te))
        for t, (x, y) in enumerate(zip(a, b, strict=False)):
            cand = np.where(allowed[x] & (M[:, y] > 0))[0]
            s = P[x, cand]
            top = np.argsort(-s, kind="stable")[:k]
            s, c = s[top], cand[top]
            pos = s > 0
            preds[t] = (
                mean[x] if pos.sum() < 1 else mean[x] + (s[pos] * (R[c[pos], y] - mean[c[pos]])).sum() / s[pos].sum()
            )
        out[lam] = float(np.sqrt(np.mean((np.clip(preds, 1, 5) - te.r.to_numpy()) ** 2)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lambdas", default="0,10,25,50,100", type=lambda t: [float(x) for x in t.split(",")])
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    rows = []
    for by in ("user", "item"):
        for fold in ("u1", "u2", "u3", "u4", "u5"):
            o = rmse_by_lambda(fold, by, args.lambdas)
            ex = o[None]
            print(by, fold, f"exact {ex:.4f}",
                  " ".join(f"λ{lam:g} {o[lam]:.4f} ({o[lam] - ex:+.4f})" for lam in args.lambdas), flush=True)
            rows.append({"side": by, "fold": fold, "exact RMSE": f"{ex:.4f}",
                         **{f"λ {lam:g}": f"{o[lam] - ex:+.4f}" for lam in args.lambdas}})
    if not args.no_save:
        append_result(RESULTS, "top-K (K = 100) minus exact KNNWithMeans(k=40, min_k=1) RMSE, lists ranked by "
                               "sim·n/(n+λ), ml-100k u1..u5 (numpy)", markdown(rows))


if __name__ == "__main__":
    main()
