"""Typed, frozen configuration loaded from ``conf/*.toml``.

``conf/base.toml`` holds every setting; an environment file (``local.toml``, ``cluster.toml``)
overrides a subset of it. Every field must come from TOML: an unknown key, a missing key or a
wrong type is a :class:`ConfigError` naming the file and the dotted key. So is a value outside a field's
choices (a ``Literal``) or its range. Each section is a frozen pydantic v2 dataclass (:mod:`reelrank.settings`:
unknown keys forbidden, strict scalar types, ``Field`` ranges); a candidate source declares its own
``[candidates.<name>]`` table beside it (:mod:`reelrank.candidates`).

Sections whose components import no Spark live beside them (:mod:`reelrank.inputs.settings`,
:mod:`reelrank.warehouse.settings`); those of components that load Spark or torch when imported (neighbours, ALS,
sequence models, features, the ranker, evaluation) are declared here, so that reading a config (``reelrank query``,
``--help``) loads neither. That, the loader and the cross-field checks make this module about 530 lines.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tomllib
from collections.abc import Callable
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator
from pydantic.dataclasses import dataclass

from reelrank.candidates.base import SourceSettings
from reelrank.inputs.settings import IngestConfig, SourceConfig, SourceKind, SyntheticConfig, TimestampUnits
from reelrank.metric_keys import RankingMetric
from reelrank.settings import (
    SECTION,
    Bool,
    ConfigError,
    Dropout,
    Float,
    Fraction,
    Int,
    MemorySize,
    MetricKey,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Str,
    validate,
)
from reelrank.warehouse import storage
from reelrank.warehouse.settings import Metastore, WarehouseConfig

__all__ = ["Config", "ConfigError", "IngestConfig", "Metastore", "SourceConfig", "SourceKind", "SyntheticConfig",
           "TimestampUnits", "WarehouseConfig", "NonNegativeFloat", "NonNegativeInt", "PositiveFloat", "PositiveInt",
           "Fraction", "load_config"]


def _spark_value(value: Any) -> Any:
    """``[spark] extra`` values pass to Spark as text: TOML numbers and booleans are written as Spark spells them."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if isinstance(value, (int, float)) else value


SparkValue = Annotated[Str, BeforeValidator(_spark_value)]

ModelName = Literal["mlp", "neumf"]
"""Rankers registered in :data:`reelrank.models.RANKERS`."""
LossName = Literal["bce", "bpr"]
DeviceSetting = Literal["auto", "cpu", "cuda"]
"""As :data:`reelrank.device.DEVICE_SETTINGS`."""
SimilarityMeasure = Literal["auto", "pearson", "cosine"]
"""``[neighbours] similarity`` (:func:`reelrank.neighbours.similarity_measure`)."""
HoldoutKind = Literal["window", "latest", "random"]
"""Holdouts of :func:`reelrank.splits.holdout_split`."""
SparkLogLevel = Literal["ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "TRACE", "OFF"]
"""``SparkContext.setLogLevel``'s levels."""


@dataclass(frozen=True, config=SECTION)
class SparkConfig:
    master: Str
    """Spark master URL, e.g. ``local[2]`` or ``spark://host:7077``."""
    app_name: Str
    shuffle_partitions: PositiveInt
    """``spark.sql.shuffle.partitions``: small on one machine, larger on a cluster."""
    driver_memory: MemorySize
    ui_enabled: Bool
    log_level: SparkLogLevel
    event_log: Bool
    """Write Spark's event log to ``<data_dir>/spark-events``, where pyspark's history server can replay a night."""
    extra: dict[Str, SparkValue]
    """Any further ``spark.*`` settings, passed through verbatim."""


@dataclass(frozen=True, config=SECTION)
class NeighboursConfig:
    k: PositiveInt
    """Neighbours used per prediction (KNNWithMeans' ``k``)."""
    min_k: NonNegativeInt
    """Below this many usable neighbours the prediction falls back to the entity mean."""
    min_support: NonNegativeInt
    """Pairs with fewer co-ratings get no similarity."""
    shrinkage: NonNegativeFloat
    """``sim * n / (n + shrinkage)``; 0 disables it."""
    top_k: PositiveInt
    """Neighbours stored per entity."""
    list_shrinkage: NonNegativeFloat
    """The stored top-k lists are ranked by ``sim * n / (n + list_shrinkage)`` (significance weighting), so pairs
    with tiny support (Pearson is ±1 at n = 2) do not crowd out well-supported neighbours; the stored similarity
    itself is not shrunk. 0 ranks by similarity alone."""
    recommend_shrinkage: NonNegativeFloat
    """Item-neighbour candidates score Σ sim · n / (n + recommend_shrinkage) over the user's items."""
    max_ratings_per_user: NonNegativeInt
    """When the item-item work is over ``exact_work_budget``, heavy users are down-sampled (seeded) to this many
    ratings; 0: to the largest number that brings the work within the budget."""
    max_ratings_per_item: NonNegativeInt
    """When the user-user work is over ``exact_work_budget``, popular items are down-sampled (seeded) to this many
    ratings; 0: to the largest number that brings the work within the budget."""
    exact_work_budget: PositiveInt
    """Co-rating products (Σ over the co-rated side of ratings²) up to which Pearson is exact; above it, the
    ratings are down-sampled and the lists say so."""
    blocks: PositiveInt
    """Entities are split into this many blocks; each of the ``blocks * (blocks + 1) / 2`` block pairs is one
    task computing its pairs' sufficient statistics with sparse products. More blocks: smaller tasks."""
    max_pairs_per_chunk: PositiveInt
    """A task takes its products over chunks of its entities, each holding at most this many candidate pairs
    (entities × neighbours), so its memory stays bounded however many entities share a block (issue 15)."""
    seed: Int
    similarity: SimilarityMeasure
    """``pearson`` (scikit-surprise's), ``cosine`` (of the binary vectors: implicit feedback) or ``auto``: Pearson
    unless every rating is the same, where Pearson is undefined and would find no pair (issue 30)."""


@dataclass(frozen=True, config=SECTION)
class ALSConfig:
    rank: PositiveInt
    reg_param: NonNegativeFloat
    """Spark ALS ``regParam`` (scaled by each user's / item's rating count: ALS-WR)."""
    max_iter: PositiveInt
    alpha: NonNegativeFloat
    """Implicit mode: confidence is ``1 + alpha * r`` for a rating or event count ``r``."""
    implicit: Bool
    """``true``: implicit-feedback ALS (top-N); ``false``: explicit ALS on ratings (rating prediction)."""
    nonnegative: Bool
    blocks: PositiveInt
    """``numUserBlocks`` and ``numItemBlocks``."""
    checkpoint_interval: NonNegativeInt
    """Checkpoint ALS factors every this many iterations (needs a checkpoint dir); 0 disables it."""
    seed: Int
    biases: Bool
    """Explicit mode: fit a global mean plus regularised user/item biases, ALS on the residual, add back."""
    bias_reg_user: NonNegativeFloat
    """Ridge penalty of a user bias (``sum(residual) / (bias_reg_user + n_u)``)."""
    bias_reg_item: NonNegativeFloat
    """Ridge penalty of an item bias."""
    bias_iter: NonNegativeInt
    """Alternating passes (items, then users) fitting the biases."""
    plain_weight: Fraction
    """Explicit mode with biases: weight of a second ALS fitted on the raw ratings, averaged with the
    bias + residual model (0 disables it; 0.5 at rank 100 gives mean RMSE 0.908 on the ml-100k folds vs 0.922
    without)."""
    clip_predictions: Bool
    """Explicit mode: clip predicted ratings to the lowest/highest rating seen in training."""
    topn_block_users: PositiveInt
    """Blocked top-N scores this many users at a time against all item factors (memory: users x items floats)."""
    tune_ranks: list[PositiveInt]
    """Grid searched by ``reelrank.tune``."""
    tune_reg_params: list[NonNegativeFloat]
    tune_alphas: list[NonNegativeFloat]
    """Ignored in explicit mode."""


@dataclass(frozen=True, config=SECTION)
class CandidatesConfig:
    """``[candidates]``: which sources the nightly runs and how they refit. Each source's own table
    ``[candidates.<name>]`` (its list length ``n`` and settings) is declared by the source's class in
    :mod:`reelrank.candidates`, whose registry also gives the names allowed here (:func:`_build_candidates`)."""

    sources: list[Str]
    """Candidate sources the nightly fits (on the history and on all data) and evaluates; it must hold the
    ranker's feature sources (:func:`reelrank.candidates.feature_sources`)."""
    serve_from_history: list[Str]
    """Sources fitted once, on the history: tonight's lists score all interactions with that fit instead of fitting
    again (a sequence model reads tonight's sequences either way; issue 15)."""
    refit_max_interactions: NonNegativeInt
    """Refit-budgeted sources (ALS, EASE) serve tonight's lists from their history fit, as ``serve_from_history``
    does, when the night has more interactions than this (the fit on all interactions costs as much again: ~450 s
    of the 10M night, issue 15). Counted in interactions, not seconds, so the choice never depends on the machine's
    load (issue 30); sequence models cap their refit with ``[sequence] refit_max_positions``. 0: always refit."""
    sections: dict[Str, SourceSettings] = field(default_factory=dict)
    """Every registered source's ``[candidates.<name>]`` table, by name."""

    def __getitem__(self, name: str) -> SourceSettings:
        """Source ``name``'s settings (``[candidates.<name>]``)."""
        try:
            return self.sections[name]
        except KeyError:
            raise KeyError(f"no [candidates.{name}] table; tables: {', '.join(self.sections)}") from None

    def to_dict(self) -> dict[str, Any]:
        """As in the TOML: the top-level keys and one table per source."""
        return {"sources": list(self.sources), "serve_from_history": list(self.serve_from_history),
                "refit_max_interactions": self.refit_max_interactions,
                **{name: dataclasses.asdict(s) for name, s in self.sections.items()}}


@dataclass(frozen=True, config=SECTION)
class SequenceConfig:
    """The sequence models (``sasrec``, ``gru4rec`` candidate sources; :mod:`reelrank.seqmodels`)."""

    max_len: PositiveInt
    """Latest items per user the model reads (L)."""
    dim: PositiveInt
    blocks: PositiveInt
    """Self-attention blocks (SASRec) or GRU layers."""
    heads: PositiveInt
    dropout: Dropout
    epochs: PositiveInt
    """Most epochs; the best by validation NDCG is kept."""
    max_positions: NonNegativeInt
    """Work cap per fit, in training positions (next-item targets) over all epochs: the batch that reaches it is
    the last, and the best validated weights so far are kept. Counted in positions, never seconds, so the same
    data train the same model whatever the machine's load (issue 30); 0: epochs and patience alone decide."""
    refit_epochs: PositiveInt
    """Most epochs of the nightly's fit on all interactions, which starts from the history fit's weights."""
    batch_size: PositiveInt
    """Users (sequences) per batch."""
    learning_rate: PositiveFloat
    weight_decay: NonNegativeFloat
    eval_every: PositiveInt
    """Epochs between validations (NDCG@k of each user's last fitted item among all unseen items)."""
    patience: NonNegativeInt
    """Validations without a better NDCG before stopping; 0 never stops early."""
    early_stopping_k: PositiveInt
    full_softmax_max_items: PositiveInt
    """Cross-entropy over the whole catalogue up to this many items; sampled softmax above."""
    negatives: PositiveInt
    """Items sampled per batch for the sampled softmax."""
    mixed_precision: Bool
    """bfloat16 autocast on CUDA; ignored on CPU."""
    seed: Int
    rows_per_row_group: PositiveInt
    """Users per row group of the sequence shards."""
    bucket_batches: NonNegativeInt = 0
    """Training batches drawn from each chunk of users sorted by history length, so a batch's users have similar
    lengths and little of it is padding (random batches of the 1M synthetic night were 73% padding); 0: fully
    random batches (models saved before the setting existed were trained so)."""
    refit_max_positions: NonNegativeInt = 0
    """The fit on all interactions runs only whole epochs whose positions (as many as an epoch of the history fit
    had) fit in this many; when not one does, the history fit scores tonight's sequences (``[candidates]
    serve_from_history`` does so always). 0: no limit (models saved before the setting existed)."""


@dataclass(frozen=True, config=SECTION)
class FeaturesConfig:
    rows_per_row_group: PositiveInt
    """Parquet row-group size: each Petastorm reader worker reads one row group at a time."""
    files_per_split: PositiveInt
    val_fraction: Fraction
    """Share of users whose labelled candidates form the validation shards (and the evaluation set)."""


@dataclass(frozen=True, config=SECTION)
class TrainConfig:
    model: ModelName
    """``mlp`` (features + id embeddings, pointwise BCE) or ``neumf`` (GMF + MLP over ids, sampled negatives)."""
    epochs: PositiveInt
    batch_size: PositiveInt
    learning_rate: PositiveFloat
    hidden: list[PositiveInt]
    """Sizes of the MLP's hidden layers."""
    embedding_dim: NonNegativeInt
    """User and item id embedding size; 0: the MLP ranks on the features alone (neumf needs > 0)."""
    dropout: Dropout
    """Dropout after each hidden layer of the MLP ranker (0 disables it)."""
    weight_decay: NonNegativeFloat
    """Decoupled weight decay (AdamW); 0 is plain Adam."""
    device: DeviceSetting
    """``auto`` (cuda when available, else cpu), ``cpu`` or ``cuda``."""
    num_processes: PositiveInt
    """More than 1 trains data-parallel through Spark's ``TorchDistributor`` (local mode)."""
    reader_workers: PositiveInt
    """Petastorm reader threads; only 1 gives a reproducible row order."""
    shuffle_rows: Bool
    """Shuffle row groups and the rows inside them each epoch (seeded by ``seed`` and the epoch)."""
    seed: Int
    shuffle_buffer: NonNegativeInt
    """Rows held in the loader's shuffling buffer to mix rows across row groups; 0 turns it off."""
    mixed_precision: Bool
    """bfloat16 autocast on CUDA; ignored on CPU."""
    loss: LossName
    """``bce`` (pointwise) or ``bpr`` (pairwise, positive vs a sampled negative; ``neumf`` only)."""
    num_negatives: PositiveInt
    """Items sampled uniformly per positive as negatives (``neumf``)."""
    early_stopping_k: PositiveInt
    """Cut-off of the validation NDCG used to pick the best epoch (``neumf``)."""
    early_stopping_patience: NonNegativeInt
    """Stop after this many epochs without a better validation NDCG; 0 never stops early."""
    resume: Bool
    """Continue from the checkpoint next to the model file when one is there."""
    threads: NonNegativeInt
    """torch intra-op threads while training; 0 keeps torch's default (one per core). On a CPU shared with
    other busy processes 1 can be many times faster (bench/results/loader.md)."""


@dataclass(frozen=True, config=SECTION)
class ScoreConfig:
    top_n: PositiveInt


@dataclass(frozen=True, config=SECTION)
class EvaluateConfig:
    holdout: HoldoutKind
    """What is held out: a global time window (what users did after a date), each user's latest, or random ones."""
    holdout_days: PositiveInt
    """``window``: the window's length in days before the last interaction, at least."""
    holdout_min_users: PositiveInt
    """``window``: it widens by a day at a time until this many users active before it are active in it ..."""
    holdout_max_share: Fraction
    """... while it holds at most this share of the interactions."""
    holdout_per_user: PositiveInt
    """``latest`` and ``random``: interactions held out per user."""
    ks: list[PositiveInt]
    relevance_threshold: Float
    """A held-out rating at or above this counts as relevant for ranking metrics."""
    tune_metric: MetricKey
    """Metric ``reelrank.tune`` maximises (``ndcg@10``, ``map@10`` ...) or minimises (``rmse``, ``mae``)."""


@dataclass(frozen=True, config=SECTION)
class QualityConfig:
    enabled: Bool
    min_rows_ratio: NonNegativeFloat
    """Tonight's recommendation rows must be at least this share of the last published run's."""
    max_metric_drop: Float
    """Largest relative drop of ``metric``@``k`` of the published model against the last published run."""
    noise_z: NonNegativeFloat
    """A drop fails the gate only when tonight's value lies this many standard errors below the allowed floor
    (0 = any value under the floor fails), so a small validation set cannot stop a run on noise."""
    metric: RankingMetric
    k: PositiveInt
    on_regression: Literal["publish_best", "fail"]
    """When ``train.model``'s list is worse than the best list of the night (candidate sources included) by more
    than ``noise_z`` standard errors of ``metric``@``k``: publish that best list instead, or fail the run."""
    champion: Literal["best", "configured"]
    """Within noise: ``best`` publishes the list with the best ``metric``@``k`` on the validation users (the
    night never publishes a list worse than another it computed); ``configured`` keeps ``train.model``'s."""


@dataclass(frozen=True, config=SECTION)
class ReportConfig:
    history_runs: PositiveInt
    """How many past runs the report's metric plots show."""


@dataclass(frozen=True, config=SECTION)
class Config:
    spark: SparkConfig
    warehouse: WarehouseConfig
    source: SourceConfig
    synthetic: SyntheticConfig
    ingest: IngestConfig
    neighbours: NeighboursConfig
    als: ALSConfig
    candidates: CandidatesConfig
    sequence: SequenceConfig
    features: FeaturesConfig
    train: TrainConfig
    score: ScoreConfig
    evaluate: EvaluateConfig
    quality: QualityConfig
    report: ReportConfig
    origin: Str = field(default="", compare=False)
    """The files this config was read from (for logs)."""

    @property
    def data_dir(self) -> str:
        """``warehouse.data_dir``: an absolute local path or a remote URI (see :func:`load_config`, :mod:`storage`)."""
        return self.warehouse.data_dir

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("origin")
        d["candidates"] = self.candidates.to_dict()
        return d

    def fingerprint(self, exclude: tuple[str, ...] = ()) -> str:
        """A short hash of every setting (but the ``exclude``d sections), recorded with each run."""
        d = {k: v for k, v in self.to_dict().items() if k not in exclude}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]

    def replace(self, **sections: dict[str, Any]) -> Config:
        """A copy with some fields of some sections changed, e.g. ``cfg.replace(score={"top_n": 5})``.

        Checked like a loaded config; a new ``warehouse.data_dir`` is made absolute (the environment is not read again).
        """
        cfg = _build(_merge(self.to_dict(), sections), "<replace>")
        return dataclasses.replace(_resolve_data_dir(cfg), origin=self.origin)


def default_conf_dir() -> Path:
    """``$REELRANK_CONF_DIR``, else the repository's ``conf/`` beside ``lib/`` (a source checkout), else the
    copy of ``conf/`` installed with the package (``reelrank/conf`` in the wheel)."""
    env = os.environ.get("REELRANK_CONF_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    checkout = here.parents[1] / "conf"
    return checkout if (checkout / "base.toml").is_file() else here / "conf"


DATA_DIR_ENV = "REELRANK_DATA_DIR"


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read ``base.toml`` beside ``path`` (or in the default conf dir), then ``path`` over it, then ``overrides``.

    ``warehouse.data_dir`` is resolved here, once, to an absolute path: ``overrides`` (``--data-dir``) first,
    then ``$REELRANK_DATA_DIR``, then the files.
    """
    env_file = Path(path) if path else default_conf_dir() / "local.toml"
    if not env_file.is_file():
        raise ConfigError(f"config file not found: {env_file}")
    # base.toml beside the file; else the installed defaults (a config shipped alone, e.g. spark-submit --files)
    base_file = env_file.parent / "base.toml"
    if not base_file.is_file():
        base_file = default_conf_dir() / "base.toml"
    if not base_file.is_file():
        raise ConfigError(f"config file not found: {base_file} (every environment file extends base.toml)")
    data = _read(base_file)
    files = [str(base_file)]
    if env_file.resolve() != base_file.resolve():
        data = _merge(data, _read(env_file), str(env_file))
        files.append(str(env_file))
    explicit_dir = isinstance(overrides, dict) and "data_dir" in (overrides.get("warehouse") or {})
    if os.environ.get(DATA_DIR_ENV) and not explicit_dir:
        data = _merge(data, {"warehouse": {"data_dir": os.environ[DATA_DIR_ENV]}})
    if overrides:
        data = _merge(data, overrides, "<overrides>")
    cfg = _build(data, " + ".join(files))
    return dataclasses.replace(_resolve_data_dir(cfg), origin=" + ".join(files))


STEP_TOLERANCE = 1e-6
"""Floating-point slack, in steps, when checking that a value lies on a rating scale's step."""


def _whole_steps(c: Config) -> bool:
    """``rating_step`` is 0 (no step) or fits a whole number of times between ``rating_min`` and ``rating_max``."""
    step, span = c.ingest.rating_step, c.ingest.rating_max - c.ingest.rating_min
    return step == 0 or (step <= span and abs(span / step - round(span / step)) < STEP_TOLERANCE)


_CROSS_CHECKS: list[tuple[str, Callable[[Config], Any], Callable[[Config], bool], str]] = [
    # (key, its value, valid?, what a valid value is)
    ("evaluate.ks", lambda c: c.evaluate.ks, lambda c: bool(c.evaluate.ks), "a non-empty list"),
    ("ingest.rating_max", lambda c: c.ingest.rating_max, lambda c: c.ingest.rating_max > c.ingest.rating_min,
     "greater than ingest.rating_min"),
    ("ingest.rating_step", lambda c: c.ingest.rating_step, _whole_steps,
     "0 or a step that divides ingest.rating_max - ingest.rating_min into whole steps"),
    ("train.embedding_dim", lambda c: c.train.embedding_dim,
     lambda c: c.train.model != "neumf" or c.train.embedding_dim > 0, "> 0 for train.model = 'neumf'"),
    ("sequence.heads", lambda c: c.sequence.heads, lambda c: c.sequence.dim % c.sequence.heads == 0,
     "a divisor of sequence.dim"),
    ("quality.k", lambda c: c.quality.k, lambda c: not c.quality.enabled or c.quality.k in c.evaluate.ks,
     "one of evaluate.ks (the gate reads the metric evaluated at that k)"),
]
"""Constraints between fields, checked after each field's own; those of ``[candidates]`` come
from the candidate sources (:func:`reelrank.candidates.config_problems`)."""


def _check(cfg: Config, where: str) -> Config:
    from reelrank.candidates import config_problems  # the registry; imports no Spark

    for key, value, valid, expect in _CROSS_CHECKS:
        if not valid(cfg):
            raise ConfigError(f"{where}: {key} must be {expect}, got {value(cfg)!r}")
    for key, bad, expect in config_problems(cfg):
        raise ConfigError(f"{where}: {key} must be {expect}, got {bad!r}")
    return cfg


def _resolve_data_dir(cfg: Config) -> Config:
    """``warehouse.data_dir`` with ``~`` and ``$VAR`` expanded, made absolute (a ``file://`` URI becomes a path)."""
    try:
        resolved = storage.resolve(cfg.warehouse.data_dir)
    except storage.StorageError as e:
        raise ConfigError(f"warehouse.data_dir: {e}") from None
    if resolved == cfg.warehouse.data_dir:
        return cfg
    return dataclasses.replace(cfg, warehouse=dataclasses.replace(cfg.warehouse, data_dir=resolved))


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from e


def _merge(base: dict[str, Any], over: dict[str, Any], where: str = "", prefix: str = "") -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not _is_free_dict(prefix + key):
            out[key] = _merge(out[key], value, where, f"{prefix}{key}.")
        else:
            out[key] = value
    return out


_FREE_DICTS = {"spark.extra", "warehouse.metastore_conf", "source.columns"}


def _is_free_dict(dotted: str) -> bool:
    return dotted in _FREE_DICTS


def _build(data: Any, where: str) -> Config:
    """The whole config from merged TOML data: pydantic checks every section (:mod:`reelrank.settings`), then the
    constraints between fields (:data:`_CROSS_CHECKS`)."""
    if isinstance(data, dict) and isinstance(data.get("candidates"), dict):
        data = {**data, "candidates": _build_candidates(data["candidates"], where)}
    return _check(validate(Config, data, where), where)


def _list_of(choices: tuple[str, ...]) -> Any:
    """``list[Literal[*choices]]``, made when the config is read (the registry's names are known only then)."""
    literal: Any = Literal
    return list.__class_getitem__(literal[choices])


def _build_candidates(data: dict[str, Any], where: str) -> CandidatesConfig:
    """``[candidates]``: its own keys, then one table per registered source, each that source's settings class (so
    an unknown key in ``[candidates.ease]`` is named like any other). The section's shape is made from the registry
    when the config is read, so a source registered later (a plugin, a test's toy) has its table checked too."""
    from reelrank import candidates  # the registry and the sources' settings classes; imports no Spark

    names, servable = candidates.names(), candidates.servable_names()
    shape = dataclasses.make_dataclass("candidates", [
        ("sources", _list_of(names)),
        ("serve_from_history", _list_of(servable)),
        ("refit_max_interactions", NonNegativeInt),
        *((name, candidates.source_class(name).settings_type) for name in names),
    ], frozen=True)
    built: Any = validate(dataclass(frozen=True, config=SECTION)(shape), data, where, ("candidates",))
    return CandidatesConfig(sources=list(built.sources), serve_from_history=list(built.serve_from_history),
                            refit_max_interactions=built.refit_max_interactions,
                            sections={name: getattr(built, name) for name in names})
