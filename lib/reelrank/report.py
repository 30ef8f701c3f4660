"""Each run's HTML report with PNG plots: metrics over runs, scores, popularity coverage, training loss."""

from __future__ import annotations

import html
import io
import logging
from datetime import date

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame

from reelrank import columns as C
from reelrank import storage

log = logging.getLogger(__name__)


def report_dir(data_dir: str, run_date: date, run_id: str) -> str:
    return storage.join(data_dir, "reports", run_date.isoformat(), run_id)


def latest_report(data_dir: str) -> str | None:
    """The most recently written report, or None."""
    root = storage.join(data_dir, "reports")
    reports = [storage.join(root, day, run, "report.html")
               for day in storage.listdir(root, dirs_only=True)
               for run in storage.listdir(storage.join(root, day), dirs_only=True)]
    return max((r for r in reports if storage.exists(r)), key=storage.mtime, default=None)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    return plt, fig, ax


def _save(plt, fig, path: str) -> str:
    """The figure as a PNG at ``path`` (any storage location), then closed."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return storage.write_bytes(path, buf.getvalue())


def plot_metric_history(metrics: pd.DataFrame, metric: str, k: int, path: str) -> str:
    """One line per model: ``metric@k`` by run date."""
    plt, fig, ax = _figure()
    sel = metrics[(metrics["metric"] == metric) & (metrics["k"] == k)]
    for model, part in sel.groupby(C.MODEL):
        part = part.sort_values(C.RUN_DATE)
        ax.plot(pd.to_datetime(part[C.RUN_DATE]), part["value"], marker="o", label=model)
    ax.set_title(f"{metric}@{k} by run date")
    ax.set_ylabel(f"{metric}@{k}")
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    return _save(plt, fig, path)


def plot_hist(values: np.ndarray, title: str, xlabel: str, path: str, bins: int = 50) -> str:
    plt, fig, ax = _figure()
    ax.hist(values, bins=bins, color="#4c72b0")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("rows")
    return _save(plt, fig, path)


def plot_coverage(popularity: pd.DataFrame, path: str) -> str:
    """Items ordered by popularity (most rated first) against how often tonight's lists recommend them."""
    plt, fig, ax = _figure()
    pop = popularity.sort_values("n_ratings", ascending=False).reset_index(drop=True)
    ax.bar(np.arange(len(pop)), pop["times_recommended"], width=1.0, color="#dd8452")
    covered = (pop["times_recommended"] > 0).mean() if len(pop) else 0.0
    ax.set_title(f"recommendations by item popularity rank (coverage {covered:.1%})")
    ax.set_xlabel("item popularity rank (most rated first)")
    ax.set_ylabel("times recommended")
    return _save(plt, fig, path)


def plot_loss(history: dict, path: str) -> str:
    plt, fig, ax = _figure()
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    ax.plot(epochs, history["train_loss"], marker="o", label="train")
    val = [v for v in history.get("val_loss", []) if v is not None]
    if len(val) == len(epochs):
        ax.plot(epochs, val, marker="o", label="validation")
    ax.set_title("training loss by epoch")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    return _save(plt, fig, path)


def write_report(
    out: str,
    *,
    title: str,
    summary: dict[str, str],
    metrics_history: pd.DataFrame,
    metric: str,
    k: int,
    recommendations: DataFrame,
    item_stats: DataFrame,
    epochs: list[dict] | None,
) -> str:
    """Write ``report.html`` and its PNGs into ``out``; return the HTML path.

    ``epochs`` are the trained model's per-epoch statistics from its JSON description (``train_loss``, ``val_loss``).
    """
    scores_pdf: pd.DataFrame = recommendations.select(C.SCORE).toPandas()
    scores = scores_pdf[C.SCORE].to_numpy()
    times = recommendations.groupBy(C.ITEM).count().withColumnRenamed("count", "times_recommended")
    popularity = (
        item_stats.select(C.ITEM, "n_ratings").join(times, C.ITEM, "left").fillna({"times_recommended": 0}).toPandas()
    )
    plots = [
        (
            f"{metric}@{k} over the last runs",
            plot_metric_history(metrics_history, metric, k, storage.join(out, "metrics.png")),
        ),
        (
            "score distribution of the published lists",
            plot_hist(scores, "published scores", "score", storage.join(out, "scores.png")),
        ),
        ("item-popularity coverage", plot_coverage(popularity, storage.join(out, "coverage.png"))),
    ]
    if epochs:
        losses = {"train_loss": [e["train_loss"] for e in epochs], "val_loss": [e.get("val_loss") for e in epochs]}
        plots.append(("training loss", plot_loss(losses, storage.join(out, "loss.png"))))
    latest = metrics_history[metrics_history[C.RUN_DATE] == metrics_history[C.RUN_DATE].max()]
    table = latest.pivot_table(index=C.MODEL, columns=["metric", "k"], values="value", dropna=False)
    rows = "".join(f"<tr><th>{html.escape(k_)}</th><td>{html.escape(v)}</td></tr>" for k_, v in summary.items())
    figures = "".join(
        f'<figure><img src="{storage.name(p)}" alt="{html.escape(cap)}">'
        f"<figcaption>{html.escape(cap)}</figcaption></figure>"
        for cap, p in plots
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}figure{{margin:1em 0}}</style></head>
<body><h1>{html.escape(title)}</h1><table>{rows}</table>
<h2>Metrics of this run</h2>{table.round(4).to_html(na_rep="")}
<h2>Plots</h2>{figures}</body></html>"""
    return storage.write_text(storage.join(out, "report.html"), page)

