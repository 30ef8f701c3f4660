"""The run report on made-up frames (no Spark): the verdict first, no NaN columns, the best baseline marked,
concentration figures equal to their textbook definitions, plots over real dates."""

from __future__ import annotations

import re
from datetime import date

import numpy as np
import pandas as pd
import pytest

from reelrank import columns as C
from reelrank import report

DAYS = [date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 4)]
MODELS = {"mlp": 0.06, "popular": 0.21, "recent_popular": 0.23, "als": 0.19}


def _metrics() -> pd.DataFrame:
    rows = []
    for n, day in enumerate(DAYS):
        for model, v in MODELS.items():
            rows.append((day, model, "ndcg", 10.0, v + n / 100))
            rows.append((day, model, "recall", 10.0, 2 * v))
            rows.append((day, model, "rmse", None, 0.9 + v))
    return pd.DataFrame(rows, columns=[C.RUN_DATE, C.MODEL, "metric", "k", "value"])


def _data(popularity: pd.DataFrame | None = None) -> report.ReportData:
    stages = pd.DataFrame([(d, s, 10.0 + n, 100 * (n + 1)) for n, d in enumerate(DAYS) for s in ("ingest", "score")],
                          columns=[C.RUN_DATE, "stage", "seconds", "rows"])
    rejected = pd.DataFrame([(DAYS[0], "blank_line", 3), (DAYS[2], "duplicate", 5)],
                            columns=[C.RUN_DATE, "reason", "rows"])
    pop = popularity if popularity is not None else pd.DataFrame(
        {C.ITEM: [f"i{k}" for k in range(200)], "n_ratings": np.arange(200, 0, -1),
         "times_recommended": [50] * 2 + [1] * 100 + [0] * 98})
    samples = pd.DataFrame([("u1", "history", 1, "i1", "Alien (1979)", 5.0), ("u1", "list", 1, "i9", None, 0.8),
                            ("u2", "list", 1, "i3", "Heat <1995>", 0.7)],
                           columns=[C.USER, "part", "position", C.ITEM, C.TITLE, "value"])
    return report.ReportData(
        title="reelrank run r3 (2026-03-04)", verdict="published 2026-03-04: the recent_popular list (it beat mlp)",
        facts={"run": "r3"}, metrics=_metrics(), metric="ndcg", k=10, published_model="recent_popular",
        baselines=("popular", "recent_popular", "als"), stages=stages, rejected=rejected,
        scores=np.linspace(0, 1, 50), popularity=pop, epochs=[{"train_loss": 0.5, "val_loss": 0.4},
                                                              {"train_loss": 0.4, "val_loss": 0.35}],
        samples=samples)


def test_metrics_table_has_no_nan_column_and_marks_the_best_baseline():
    table = report.metrics_table(_metrics(), "ndcg@10", "mlp", ("popular", "recent_popular", "als"))
    assert list(table.columns) == ["role", "ndcg@10", "recall@10", "rmse"]
    assert list(table.index) == ["recent_popular", "popular", "als", "mlp"]  # best first
    assert table.loc["recent_popular", "role"] == "best baseline" and table.loc["mlp", "role"] == "published"
    assert table.loc["popular", "role"] == "baseline"
    assert table.loc["als", "ndcg@10"] == pytest.approx(MODELS["als"] + 0.02)  # the latest run only


def test_concentration_matches_the_definitions():
    rng = np.random.default_rng(3)
    pop = pd.DataFrame({C.ITEM: range(300), "n_ratings": rng.permutation(300),
                        "times_recommended": rng.poisson(2, 300) * (rng.random(300) < 0.7)})
    got = report.concentration(pop)
    t = pop["times_recommended"].to_numpy(float)
    gini = np.abs(t[:, None] - t[None, :]).sum() / (2 * len(t) ** 2 * t.mean())  # mean absolute difference form
    top3 = pop.nlargest(3, "n_ratings")["times_recommended"].sum() / t.sum()  # 1% of 300 items
    assert got == pytest.approx({"coverage": (t > 0).mean(), "top_share": top3, "gini": gini})
    even = report.concentration(pop.assign(times_recommended=4))
    assert even["gini"] == pytest.approx(0.0) and even["coverage"] == 1.0


def test_report_page_leads_with_the_verdict(tmp_path):
    path = report.write_report(str(tmp_path), _data())
    page = (tmp_path / "report.html").read_text()
    assert path.endswith("report.html")
    body = page.split("<body>", 1)[1]
    assert body.startswith('<p class=verdict id=verdict>published 2026-03-04: the recent_popular list')
    assert not re.search(r">\s*nan\s*<|NaN", page, re.IGNORECASE)
    assert "best baseline" in page and "Heat &lt;1995&gt;" in page and "Alien (1979)" in page and ">i9 <" in page
    assert "Gini" in page and "top 1% most-rated items get" in page
    for png in ("metrics", "published", "rejected", "stages", "loss", "scores", "coverage"):
        assert (tmp_path / f"{png}.png").stat().st_size > 5000, png
        assert f'src="{png}.png"' in page


def test_plots_over_runs_span_days_not_years(tmp_path, monkeypatch):
    """One night's dot sits on its date with a day either side (not on an axis from 2024 to 2028)."""
    import matplotlib.dates as mdates

    captured = {}
    real_save = report._save

    def keep_axis(plt_, fig, path):
        captured["xlim"] = [mdates.num2date(x).date() for x in fig.axes[0].get_xlim()]
        return real_save(plt_, fig, path)

    monkeypatch.setattr(report, "_save", keep_axis)
    one = _metrics()[lambda d: d[C.RUN_DATE] == DAYS[0]]
    report.plot_over_runs(one, "value", C.MODEL, "t", "y", str(tmp_path / "one.png"))
    assert captured["xlim"] == [date(2026, 2, 28), date(2026, 3, 2)]


def test_nights_without_rejected_rows_plot_zero_on_their_dates(tmp_path, monkeypatch):
    seen = []
    real = report.plot_over_runs

    def spy(df, value, group, title, ylabel, path):
        seen.append((title, df))
        return real(df, value, group, title, ylabel, path)

    monkeypatch.setattr(report, "plot_over_runs", spy)
    data = _data()
    report.write_report(str(tmp_path), report.ReportData(**{**vars(data), "rejected": data.rejected.iloc[0:0]}))
    rejected = dict(seen)["rejected rows"]
    assert sorted(rejected[C.RUN_DATE]) == DAYS and set(rejected["rows"]) == {0}
