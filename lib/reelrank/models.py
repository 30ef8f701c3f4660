"""Rankers: one interface for every learned model, trained from Parquet shards through Petastorm.

Every ranker answers ``fit(train_dir, val_dir, cfg)`` (train from shard folders), ``score_frame(pdf)``
(a score per row of a pandas frame with ``user_idx``, ``item_idx`` and the ``f_*`` features; higher is
better), ``to_bytes()`` / :func:`from_bytes` (what Spark broadcasts once to score on executors) and
``save(path)`` / :func:`load` (the bytes plus the config as JSON beside them). Ids at or beyond the
``n_users`` / ``n_items`` a model was trained with (new users, new items) map to a reserved "unknown"
embedding row, so scoring never fails on them.

* :class:`MLPRanker`: standardised features + user and item embeddings -> MLP -> 1 logit, pointwise BCE
  on the labelled rows.
* :class:`NeuMFRanker`: GMF + MLP over ids only (He et al. 2017, "Neural Collaborative Filtering"),
  trained on the positive rows with uniformly sampled negative items, BCE or pairwise BPR loss.

Both share :class:`TorchRanker`'s training loop: Adam, per-epoch seeding (so resuming from a checkpoint
gives the same model as an uninterrupted run), validation loss and NDCG@k per epoch, early stopping that
keeps the best epoch, and an optional checkpoint after every epoch.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import logging
import math
import os
import pickle
import posixpath
import time
from abc import ABC, abstractmethod
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from reelrank import storage
from reelrank.columns import ITEM_IDX, LABEL, USER_IDX
from reelrank.config import TrainConfig
from reelrank.device import autocast
from reelrank.errors import CorruptFile, first_line
from reelrank.loader import Batch, feature_moments, open_batches, shard_schema

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Bumped when the serialised payload changes incompatibly."""

# Settings a checkpoint must share with the current run to be resumed (the rest may change between runs).
_RESUME_KEYS = ("model", "batch_size", "learning_rate", "hidden", "embedding_dim", "shuffle_rows", "seed",
                "shuffle_buffer", "loss", "num_negatives", "early_stopping_k")


class ModelError(ValueError):
    """A model cannot be built, trained or loaded as asked (unknown name, bad payload, missing column)."""


@dataclass
class EpochStats:
    """What one epoch did: mean training loss, validation loss and NDCG@k (None without val), speed."""

    epoch: int
    train_loss: float
    val_loss: float | None
    val_ndcg: float | None
    samples_per_s: float
    seconds: float


@dataclass
class History:
    """Per-epoch statistics of a fit; ``best_epoch`` is the epoch whose weights the model kept."""

    epochs: list[EpochStats] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    resumed_from: int | None = None
    """The first epoch run in this call when it continued from a checkpoint."""


class Progress(Protocol):
    """Receives training progress (a progress bar, a log); every method is called on rank 0 only."""

    def start_epoch(self, epoch: int, epochs: int, total_rows: int) -> None: ...

    def batch(self, rows: int, loss: float) -> None: ...

    def end_epoch(self, stats: EpochStats) -> None: ...


class Ranker(ABC):
    """A model that learns from shard folders and scores (user_idx, item_idx, f_*) rows."""

    name: ClassVar[str]

    def __init__(self, n_users: int, n_items: int) -> None:
        if n_users < 1 or n_items < 1:
            raise ModelError(f"n_users and n_items must be >= 1, got {n_users} and {n_items}")
        self.n_users = int(n_users)
        self.n_items = int(n_items)

    @abstractmethod
    def fit(
        self,
        train_dir: str | os.PathLike,
        val_dir: str | os.PathLike | None,
        cfg: TrainConfig,
        *,
        device: torch.device | None = None,
        progress: Progress | None = None,
        checkpoint_path: str | os.PathLike | None = None,
        distributed: bool = False,
    ) -> History:
        """Train on the shards in ``train_dir``; ``val_dir`` (optional) drives model selection."""

    @abstractmethod
    def score_frame(self, pdf: pd.DataFrame) -> np.ndarray:
        """One float32 score per row of ``pdf`` (higher ranks first)."""

    @abstractmethod
    def to_bytes(self) -> bytes:
        """The whole model (weights, feature names, config) as bytes; :func:`from_bytes` reverses it."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-able facts saved beside the model file (name, config, features, sizes)."""

    def save(self, path: str | os.PathLike) -> str:
        """Write the model to ``path`` and its description to ``path`` with a ``.json`` suffix."""
        location = os.fspath(path)
        storage.write_bytes(location, self.to_bytes())
        description = json.dumps(self.describe(), indent=2, sort_keys=True) + "\n"
        storage.write_text(posixpath.splitext(location)[0] + ".json", description)
        log.info("saved %s model to %s", self.name, location)
        return location


def read_torch(data: bytes, source: str, what: str, remedy: str, map_location: torch.device | str = "cpu") -> Any:
    """``torch.load`` of tensors and plain values only (``weights_only``); a truncated, corrupt or code-carrying
    payload raises :class:`CorruptFile` naming ``what`` and ``source`` (a path) and the ``remedy``."""
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        detail = _unpickler_reason(str(e))
        if "GLOBAL" in detail:  # a pickled class or function: weights_only refuses to run code from a file
            raise CorruptFile(source, f"{what} {source} holds Python objects other than tensors and plain values "
                                      f"({detail}); refused to load it: {remedy}") from None
        raise CorruptFile(source, f"{what} {source} is truncated or corrupt ({detail}): {remedy}") from None
    except Exception as e:  # torch's zip reader and unpickler fail in many ways on damaged bytes (IndexError...)
        text = first_line(str(e)).split(". This is an internal miniz error")[0]
        detail = text if isinstance(e, RuntimeError) and text else f"{type(e).__name__}: {text}".rstrip(": ")
        raise CorruptFile(source, f"{what} {source} is truncated or corrupt ({detail}): {remedy}") from None


_TORCH_ADVICE = ("Weights only load failed", "Please file an issue", "Check the documentation", "In PyTorch")


def _unpickler_reason(text: str) -> str:
    """What torch's weights-only unpickler objected to, without its advice to turn ``weights_only`` off."""
    parts = [p.strip() for p in text.split("\n\n")]
    reasons = [p for p in parts if p and not p.startswith(_TORCH_ADVICE)]
    return first_line(reasons[0]).rstrip(".") if reasons else "not a PyTorch file"


MODEL_REMEDY = "rerun the train stage"


def from_bytes(data: bytes, source: str = "model bytes") -> Ranker:
    """Rebuild any ranker from :meth:`Ranker.to_bytes` (tensors and plain values only: ``weights_only`` load);
    ``source`` names where the bytes came from in errors."""
    payload = read_torch(data, source, "model file", MODEL_REMEDY)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CorruptFile(source, f"model file {source} is not a reelrank model (format {got!r}, expected "
                                  f"{FORMAT_VERSION}): {MODEL_REMEDY}")
    name = payload["model"]
    if name not in RANKERS:
        raise ModelError(f"unknown model {name!r} in {source} (known: {', '.join(sorted(RANKERS))})")
    return RANKERS[name]._from_payload(payload)


def load(path: str | os.PathLike) -> Ranker:
    """Read a model written by :meth:`Ranker.save`."""
    location = os.fspath(path)
    return from_bytes(storage.read_bytes(location), location)


def make_ranker(cfg: TrainConfig, n_users: int, n_items: int) -> Ranker:
    """The untrained ranker named by ``cfg.model``."""
    if cfg.model not in RANKERS:
        raise ModelError(f"train.model must be one of {', '.join(sorted(RANKERS))}, got {cfg.model!r}")
    return RANKERS[cfg.model](n_users, n_items)


def save_checkpoint(state: dict[str, Any], path: str) -> None:
    """Write the whole checkpoint at once (:func:`storage.write_bytes`): a kill mid-write leaves the previous one
    whole."""
    buf = io.BytesIO()
    torch.save(state, buf)
    storage.write_bytes(path, buf.getvalue())


CHECKPOINT_REMEDY = "delete it to train from the first epoch"


def load_checkpoint(path: str, map_location: torch.device | str) -> dict[str, Any] | None:
    """The checkpoint :func:`save_checkpoint` wrote at ``path`` (tensors and plain values only), or None."""
    if not storage.exists(path):
        return None
    state = read_torch(storage.read_bytes(path), path, "checkpoint", CHECKPOINT_REMEDY, map_location)
    if not isinstance(state, dict) or "fingerprint" not in state:
        raise CorruptFile(path, f"checkpoint {path} is not a reelrank checkpoint (no fingerprint): {CHECKPOINT_REMEDY}")
    return state


def ndcg_at_k(users: np.ndarray, labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Mean NDCG@k over users with at least one relevant row (binary gains, ties broken by row order)."""
    users = np.asarray(users)
    labels = np.asarray(labels, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if users.size == 0:
        return float("nan")
    order = np.lexsort((np.arange(users.size), -scores, users))
    u, g = users[order], labels[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    pos: np.ndarray = np.arange(u.size) - np.repeat(starts, np.diff(np.r_[starts, u.size]))
    discount = np.where(pos < k, 1.0 / np.log2(pos + 2.0), 0.0)
    dcg = np.add.reduceat(g * discount, starts)
    ideal = labels[np.lexsort((-labels, users))]  # same user blocks, best labels first
    idcg = np.add.reduceat(ideal * discount, starts)
    has = idcg > 0
    return float(np.mean(dcg[has] / idcg[has])) if has.any() else float("nan")


def _known(idx: torch.Tensor, n: int) -> torch.Tensor:
    """Ids outside [0, n) become ``n``, the reserved "unknown" embedding row."""
    idx = idx.long()
    return torch.where((idx >= 0) & (idx < n), idx, torch.full_like(idx, n))


def _mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
    return nn.Sequential(*layers)


class TorchRanker(Ranker):
    """The shared training loop and serialisation of the torch rankers; subclasses give the network and loss."""

    uses_features: ClassVar[bool] = True
    """False for id-only models: they neither read nor require the ``f_*`` columns."""

    def __init__(self, n_users: int, n_items: int) -> None:
        super().__init__(n_users, n_items)
        self.cfg: TrainConfig | None = None
        self.features: list[str] = []
        self.module: nn.Module | None = None
        self.history = History()

    # -- what a subclass provides -------------------------------------------------------------------

    @abstractmethod
    def _make_module(self, cfg: TrainConfig, n_features: int) -> nn.Module:
        """The untrained network; ``forward(user, item, x) -> logits`` with ``x`` the raw features."""

    def _prepare(self, train_dir: str | os.PathLike, module: nn.Module) -> None:
        """Fit whatever comes from the data before training (e.g. feature statistics)."""

    def _train_columns(self) -> list[str]:
        """Columns the training loop reads."""
        return [USER_IDX, ITEM_IDX, LABEL, *self.features]

    @abstractmethod
    def _loss(self, net: nn.Module, batch: Batch, cfg: TrainConfig) -> torch.Tensor:
        """The mean training loss of one batch, from exactly one forward pass of ``net``."""

    # -- training -----------------------------------------------------------------------------------

    def fit(
        self,
        train_dir: str | os.PathLike,
        val_dir: str | os.PathLike | None,
        cfg: TrainConfig,
        *,
        device: torch.device | None = None,
        progress: Progress | None = None,
        checkpoint_path: str | os.PathLike | None = None,
        distributed: bool = False,
    ) -> History:
        """Train for ``cfg.epochs`` epochs (fewer when validation NDCG stops improving) and keep the best epoch.

        ``distributed``: torch.distributed is initialised by the caller; each process reads a disjoint
        share of the row groups and gradients are averaged (DDP, uneven shares handled by ``join``).
        """
        device = device or torch.device("cpu")
        rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
        self.features, n_rows = shard_schema(train_dir)
        if n_rows == 0:
            raise ModelError(f"no training rows in {train_dir}")
        if val_dir is not None:
            val_features, val_rows = shard_schema(val_dir)
            if val_features != self.features:
                raise ModelError(f"validation features {val_features} differ from training features {self.features}")
            if val_rows == 0:
                log.warning("no validation rows in %s: keeping the last epoch", val_dir)
                val_dir = None
        if not self.uses_features:
            self.features = []
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        module = self._make_module(cfg, len(self.features))
        self._prepare(train_dir, module)
        self.module = module.to(device)
        net: nn.Module = self.module
        if distributed:
            ids = [device.index] if device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(self.module, device_ids=ids)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        ckpt = os.fspath(checkpoint_path) if checkpoint_path else None
        fingerprint = self._fingerprint(cfg, n_rows)
        hist = History()
        best_state: dict[str, torch.Tensor] | None = None
        best_metric, bad_epochs, start = -math.inf, 0, 0
        state = load_checkpoint(ckpt, device) if ckpt and cfg.resume else None
        if state is not None:
            if state.get("fingerprint") == fingerprint:
                self.module.load_state_dict(state["module"])
                opt.load_state_dict(state["optimizer"])
                hist = History([EpochStats(**e) for e in state["epochs"]], state["best_epoch"])
                best_state, best_metric, bad_epochs = state["best_state"], state["best_metric"], state["bad_epochs"]
                start = len(hist.epochs)
                hist.resumed_from = start
                log.info("resuming %s from %s at epoch %d", self.name, ckpt, start + 1)
            else:
                log.warning("ignoring checkpoint %s: written for other data or settings", ckpt)

        for epoch in range(start, cfg.epochs):
            if bad_epochs >= cfg.early_stopping_patience > 0:
                hist.stopped_early = True
                break
            # Seeded per epoch, so the shuffling buffer and sampled negatives do not depend on earlier epochs.
            torch.manual_seed(cfg.seed * 1000 + epoch + 1)
            if progress and rank == 0:
                progress.start_epoch(epoch, cfg.epochs, n_rows // world)
            t0 = time.perf_counter()
            loss_sum, rows = self._train_epoch(net, opt, train_dir, cfg, device, epoch, rank, world, progress)
            seconds = time.perf_counter() - t0
            train_loss = loss_sum / max(rows, 1)
            if distributed:
                tot = torch.tensor([loss_sum, rows], dtype=torch.float64, device=device)
                torch.distributed.all_reduce(tot)
                train_loss = float(tot[0] / tot[1].clamp(min=1))
            val_loss, val_ndcg = self._validate(val_dir, cfg, device) if val_dir else (None, None)
            stats = EpochStats(epoch, train_loss, val_loss, val_ndcg, rows * world / max(seconds, 1e-9), seconds)
            hist.epochs.append(stats)
            metric = val_ndcg if val_ndcg is not None and not math.isnan(val_ndcg) else -(val_loss or 0.0)
            if val_dir is None or metric > best_metric:
                best_metric, bad_epochs, hist.best_epoch = metric, 0, epoch
                best_state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
            else:
                bad_epochs += 1
            if progress and rank == 0:
                progress.end_epoch(stats)
            if ckpt and rank == 0:
                self._write_checkpoint(ckpt, fingerprint, opt, hist, best_state, best_metric, bad_epochs)
        if best_state is not None:
            self.module.load_state_dict(best_state)
        self.history = hist
        return hist

    def _train_epoch(self, net: nn.Module, opt: torch.optim.Optimizer, train_dir: str | os.PathLike,
                     cfg: TrainConfig, device: torch.device, epoch: int, rank: int, world: int,
                     progress: Progress | None) -> tuple[float, int]:
        net.train()
        loss_sum, rows = 0.0, 0
        join = net.join() if isinstance(net, nn.parallel.DistributedDataParallel) else nullcontext()
        shard = {"cur_shard": rank, "shard_count": world} if world > 1 else {}
        with open_batches(train_dir, cfg.batch_size, shuffle=cfg.shuffle_rows, seed=cfg.seed + epoch,
                          workers=cfg.reader_workers, columns=self._train_columns(), shuffle_buffer=cfg.shuffle_buffer,
                          **shard) as batches, join:
            for batch in batches:
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                n = int(batch[LABEL].shape[0])
                with autocast(device, cfg.mixed_precision):
                    loss = self._loss(net, batch, cfg)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                value = float(loss.detach())
                loss_sum += value * n
                rows += n
                if progress and rank == 0:
                    progress.batch(n, value)
        return loss_sum, rows

    @torch.no_grad()
    def _validate(self, val_dir: str | os.PathLike, cfg: TrainConfig, device: torch.device) -> tuple[float, float]:
        """Pointwise BCE of the logits against the labels, and NDCG@k ranking each user's rows by score."""
        assert self.module is not None
        self.module.eval()
        users, labels, scores = [], [], []
        loss_sum, rows = 0.0, 0
        with open_batches(val_dir, cfg.batch_size, shuffle=False, seed=cfg.seed, workers=cfg.reader_workers,
                          columns=[USER_IDX, ITEM_IDX, LABEL, *self.features]) as batches:
            for batch in batches:
                batch = {k: v.to(device) for k, v in batch.items()}
                logits = self.module(batch[USER_IDX], batch[ITEM_IDX], self._stack(batch)).float()
                loss_sum += float(F.binary_cross_entropy_with_logits(logits, batch[LABEL], reduction="sum"))
                rows += logits.shape[0]
                users.append(batch[USER_IDX].cpu().numpy())
                labels.append(batch[LABEL].cpu().numpy())
                scores.append(logits.cpu().numpy())
        if rows == 0:
            return float("nan"), float("nan")
        ndcg = ndcg_at_k(np.concatenate(users), np.concatenate(labels), np.concatenate(scores), cfg.early_stopping_k)
        return loss_sum / rows, ndcg

    def _stack(self, batch: Batch) -> torch.Tensor:
        """The feature columns of a batch as one ``(rows, n_features)`` float tensor."""
        n = batch[USER_IDX].shape[0]
        if not self.features:
            return torch.empty((n, 0), dtype=torch.float32, device=batch[USER_IDX].device)
        return torch.stack([batch[f].float() for f in self.features], dim=1)

    def _fingerprint(self, cfg: TrainConfig, n_rows: int) -> str:
        c = dataclasses.asdict(cfg)
        return json.dumps({"cfg": {k: c[k] for k in _RESUME_KEYS}, "features": self.features, "rows": n_rows,
                           "n_users": self.n_users, "n_items": self.n_items}, sort_keys=True)

    def _write_checkpoint(self, ckpt: str, fingerprint: str, opt: torch.optim.Optimizer, hist: History,
                          best_state: dict[str, torch.Tensor] | None, best_metric: float, bad_epochs: int) -> None:
        assert self.module is not None
        state = {"fingerprint": fingerprint, "module": self.module.state_dict(), "optimizer": opt.state_dict(),
                 "epochs": [dataclasses.asdict(e) for e in hist.epochs], "best_epoch": hist.best_epoch,
                 "best_state": best_state, "best_metric": best_metric, "bad_epochs": bad_epochs}
        save_checkpoint(state, ckpt)

    # -- scoring and serialisation ------------------------------------------------------------------

    @torch.no_grad()
    def score_frame(self, pdf: pd.DataFrame) -> np.ndarray:
        """Scores (logits) for each row, in chunks of ``cfg.batch_size`` on the module's device."""
        if self.module is None or self.cfg is None:
            raise ModelError(f"{self.name} is not trained")
        missing = [c for c in (USER_IDX, ITEM_IDX, *self.features) if c not in pdf.columns]
        if missing:
            needs = ", ".join([USER_IDX, ITEM_IDX, *self.features])
            raise ModelError(f"score_frame: missing column {missing[0]!r} (needs {needs})")
        self.module.eval()
        device = next(self.module.parameters()).device
        users = torch.as_tensor(pdf[USER_IDX].to_numpy(dtype=np.int64))
        items = torch.as_tensor(pdf[ITEM_IDX].to_numpy(dtype=np.int64))
        if self.features:
            x = torch.as_tensor(pdf[self.features].to_numpy(dtype=np.float32))
        else:
            x = torch.empty((len(pdf), 0))
        out = np.empty(len(pdf), dtype=np.float32)
        step = self.cfg.batch_size
        for s in range(0, len(pdf), step):
            logits = self.module(users[s:s + step].to(device), items[s:s + step].to(device), x[s:s + step].to(device))
            out[s:s + step] = logits.float().cpu().numpy()
        return out

    def to_bytes(self) -> bytes:
        if self.module is None or self.cfg is None:
            raise ModelError(f"{self.name} is not trained")
        payload = {
            "format": FORMAT_VERSION,
            "model": self.name,
            "config": dataclasses.asdict(self.cfg),
            "features": list(self.features),
            "n_users": self.n_users,
            "n_items": self.n_items,
            "state_dict": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
        }
        buf = io.BytesIO()
        torch.save(payload, buf)
        return buf.getvalue()

    @classmethod
    def _from_payload(cls, payload: dict[str, Any]) -> TorchRanker:
        ranker = cls(payload["n_users"], payload["n_items"])
        try:
            ranker.cfg = TrainConfig(**payload["config"])
        except TypeError as e:
            raise ModelError(f"model config does not match this reelrank's TrainConfig: {e}") from e
        ranker.features = list(payload["features"])
        ranker.module = ranker._make_module(ranker.cfg, len(ranker.features))
        ranker.module.load_state_dict(payload["state_dict"])
        ranker.module.eval()
        return ranker

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "format": FORMAT_VERSION,
            "config": dataclasses.asdict(self.cfg) if self.cfg else None,
            "features": self.features,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "best_epoch": self.history.best_epoch,
            "epochs": [dataclasses.asdict(e) for e in self.history.epochs],
            "torch": torch.__version__,
        }


# -- MLP over features and id embeddings --------------------------------------------------------------


class _MLPNet(nn.Module):
    """Standardised features ++ user embedding ++ item embedding -> ReLU MLP -> 1 logit, plus a linear (wide)
    path from the standardised features (Wide & Deep, Cheng et al. 2016)."""

    mean: torch.Tensor  # buffers registered in __init__ (nn.Module's __getattr__ types them Tensor | Module)
    std: torch.Tensor

    def __init__(self, n_users: int, n_items: int, n_features: int, dim: int, hidden: list[int],
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.user = nn.Embedding(n_users + 1, dim)  # last row: unknown user
        self.item = nn.Embedding(n_items + 1, dim)
        nn.init.normal_(self.user.weight, std=0.05)
        nn.init.normal_(self.item.weight, std=0.05)
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.mlp = _mlp([2 * dim + n_features, *hidden], dropout)
        self.out = nn.Linear(([2 * dim + n_features, *hidden])[-1], 1)
        self.wide = nn.Linear(n_features, 1, bias=False)

    def forward(self, user: torch.Tensor, item: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        z = torch.nan_to_num((x - self.mean) / self.std, nan=0.0, posinf=0.0, neginf=0.0)
        h = torch.cat([self.user(_known(user, self.n_users)), self.item(_known(item, self.n_items)), z], dim=1)
        return (self.out(self.mlp(h)) + self.wide(z)).squeeze(1)


class MLPRanker(TorchRanker):
    """Feature standardisation (train mean/std, saved with the model) + id embeddings -> MLP, pointwise BCE."""

    name = "mlp"

    def _make_module(self, cfg: TrainConfig, n_features: int) -> nn.Module:
        if cfg.loss != "bce":
            raise ModelError(f"model 'mlp' trains with loss 'bce' only, got train.loss = {cfg.loss!r}")
        return _MLPNet(self.n_users, self.n_items, n_features, cfg.embedding_dim, list(cfg.hidden), cfg.dropout)

    def _prepare(self, train_dir: str | os.PathLike, module: nn.Module) -> None:
        assert isinstance(module, _MLPNet)  # the network _make_module built
        mean, std = feature_moments(train_dir, self.features)
        module.mean.copy_(torch.from_numpy(mean))
        module.std.copy_(torch.from_numpy(std))

    def _loss(self, net: nn.Module, batch: Batch, cfg: TrainConfig) -> torch.Tensor:
        logits = net(batch[USER_IDX], batch[ITEM_IDX], self._stack(batch)).float()
        return F.binary_cross_entropy_with_logits(logits, batch[LABEL])


# -- NeuMF: GMF + MLP over ids ------------------------------------------------------------------------


class _NeuMFNet(nn.Module):
    """He et al. 2017: a GMF branch (element-wise product of embeddings) and an MLP branch over concatenated
    embeddings, fused by one linear layer into a logit. Features are ignored."""

    def __init__(self, n_users: int, n_items: int, dim: int, hidden: list[int]) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.gmf_user = nn.Embedding(n_users + 1, dim)
        self.gmf_item = nn.Embedding(n_items + 1, dim)
        self.mlp_user = nn.Embedding(n_users + 1, dim)
        self.mlp_item = nn.Embedding(n_items + 1, dim)
        for emb in (self.gmf_user, self.gmf_item, self.mlp_user, self.mlp_item):
            nn.init.normal_(emb.weight, std=0.05)
        self.mlp = _mlp([2 * dim, *hidden])
        self.out = nn.Linear(dim + ([2 * dim, *hidden])[-1], 1)

    def forward(self, user: torch.Tensor, item: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        u, i = _known(user, self.n_users), _known(item, self.n_items)
        gmf = self.gmf_user(u) * self.gmf_item(i)
        mlp = self.mlp(torch.cat([self.mlp_user(u), self.mlp_item(i)], dim=1))
        return self.out(torch.cat([gmf, mlp], dim=1)).squeeze(1)


class NeuMFRanker(TorchRanker):
    """NeuMF over ids, trained on positive rows (label > 0.5) with ``num_negatives`` uniformly sampled items each;
    ``bce`` labels them 1/0, ``bpr`` maximises log sigmoid(positive - negative)."""

    name = "neumf"
    uses_features = False

    def _make_module(self, cfg: TrainConfig, n_features: int) -> nn.Module:
        if cfg.loss not in ("bce", "bpr"):
            raise ModelError(f"train.loss must be 'bce' or 'bpr', got {cfg.loss!r}")
        if cfg.num_negatives < 1:
            raise ModelError(f"train.num_negatives must be >= 1 for neumf, got {cfg.num_negatives}")
        return _NeuMFNet(self.n_users, self.n_items, cfg.embedding_dim, list(cfg.hidden))

    def _loss(self, net: nn.Module, batch: Batch, cfg: TrainConfig) -> torch.Tensor:
        pos = batch[LABEL] > 0.5
        users, items = batch[USER_IDX][pos].long(), batch[ITEM_IDX][pos].long()
        p, k = users.shape[0], cfg.num_negatives
        neg_items = torch.randint(0, self.n_items, (p * k,)).to(items.device)
        all_users = torch.cat([users, users.repeat_interleave(k)])
        all_items = torch.cat([items, neg_items])
        empty = torch.empty((all_users.shape[0], 0), device=items.device)
        logits = net(all_users, all_items, empty).float()  # one forward pass, as DDP expects
        if p == 0:
            return logits.sum() * 0.0
        pos_logit, neg_logit = logits[:p], logits[p:]
        if cfg.loss == "bpr":
            return -F.logsigmoid(pos_logit.repeat_interleave(k) - neg_logit).mean()
        target = torch.cat([torch.ones_like(pos_logit), torch.zeros_like(neg_logit)])
        return F.binary_cross_entropy_with_logits(logits, target)


RANKERS: dict[str, type[TorchRanker]] = {MLPRanker.name: MLPRanker, NeuMFRanker.name: NeuMFRanker}
