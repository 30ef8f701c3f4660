"""The sequence models: SASRec (``sasrec``) and its GRU variant (``gru4rec``) from :mod:`reelrank.seqmodels`, trained
on the sequence shards of :mod:`reelrank.sequences`; users none of whose items the model knows get the popular list.

The nightly's second fit starts from the history fit's weights for a few epochs (:func:`refit_plan`), or the history
fit serves tonight's sequences when not one epoch fits ``[sequence] refit_max_positions``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import tempfile
from typing import TYPE_CHECKING

from reelrank import columns as C
from reelrank.candidates.base import CandidateSource, SourceSettings, register

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from reelrank.config import Config, SequenceConfig, TrainConfig
    from reelrank.models import EpochStats
    from reelrank.seqmodels import SequenceModel

log = logging.getLogger(__name__)

SHARD_FILES = 4
"""Parquet files of the sequence shards per fit."""


class SequenceSource(CandidateSource):
    """A next-item model over each user's latest ``[sequence] max_len`` items (``[sequence]``, ``[train]``)."""

    kind = "sasrec"
    """The model of :mod:`reelrank.seqmodels`."""
    baseline = False
    servable = True

    def __init__(self, settings: SourceSettings, cfg: SequenceConfig, train: TrainConfig,
                 work_dir: str | None = None, files: int = SHARD_FILES) -> None:
        super().__init__(settings)
        self.cfg, self.train_cfg, self.files = cfg, train, files
        self.work_dir = work_dir
        self.warm_start: SequenceModel | None = None
        """Weights to start from (the nightly's fit on all interactions starts from the history fit's), trained
        at most ``sequence.refit_epochs`` more."""

    @classmethod
    def from_config(cls, cfg: Config) -> SequenceSource:
        return cls(cfg.candidates[cls.name], cfg.sequence, cfg.train)

    def start_from(self, fitted: CandidateSource) -> None:
        if isinstance(fitted, SequenceSource) and fitted.name == self.name:
            self.warm_start = fitted.model

    def fit(self, interactions: DataFrame) -> SequenceSource:
        from reelrank import sequences
        from reelrank.device import choose_device, use_mixed_precision
        from reelrank.seqmodels import SequenceModel
        from reelrank.warehouse import storage

        cfg, refit, per_epoch = self.cfg, None, 0
        self._use(interactions)
        if self.warm_start is not None:
            refit, per_epoch = refit_plan(self.warm_start, cfg)
            if refit is None:  # as served_on(interactions): the history fit reads tonight's sequences
                log.info("%s: an epoch is %s positions, over [sequence] refit_max_positions %s: tonight's sequences "
                         "are scored with the history fit", self.name, f"{per_epoch:,}", f"{cfg.refit_max_positions:,}")
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
            log.info("%s: starting from the history fit's weights, at most %d more epochs (~%s positions each)",
                     self.name, cfg.epochs, f"{per_epoch:,}")
        # a rerun of the stage (nightly --resume) continues from the last finished epoch
        ckpt = storage.join(self.work_dir, "model", f"{self.name}.ckpt")
        if self.train_cfg.num_processes > 1:
            self.model = sequences.fit_distributed(self.kind, n_items, cfg, tokens, self.train_cfg, init, ckpt)
        else:
            self.model = init or SequenceModel(self.kind, n_items, cfg)
            self.model.cfg = cfg
            self.model.fit(tokens, device, progress=self._progress, checkpoint_path=ckpt)
        h = self.model.history
        why = (" (stopped early)" if h.stopped_early
               else f" (work cap [sequence] max_positions {cfg.max_positions:,})" if h.capped else "")
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
        self.use(interactions)
        self._interactions = interactions

    def served_on(self, interactions: DataFrame) -> SequenceSource:
        """The fitted model reading each user's latest items in ``interactions``; items it never saw are left out
        of the sequences and the lists (their embeddings are untrained)."""
        served = copy.copy(self)
        served._use(interactions)
        return served

    def _known(self) -> DataFrame:
        """The interactions with items the model has an embedding for."""
        from pyspark.sql import functions as F

        return self._interactions.filter(F.col(C.ITEM_IDX) < self.model.n_items)

    def warm_users(self) -> DataFrame:
        """Users with an item the model knows."""
        return self._known().select(C.USER_IDX)

    def recommend_warm(self, users: DataFrame, n: int) -> DataFrame:
        from reelrank import sequences

        frame = sequences.sequence_frame(self._known(), self.cfg.max_len, seen=True)
        return sequences.score_sequences(frame.join(users, C.USER_IDX, "left_semi"), self.model.to_bytes(), n)


@register
class SASRecSource(SequenceSource):
    """SASRec with full-softmax cross-entropy; its list feeds the ranker."""

    name = "sasrec"
    kind = "sasrec"
    feature_prefix = "sasrec"


@register
class GRU4RecSource(SequenceSource):
    """The GRU variant (the recurrent alternative to SASRec), evaluated beside it."""

    name = "gru4rec"
    kind = "gru4rec"


def refit_plan(fitted: SequenceModel, cfg: SequenceConfig) -> tuple[SequenceConfig | None, int]:
    """The config of the nightly's second fit (all interactions, from the history fit's weights), and the positions
    an epoch of the history fit trained on: at most ``refit_epochs``, only whole epochs of that many positions
    within ``refit_max_positions`` (and the fit's own ``max_positions``). None means not one epoch fits, so the
    history fit scores tonight's sequences (issue 15: at 1M ratings an epoch is ~1M positions, ~80 s here).
    Counted in positions, never seconds, so the plan is the same whatever the machine's load (issue 30)."""
    per_epoch = max((e.samples for e in fitted.history.epochs), default=0)
    epochs, cap = min(cfg.epochs, cfg.refit_epochs), cfg.max_positions
    if cfg.refit_max_positions > 0:
        cap = min(cap, cfg.refit_max_positions) if cap > 0 else cfg.refit_max_positions
        if per_epoch > 0:
            epochs = min(epochs, cfg.refit_max_positions // per_epoch)
    return (dataclasses.replace(cfg, epochs=epochs, max_positions=cap) if epochs else None), per_epoch
