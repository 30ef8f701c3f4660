"""The run catalog: every dataset a stage reads or writes, declared once by name and kind, and the stages' order.

Each stage declares what it reads and writes beside its function (:class:`Stage`, in its module of
:mod:`reelrank.stages`); the runner (``reelrank.pipeline``) reads the declared inputs, hands them to the function,
writes and marks complete exactly the declared outputs, and lets ``--resume`` skip a stage whose outputs are all
complete. Nothing here imports Spark at import time, so the CLI lists stages without starting a JVM (kedro's data
catalog is the model: nodes name datasets, the runner does the I/O).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import import_module
from typing import Any, Literal

from reelrank import candidates

Kind = Literal["table", "frame", "frames", "shards", "model", "record"]
"""``table``: a warehouse table staged under this run's partition directory and published by the last stage;
``frame``: a Parquet work frame of this run; ``frames``: a set of work frames keyed by a part name (one per
candidate source); ``shards``: Parquet shards for Petastorm; ``model``: the trained ranker's files; ``record``: a
warehouse table the runner appends to (``runs``), which stages only read as a published input."""


@dataclass(frozen=True)
class Dataset:
    name: str
    kind: Kind
    doc: str


@dataclass(frozen=True)
class Stage:
    """One stage, declared in its own module of :mod:`reelrank.stages` beside its function (kedro's
    ``node(func, inputs, outputs)``): the runner reads ``inputs`` and ``published``, calls ``func``, and checks
    that it returned exactly ``outputs``."""

    name: str
    func: Callable[..., Any]
    """``func(io, cfg, **inputs)``: each declared input by name, each published one as ``published_<name>``;
    returns a :class:`reelrank.runstate.Result`."""
    inputs: tuple[str, ...] = ()
    """Datasets of this run, written by earlier stages."""
    outputs: tuple[str, ...] = ()
    published: tuple[str, ...] = ()
    """Warehouse tables of earlier published nights this stage reads (the whole published view, or None before
    the first night)."""
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
        Dataset("history", "frame", "interactions before the holdout (what every source is fitted on)"),
        Dataset("holdout", "frame", "what users did next ([evaluate] holdout), held out for labels and evaluation"),
        Dataset("user_neighbours", "table", "top-k Pearson user-user neighbours on all interactions"),
        # what the candidate sources leave: declared by each source (reelrank.candidates)
        *(Dataset(t.name, "table", t.doc) for t in candidates.emitted()),
        *(Dataset(name, "frame", doc) for name, doc in candidates.kept_from_history()),
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
        Dataset("metrics", "table", "every list's offline metrics on the holdout (users: how many it was measured on)"),
        Dataset("champion", "frame", "the list published tonight and why (the ranker unless a list beats it)"),
        Dataset("recommendations", "table", "tonight's published top-N per user, from the champion list"),
        Dataset("runs", "record", "every attempt of every run: status, stage seconds and rows (the quality gate "
                "compares tonight with the last published one)"),
    )
}

TABLES: tuple[str, ...] = tuple(name for name, d in DATASETS.items() if d.kind == "table")
"""Every warehouse table a run publishes (``runs`` is appended to separately)."""

STAGE_NAMES: tuple[str, ...] = (
    "ingest", "matrix", "neighbours", "candidates", "features", "train", "evaluate", "score", "publish",
)
"""The modules of :mod:`reelrank.stages` in run order; each declares its :class:`Stage` as ``STAGE``. Only the
order lives here, so the CLI lists stages without importing them (they import Spark)."""


@cache
def stages() -> dict[str, Stage]:
    """Every stage's declaration, collected from its module, in run order."""
    found = {}
    for name in STAGE_NAMES:
        decl = getattr(import_module(f"reelrank.stages.{name}"), "STAGE", None)
        if not isinstance(decl, Stage) or decl.name != name:
            raise TypeError(f"reelrank.stages.{name} must declare its stage as STAGE = Stage({name!r}, ...)")
        found[name] = decl
    return found


def stage(name: str) -> Stage:
    """Stage ``name``'s declaration."""
    if name not in STAGE_NAMES:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")
    return stages()[name]
