"""Each run's HTML report, answering "is tonight OK?": a verdict line, every list side by side with the best
baseline marked, the last runs as lines over real dates, training loss, how concentrated the published lists are,
and five users' histories beside their lists. Pure pandas and matplotlib: the pipeline collects the frames."""

from __future__ import annotations

import html
import io
import logging
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from reelrank import columns as C
from reelrank.warehouse import storage

log = logging.getLogger(__name__)

TOP_SHARE = 0.01
"""Popularity bias is the share of recommendations that go to this top share of items by ratings (at least one)."""
SAMPLE_USERS = 5
SAMPLE_HISTORY = 5
"""The report shows this many users, each with their latest this-many interactions beside their list."""


def report_dir(data_dir: str, run_date: date, run_id: str) -> str:
    return storage.join(data_dir, "reports", run_date.isoformat(), run_id)


def latest_report(data_dir: str) -> str | None:
    """The most recently written report, or None."""
    root = storage.join(data_dir, "reports")
    reports = [storage.join(root, day, run, "report.html")
               for day in storage.listdir(root, dirs_only=True)
               for run in storage.listdir(storage.join(root, day), dirs_only=True)]
    return max((r for r in reports if storage.exists(r)), key=storage.mtime, default=None)


@dataclass(frozen=True)
class ReportData:
    """Everything one report shows, collected by :func:`reelrank.run_report.write_run_report`."""

    title: str
    verdict: str
    """The first line: what was published, which model and why, and the gate's result with its thresholds."""
    facts: dict[str, str]
    metrics: pd.DataFrame
    """``run_date, model, metric, k, value`` of the last runs (k null for metrics without a cut-off)."""
    metric: str
    k: int
    published_model: str
    baselines: tuple[str, ...]
    stages: pd.DataFrame
    """``run_date, stage, seconds, rows`` of the published run of each of the last dates."""
    rejected: pd.DataFrame
    """``run_date, reason, rows`` of the last dates."""
    scores: np.ndarray
    popularity: pd.DataFrame
    """``item_id, n_ratings, times_recommended`` over the catalogue."""
    epochs: list[dict] | None
    samples: pd.DataFrame
    """``user_id, part ('history' or 'list'), position, item_id, title, value`` (a rating or a score)."""


def metric_label(metric: str, k: object) -> str:
    """``ndcg@10``, or ``rmse`` for a metric without a cut-off (never a ``nan`` column)."""
    return metric if k is None or pd.isna(k) else f"{metric}@{int(k)}"  # type: ignore[call-overload]


def metrics_table(metrics: pd.DataFrame, key: str, published: str, baselines: tuple[str, ...]) -> pd.DataFrame:
    """One row per model of the latest run, one column per metric, best first by ``key``; ``role`` marks the
    published list and the best baseline."""
    latest = metrics[metrics[C.RUN_DATE] == metrics[C.RUN_DATE].max()]
    wide = (latest.assign(label=[metric_label(m, k) for m, k in zip(latest["metric"], latest["k"], strict=True)])
            .pivot_table(index=C.MODEL, columns="label", values="value", aggfunc="first"))
    if key in wide:
        wide = wide.sort_values(key, ascending=False)
    best = next((m for m in wide.index if m in baselines), None)
    roles = [", ".join(r for r in ("published" if m == published else "",
                                   "best baseline" if m == best else "",
                                   "baseline" if m in baselines and m != best else "") if r) for m in wide.index]
    wide.insert(0, "role", roles)
    wide.columns.name = None
    return wide


def concentration(popularity: pd.DataFrame) -> dict[str, float]:
    """Coverage (share of items recommended at least once), the share of recommendations going to the top 1% of
    items by ratings, and the Gini coefficient of recommendation counts over items (0 even, 1 one item)."""
    times = popularity["times_recommended"].to_numpy(dtype=float)
    total = times.sum()
    if not len(times) or total == 0:
        return {"coverage": 0.0, "top_share": 0.0, "gini": 0.0}
    top = max(1, int(round(len(times) * TOP_SHARE)))
    by_popularity = popularity.sort_values("n_ratings", ascending=False, kind="stable")
    counts = np.sort(times)
    n = len(counts)
    gini = float((2 * np.arange(1, n + 1) - n - 1).dot(counts) / (n * total))
    return {"coverage": float((times > 0).mean()),
            "top_share": float(by_popularity["times_recommended"].head(top).sum() / total),
            "gini": gini}


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=100)
    return plt, fig, ax


def _save(plt, fig, path: str) -> str:
    """The figure as a PNG at ``path`` (any storage location), then closed."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return storage.write_bytes(path, buf.getvalue())


def plot_over_runs(df: pd.DataFrame, value: str, group: str, title: str, ylabel: str, path: str) -> str:
    """One line per ``group`` of ``value`` by run date, the x-axis in days around the dates shown (one run is a
    dot on its date, not on an axis spanning years)."""
    import matplotlib.dates as mdates

    plt, fig, ax = _figure()
    dates = pd.to_datetime(df[C.RUN_DATE]) if len(df) else pd.Series([], dtype="datetime64[ns]")
    for name, part in df.assign(_d=dates).groupby(group, sort=True):
        part = part.sort_values("_d")
        ax.plot(part["_d"], part[value], marker="o", label=str(name))
    if len(df):
        ax.set_xlim(dates.min() - pd.Timedelta(days=1), dates.max() + pd.Timedelta(days=1))
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)  # never over a line
    else:
        ax.text(0.5, 0.5, "nothing yet", ha="center", va="center", transform=ax.transAxes)
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=2, maxticks=8))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("run date")
    fig.autofmt_xdate()
    return _save(plt, fig, path)


def plot_hist(values: np.ndarray, title: str, xlabel: str, path: str, bins: int = 50) -> str:
    plt, fig, ax = _figure()
    ax.hist(values, bins=bins, color="#4c72b0")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("recommendations")
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
    ax.set_xticks(epochs)
    ax.set_ylabel("loss")
    ax.legend()
    return _save(plt, fig, path)


def _samples_html(samples: pd.DataFrame) -> str:
    """Per user, the latest interactions (rating) beside the published list (score), titles where known."""
    if samples.empty:
        return "<p>no users to show</p>"
    blocks = []
    for user, part in samples.groupby(C.USER, sort=True):
        cols = []
        for name, what in (("history", "latest rated (rating)"), ("list", "published list (score)")):
            rows = part[part["part"] == name].sort_values("position")
            items = "".join(f"<li>{html.escape(str(r.title if isinstance(r.title, str) and r.title else r.item_id))}"
                            f" <small>({r.value:.2f})</small></li>" for r in rows.itertuples())
            cols.append(f"<td><b>{what}</b><ol>{items}</ol></td>")
        blocks.append(f"<tr><th>{html.escape(str(user))}</th>{''.join(cols)}</tr>")
    return f"<table class=samples>{''.join(blocks)}</table>"


def write_report(out: str, data: ReportData) -> str:
    """Write ``report.html`` and its PNGs into ``out``; return the HTML path."""
    key = metric_label(data.metric, data.k)
    history = data.metrics[(data.metrics["metric"] == data.metric) & (data.metrics["k"] == data.k)]
    table = metrics_table(data.metrics, key, data.published_model, data.baselines)
    bias = concentration(data.popularity)
    published_rows = data.stages[data.stages["stage"] == "score"]
    rejected = data.rejected
    if rejected.empty:  # nights without a rejected row: a line at zero on their dates, not an empty axis
        rejected = pd.DataFrame({C.RUN_DATE: sorted(set(data.stages[C.RUN_DATE])), "reason": "none", "rows": 0})
    plots = [
        (f"{key} of every list over the last runs (higher is better)",
         plot_over_runs(history, "value", C.MODEL, f"{key} by run date", key, storage.join(out, "metrics.png"))),
        ("recommendations published per run",
         plot_over_runs(published_rows, "rows", "stage", "rows published", "recommendations",
                        storage.join(out, "published.png"))),
        ("rejected input rows by reason per run (a reason absent on a night has no point there; a single line at "
         "0 when no night rejected anything)",
         plot_over_runs(rejected, "rows", "reason", "rejected rows", "rows", storage.join(out, "rejected.png"))),
        ("seconds per stage per run",
         plot_over_runs(data.stages, "seconds", "stage", "stage seconds", "seconds", storage.join(out, "stages.png"))),
    ]
    if data.epochs:
        losses = {"train_loss": [e["train_loss"] for e in data.epochs],
                  "val_loss": [e.get("val_loss") for e in data.epochs]}
        plots.append(("the ranker's training loss per epoch (validation loss picks the epoch kept)",
                      plot_loss(losses, storage.join(out, "loss.png"))))
    plots += [
        (f"scores of the published list ({data.published_model}): within a user, a higher score ranks first; "
         "across models the scale differs",
         plot_hist(data.scores, f"published scores ({data.published_model})", "score",
                   storage.join(out, "scores.png"))),
        (f"how often each item is recommended, most rated items left: coverage {bias['coverage']:.1%}, "
         f"top {TOP_SHARE:.0%} of items get {bias['top_share']:.1%} of recommendations, Gini {bias['gini']:.2f}",
         plot_coverage(data.popularity, storage.join(out, "coverage.png"))),
    ]
    facts = "".join(f"<tr><th>{html.escape(k_)}</th><td>{html.escape(v)}</td></tr>" for k_, v in data.facts.items())
    figures = "".join(
        f'<figure><img src="{storage.name(p)}" alt="{html.escape(cap)}">'
        f"<figcaption>{html.escape(cap)}</figcaption></figure>"
        for cap, p in plots
    )
    bias_line = (f"coverage {bias['coverage']:.1%} of {len(data.popularity):,} items; the top {TOP_SHARE:.0%} "
                 f"most-rated items get {bias['top_share']:.1%} of the recommendations; Gini {bias['gini']:.2f}")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(data.title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:64em}}table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left;vertical-align:top}}figure{{margin:1em 0}}
.verdict{{font-size:1.15em;padding:.6em;background:#eef5ee;border-left:.4em solid #4a4}}
.samples ol{{margin:0;padding-left:1.4em}}</style></head>
<body><p class=verdict id=verdict>{html.escape(data.verdict)}</p>
<h1>{html.escape(data.title)}</h1>
<h2>Every list of this run ({html.escape(key)} decides; higher is better, rmse lower)</h2>
{table.reset_index().round(4).to_html(index=False, na_rep="", classes="metrics")}
<p>published list: {html.escape(bias_line)}</p>
<h2>Run</h2><table>{facts}</table>
<h2>{data.samples[C.USER].nunique()} users: what they rated last, and what they are recommended</h2>
{_samples_html(data.samples)}
<h2>Plots</h2>{figures}</body></html>"""
    return storage.write_text(storage.join(out, "report.html"), page)
