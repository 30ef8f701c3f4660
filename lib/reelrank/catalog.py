"""The run catalog: every dataset a stage reads or writes, declared once by name and kind.

The runner (``reelrank.pipeline``) hands each stage a :class:`~reelrank.runstate.StageIO` that reads only the
stage's declared inputs and writes only its declared outputs, marks each output complete once the stage has
ended, and lets ``--resume`` skip a stage whose declared outputs are all complete. Nothing here imports Spark,
so the CLI can list stages without starting a JVM (kedro's data catalog is the model: nodes name datasets, the
runner does the I/O).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["table", "frame", "frames", "shards", "model"]
"""``table``: a warehouse table staged under this run's partition directory and published by the last stage;
``frame``: a Parquet work frame of this run; ``frames``: a set of work frames keyed by a part name (one per
candidate source); ``shards``: Parquet shards for Petastorm; ``model``: the trained ranker's files."""


@dataclass(frozen=True)
class Dataset:
    name: str
    kind: Kind
    doc: str


@dataclass(frozen=True)
class StageDecl:
    name: str
    inputs: tuple[str, ...]
    """Datasets of this run, written by earlier stages."""
    outputs: tuple[str, ...]
    published: tuple[str, ...] = ()
    """Warehouse tables of earlier published nights this stage reads (the latest partition)."""
    counts: str = "rows"
    """What the stage's row count counts, named in its log line and report (``12,000 interactions``)."""


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("rejected_interactions", "table", "input rows that failed validation, with file, line and reason"),
        Dataset("accepted", "frame", "input rows that passed validation"),
        Dataset("raw_items", "frame", "item metadata from the source (empty when it has none)"),
        Dataset("user_index", "table", "stable user_id -> user_idx, extending the last published index"),
        Dataset("item_index", "table", "stable item_id -> item_idx"),
        Dataset("interactions", "table", "accepted interactions with indexes"),
        Dataset("items", "table", "item metadata by index"),
        Dataset("user_stats", "table", "per-user counts and rating statistics"),
        Dataset("item_stats", "table", "per-item counts and rating statistics"),
        Dataset("history", "frame", "interactions before each user's held-out latest ones (the labels' past)"),
        Dataset("holdout", "frame", "each user's latest interactions, held out for labels and evaluation"),
        Dataset("user_neighbours", "table", "top-k Pearson user-user neighbours on all interactions"),
        Dataset("item_neighbours", "table", "top-k Pearson item-item neighbours on all interactions"),
        Dataset("user_factors", "table", "ALS user factors fitted on all interactions (folded in against the "
                "history fit's item factors when ALS is served from it: [candidates] refit_max_seconds)"),
        Dataset("item_factors", "table", "ALS item factors fitted on all interactions (the history fit's when ALS "
                "is served from it: [candidates] refit_max_seconds)"),
        Dataset("item_nb_history", "frame", "item-item neighbour lists fitted on the history (rating predictions)"),
        Dataset("sequences", "shards", "per-user item sequences (Petastorm shards) and the sequence models trained on "
                "them, one folder per fit (history, full) and source"),
        Dataset("candidates_history", "frames", "each candidate source's top-n per user, fitted on the history"),
        Dataset("candidates_full", "frames", "each candidate source's top-n per user on all interactions (fitted "
                "on them, or served from the history fit)"),
        Dataset("learn", "frame", "labelled candidates with features (history fit, holdout labels)"),
        Dataset("shards_train", "shards", "labelled training shards (users outside the validation share)"),
        Dataset("shards_val", "shards", "labelled validation shards (and the evaluation users)"),
        Dataset("shards_score", "shards", "tonight's candidates with features from the full fit, to score"),
        Dataset("model", "model", "the trained ranker and its JSON description (epochs, losses)"),
        Dataset("metrics", "table", "every list's offline metrics on the validation users"),
        Dataset("champion", "frame", "the list published tonight and why (the ranker unless a list beats it)"),
        Dataset("recommendations", "table", "tonight's published top-N per user, from the champion list"),
    )
}

TABLES: tuple[str, ...] = tuple(name for name, d in DATASETS.items() if d.kind == "table")
"""Every warehouse table a run publishes (``runs`` is appended to separately)."""

STAGES: tuple[StageDecl, ...] = (
    StageDecl("ingest", (), ("rejected_interactions", "accepted", "raw_items"), counts="accepted interactions"),
    StageDecl(
        "matrix",
        ("accepted", "raw_items"),
        ("user_index", "item_index", "interactions", "items", "user_stats", "item_stats", "history", "holdout"),
        published=("user_index", "item_index"),
        counts="interactions",
    ),
    StageDecl("neighbours", ("interactions", "user_index"), ("user_neighbours",), counts="neighbour pairs"),
    StageDecl(
        "candidates",
        ("interactions", "history", "user_index", "item_index"),
        ("item_neighbours", "user_factors", "item_factors", "item_nb_history", "sequences", "candidates_history",
         "candidates_full"),
        counts="candidates",
    ),
    StageDecl(
        "features",
        ("interactions", "items", "history", "holdout", "candidates_history", "candidates_full"),
        ("learn", "shards_train", "shards_val", "shards_score"),
        counts="feature rows",
    ),
    StageDecl("train", ("shards_train", "shards_val", "user_index", "item_index"), ("model",),
              counts="training rows"),
    StageDecl(
        "evaluate",
        ("shards_val", "holdout", "history", "item_nb_history", "candidates_history", "model"),
        ("metrics", "champion"),
        counts="metric rows",
    ),
    StageDecl(
        "score",
        ("shards_score", "model", "champion", "candidates_full", "user_index", "item_index"),
        ("recommendations",),
        counts="recommendations",
    ),
    StageDecl("publish", (*TABLES, "champion"), (), published=("metrics", "recommendations"), counts="tables"),
)

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
DECLS: dict[str, StageDecl] = {s.name: s for s in STAGES}
