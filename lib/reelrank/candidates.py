"""Candidate sources behind one interface: fit on interactions, recommend each user's top-n unseen items.

Every source (popularity over all time or a recent window, item neighbours, ALS, EASE) returns lists as
``(user_idx, item_idx, score, rank)`` with ranks 1..n, no item the user interacted with in the fitted data,
ties to the smaller item_idx, and the source's popular list for a user without history. The nightly fits each
configured source on the history (labels, evaluation) and on all interactions (tonight's candidates) in one loop;
evaluation iterates over the same registry. The shape follows implicit's ``fit``/``recommend`` and RecTools'
``fit(dataset)``/``recommend(users, k, filter_viewed)``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from reelrank import columns as C
from reelrank import ease, factorize, neighbours, popularity, sequences, storage
from reelrank.config import ALSConfig, Config, NeighboursConfig, SequenceConfig, TrainConfig
from reelrank.device import choose_device, use_mixed_precision
from reelrank.models import EpochStats
from reelrank.seqmodels import SequenceModel

log = logging.getLogger(__name__)


class CandidateSource(ABC):
    """A source of top-n lists: ``fit`` once, then ``recommend`` for any users (seen items are those fitted)."""

    name: str
    baseline: bool = True
    """A strong simple baseline (popularity, item-kNN, ALS, EASE) that a deep model must beat in the same run."""
    work_dir: str | None = None
    """Where a source that writes files (shards, weights, checkpoints) writes them; None: a temporary folder."""

    @abstractmethod
    def fit(self, interactions: DataFrame) -> CandidateSource:
        """Fit on ``(user_idx, item_idx, rating, ts)``; return self."""

    def start_from(self, fitted: CandidateSource) -> None:
        """Before ``fit``: reuse what ``fitted`` (the same source fitted on earlier data) learnt, where that saves
        work (the nightly's fit on all interactions after the history fit). Most sources start afresh."""
        return None

    def served_on(self, interactions: DataFrame) -> CandidateSource | None:
        """This fitted source recommending from ``interactions`` (what it fitted and later ones) without fitting
        again, or None where its lists can only come from a fit (``[candidates] serve_from_history``)."""
        return None

    @abstractmethod
    def recommend(self, users: DataFrame, n: int) -> DataFrame:
        """Top ``n`` unseen items for every ``user_idx`` in ``users`` as ``(user_idx, item_idx, score, rank)``."""

    def tables(self) -> dict[str, DataFrame]:
        """What the fitted source leaves for the warehouse, by table name (neighbour lists, factors)."""
        return {}


class PopularitySource(CandidateSource):
    """Items by distinct users, over all time (``window_days`` 0) or the last ``window_days`` of the data."""

    def __init__(self, name: str, window_days: float = 0.0) -> None:
        self.name, self.window_days = name, window_days

    def fit(self, interactions: DataFrame) -> PopularitySource:
        self._seen = interactions.select(C.USER_IDX, C.ITEM_IDX)
        self._counts = popularity.item_users(interactions, self.window_days)
        return self

    def recommend(self, users: DataFrame, n: int) -> DataFrame:
        return popularity.popular_unseen(self._counts, users.select(C.USER_IDX).distinct(), self._seen, n)


class ItemNeighboursSource(CandidateSource):
    """Item-based top-N over the top-k Pearson item-item lists (Deshpande & Karypis, 2004); a user without
    history gets the popular list, a user whose items have no positive neighbour gets no list."""

    name = "item_neighbours"

    def __init__(self, cfg: NeighboursConfig, block_users: int) -> None:
        self.cfg, self.block_users = cfg, block_users

    def fit(self, interactions: DataFrame) -> ItemNeighboursSource:
        self._train = interactions.select(C.USER_IDX, C.ITEM_IDX)
        self._lists = neighbours.neighbour_lists(interactions, "item", self.cfg).cache()
        self._popular = PopularitySource("popular").fit(interactions)
        return self

    def recommend(self, users: DataFrame, n: int) -> DataFrame:
        users = users.select(C.USER_IDX).distinct()
        warm = self._train.join(users, C.USER_IDX, "left_semi")
        recs = neighbours.recommend(warm, self._lists, n, self.cfg.recommend_shrinkage, self.block_users)
        cold = users.join(self._train, C.USER_IDX, "left_anti")
        return recs.unionByName(self._popular.recommend(cold, n))

    def tables(self) -> dict[str, DataFrame]:
        return {"item_neighbours": self._lists}


class ALSSource(CandidateSource):
    """Spark ML ALS top-N, scored in blocks (:func:`reelrank.factorize.recommend_top_n`); users without factors
    get the popular list."""

    name = "als"

    def __init__(self, cfg: ALSConfig) -> None:
        self.cfg = cfg

    def fit(self, interactions: DataFrame) -> ALSSource:
        self._seen = interactions.select(C.USER_IDX, C.ITEM_IDX)
        self.model = factorize.fit_als(interactions, self.cfg)
        return self

    def served_on(self, interactions: DataFrame) -> ALSSource | None:
        """Implicit ALS: the fitted item factors, each user folded in from ``interactions``
        (:func:`reelrank.factorize.fold_in`); explicit ALS with biases or non-negative ALS refits (None)."""
        if not self.cfg.implicit or self.cfg.nonnegative:
            return None
        served = copy.copy(self)
        served._seen = interactions.select(C.USER_IDX, C.ITEM_IDX)
        served.model = factorize.fold_in(self.model, interactions, self.cfg)
        return served

    def recommend(self, users: DataFrame, n: int) -> DataFrame:
        return factorize.recommend_top_n(self.model, users, self._seen, n)

    def tables(self) -> dict[str, DataFrame]:
        user_f, item_f = factorize.factor_frames(self.model)
        return {"user_factors": user_f, "item_factors": item_f}


class EaseSource(CandidateSource):
    """EASE (Steck, 2019): closed-form item-item weights over the binary interactions; users without history get
    the popular list."""

    name = "ease"

    def __init__(self, lam: float, max_items: int, block_users: int, device: str) -> None:
        self.lam, self.max_items, self.block_users, self.device = lam, max_items, block_users, device
        self._held: DataFrame | None = None
        """Served on other interactions: the users with an item B holds (the rest get the popular list)."""

    def fit(self, interactions: DataFrame) -> EaseSource:
        self._seen = interactions.select(C.USER_IDX, C.ITEM_IDX)
        self._held = None
        self.model = ease.fit_ease(interactions, self.lam, self.max_items, self.device)
        return self

    def served_on(self, interactions: DataFrame) -> EaseSource:
        """The fitted weights B applied to each user's items in ``interactions`` (x_u·B is how EASE scores any
        user); items B does not hold are left out, and a user none of whose items it holds gets the popular list."""
        served = copy.copy(self)
        served._seen = interactions.select(C.USER_IDX, C.ITEM_IDX)
        known = interactions.sparkSession.createDataFrame([(int(i),) for i in self.model.item_ids],
                                                          f"{C.ITEM_IDX} long")
        served._held = (served._seen.join(F.broadcast(known), C.ITEM_IDX, "left_semi").select(C.USER_IDX).distinct()
                        .cache())
        served.model = dataclasses.replace(self.model, popularity=popularity.item_users(interactions).cache())
        return served

    def recommend(self, users: DataFrame, n: int) -> DataFrame:
        return ease.recommend_ease(self.model, users, self._seen, n, self.block_users, self._held)


class SequenceSource(CandidateSource):
    """SASRec or its GRU variant (:mod:`reelrank.seqmodels`) over the sequence shards (:mod:`reelrank.sequences`);
    users without history get the popular list."""

    baseline = False

    def __init__(self, kind: str, cfg: SequenceConfig, train: TrainConfig, work_dir: str | None = None,
                 files: int = 4) -> None:
        self.name, self.cfg, self.train_cfg, self.files = kind, cfg, train, files
        self.work_dir = work_dir
        self.warm_start: SequenceModel | None = None
        """Weights to start from (the nightly's fit on all interactions starts from the history fit's), trained
        at most ``sequence.refit_epochs`` more."""

    def start_from(self, fitted: CandidateSource) -> None:
        if isinstance(fitted, SequenceSource) and fitted.name == self.name:
            self.warm_start = fitted.model

    def fit(self, interactions: DataFrame) -> SequenceSource:
        cfg, refit, epoch_s = self.cfg, None, 0.0
        self._use(interactions)
        if self.warm_start is not None:
            refit, epoch_s = refit_plan(self.warm_start, cfg)
            if refit is None:  # as served_on(interactions): the history fit reads tonight's sequences
                log.info("%s: an epoch took ~%.0f s, over [sequence] refit_max_seconds %g: tonight's sequences are "
                         "scored with the history fit", self.name, epoch_s, cfg.refit_max_seconds)
                self.model = self.warm_start
                return self
        self.work_dir = self.work_dir or tempfile.mkdtemp(prefix=f"reelrank-{self.name}-")
        shards = storage.join(self.work_dir, "shards")
        sequences.write_sequence_shards(interactions, shards, cfg, self.files)
        users, tokens = sequences.read_sequences(shards, cfg.max_len + 1, self.train_cfg.reader_workers)
        n_items = int(tokens.max()) if tokens.numel() else 1
        device = choose_device(self.train_cfg.device)
        log.info("%s: %d sequences of ≤ %d items, %d items, on %s (mixed precision %s)", self.name, len(users),
                 cfg.max_len, n_items, device, use_mixed_precision(device, cfg.mixed_precision))
        init = None
        if self.warm_start is not None and refit is not None and self.warm_start.n_items <= n_items:
            cfg, init = refit, self.warm_start.grown_to(n_items)
            log.info("%s: starting from the history fit's weights, %d more epochs (~%.0f s each)", self.name,
                     cfg.epochs, epoch_s)
        # a rerun of the stage (nightly --resume) continues from the last finished epoch
        ckpt = storage.join(self.work_dir, "model", f"{self.name}.ckpt")
        if self.train_cfg.num_processes > 1:
            self.model = sequences.fit_distributed(self.name, n_items, cfg, tokens, self.train_cfg, init, ckpt)
        else:
            self.model = init or SequenceModel(self.name, n_items, cfg)
            self.model.cfg = cfg
            self.model.fit(tokens, device, progress=self._progress, checkpoint_path=ckpt)
        h = self.model.history
        why = (" (stopped early)" if h.stopped_early
               else f" (time budget {cfg.max_seconds:g} s)" if h.out_of_time else "")
        log.info("%s: best validation ndcg@%d %.4f at epoch %d of %d%s", self.name, cfg.early_stopping_k,
                 h.best_ndcg, h.best_epoch + 1, len(h.epochs), why)
        self.model_file = storage.join(self.work_dir, "model", f"{self.name}.pt")
        storage.write_bytes(self.model_file, self.model.to_bytes())
        return self

    def _progress(self, e: EpochStats) -> None:
        if e.val_ndcg is not None:
            log.info("%s epoch %d/%d loss %.4f val ndcg@%d %.4f, %.1f s, %.0f positions/s", self.name, e.epoch + 1,
                     self.cfg.epochs, e.train_loss, self.cfg.early_stopping_k, e.val_ndcg, e.seconds,
                     e.samples_per_s)

    def _use(self, interactions: DataFrame) -> None:
        self._interactions = interactions
        self._popular = popularity.item_users(interactions).cache()

    def served_on(self, interactions: DataFrame) -> SequenceSource:
        """The fitted model reading each user's latest items in ``interactions``; items it never saw are left out
        of the sequences and the lists (their embeddings are untrained)."""
        served = copy.copy(self)
        served._use(interactions)
        return served

    def recommend(self, users: DataFrame, n: int) -> DataFrame:
        wanted = users.select(F.col(C.USER_IDX).cast("int").alias(C.USER_IDX)).distinct()
        known = self._interactions.filter(F.col(C.ITEM_IDX) < self.model.n_items)
        frame = sequences.sequence_frame(known, self.cfg.max_len, seen=True)
        warm = frame.join(wanted, C.USER_IDX, "left_semi")
        cold = wanted.join(frame, C.USER_IDX, "left_anti")
        return sequences.score_sequences(warm, self.model.to_bytes(), n).unionByName(
            popularity.popular_unseen(self._popular, cold, self._interactions.select(C.USER_IDX, C.ITEM_IDX), n))

    def tables(self) -> dict[str, DataFrame]:
        return {}


def refit_plan(fitted: SequenceModel, cfg: SequenceConfig) -> tuple[SequenceConfig | None, float]:
    """The config of the nightly's second fit (all interactions, from the history fit's weights), and the seconds
    an epoch took in the history fit (median): at most ``refit_epochs``, whole epochs within ``refit_max_seconds``,
    stopping there even if tonight runs slower. None means not one epoch fits, so the history fit scores tonight's
    sequences (issue 15: at 1M ratings an epoch is ~80 s, on ml-100k 4 s)."""
    seconds = sorted(e.seconds for e in fitted.history.epochs)
    epoch_s = seconds[len(seconds) // 2] if seconds else 0.0
    epochs, budget = min(cfg.epochs, cfg.refit_epochs), cfg.max_seconds
    if cfg.refit_max_seconds > 0:
        budget = min(budget, cfg.refit_max_seconds) if budget > 0 else cfg.refit_max_seconds
        if epoch_s > 0:
            epochs = min(epochs, int(cfg.refit_max_seconds // epoch_s))
    return (dataclasses.replace(cfg, epochs=epochs, max_seconds=budget) if epochs else None), epoch_s


REGISTRY: dict[str, Callable[[Config], CandidateSource]] = {
    "popular": lambda cfg: PopularitySource("popular"),
    "recent_popular": lambda cfg: PopularitySource("recent_popular", cfg.candidates.recent_days),
    "item_neighbours": lambda cfg: ItemNeighboursSource(cfg.neighbours, cfg.als.topn_block_users),
    "als": lambda cfg: ALSSource(cfg.als),
    "ease": lambda cfg: EaseSource(cfg.candidates.ease_lambda, cfg.candidates.ease_max_items,
                                   cfg.als.topn_block_users, cfg.train.device),
    "sasrec": lambda cfg: SequenceSource("sasrec", cfg.sequence, cfg.train),
    "gru4rec": lambda cfg: SequenceSource("gru4rec", cfg.sequence, cfg.train),
}
"""Every candidate source by name; ``[candidates] sources`` picks which the nightly fits."""


def make(name: str, cfg: Config, work_dir: str | None = None) -> CandidateSource:
    """The unfitted source ``name`` configured from ``cfg``; a source that writes files (the sequence models'
    shards and weights) writes them under ``work_dir`` (a temporary folder when None)."""
    source = REGISTRY[name](cfg)
    source.work_dir = work_dir
    return source


def is_baseline(name: str, cfg: Config) -> bool:
    """Whether source ``name`` is one of the simple baselines (see :attr:`CandidateSource.baseline`)."""
    return REGISTRY[name](cfg).baseline


REFIT_BUDGETED = ("als", "ease")
"""Sources whose fit on all interactions is skipped when their history fit took over ``[candidates]
refit_max_seconds``."""


def serves_from_history(name: str, cfg: Config, history_fit_seconds: float) -> str | None:
    """Why tonight's lists of source ``name`` come from its history fit (:meth:`CandidateSource.served_on`)
    instead of a fit on all interactions, or None when they do not: always with ``[candidates]
    serve_from_history``, and for ALS and EASE when the history fit took over ``[candidates] refit_max_seconds``."""
    budget = cfg.candidates.refit_max_seconds
    if name in cfg.candidates.serve_from_history:
        return "set in [candidates] serve_from_history"
    if name in REFIT_BUDGETED and budget > 0 and history_fit_seconds > budget:
        return f"it took {history_fit_seconds:.0f} s, over [candidates] refit_max_seconds {budget:g}"
    return None


def list_length(cfg: Config, name: str) -> int:
    """How many candidates source ``name`` proposes per user (``[candidates] <name>``)."""
    return int(getattr(cfg.candidates, name))
