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

Both train through :func:`reelrank.training.fit` (AdamW, per-epoch seeding, so resuming from a checkpoint gives
the same model as an uninterrupted run, validation loss and NDCG@k per epoch, early stopping that keeps the best
epoch, an optional checkpoint after every epoch); a ranker gives it the batches, the loss and the validation.
The interface, the torch base and both rankers share this module (about 450 lines): a change to the payload or to
what the loop is given touches all of them.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import logging
import os
import posixpath
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from reelrank import ranking_metrics, training
from reelrank.columns import ITEM_IDX, LABEL, USER_IDX
from reelrank.config import TrainConfig
from reelrank.errors import CorruptFile
from reelrank.loader import Batch, feature_moments, open_batches, shard_schema
from reelrank.training import EpochStats as EpochStats  # re-exported: candidates.py imports it from here
from reelrank.training import History, Progress, read_torch
from reelrank.training import load_checkpoint as load_checkpoint  # re-exported: tests/test_errors.py
from reelrank.warehouse import storage

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Bumped when the serialised payload changes incompatibly."""

# Settings a checkpoint must share with the current run to be resumed (the rest may change between runs).
_RESUME_KEYS = ("model", "batch_size", "learning_rate", "hidden", "embedding_dim", "shuffle_rows", "seed",
                "shuffle_buffer", "loss", "num_negatives", "early_stopping_k")


class ModelError(ValueError):
    """A model cannot be built, trained or loaded as asked (unknown name, bad payload, missing column)."""


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
    def make_module(self, cfg: TrainConfig, n_features: int) -> nn.Module:
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
        module = self.make_module(cfg, len(self.features))
        self._prepare(train_dir, module)
        self.module = module

        @contextmanager
        def batches(epoch: int) -> Iterator[Iterator[Batch]]:
            shard = {"cur_shard": rank, "shard_count": world} if world > 1 else {}
            with open_batches(train_dir, cfg.batch_size, shuffle=cfg.shuffle_rows, seed=cfg.seed + epoch,
                              workers=cfg.reader_workers, columns=self._train_columns(),
                              shuffle_buffer=cfg.shuffle_buffer, **shard) as rows:
                yield ({k: v.to(device, non_blocking=True) for k, v in batch.items()} for batch in rows)

        def loss(net: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
            return self._loss(net, batch, cfg), int(batch[LABEL].shape[0])

        valid = val_dir
        task = training.Task(
            self.name, module, batches, loss,
            validate=(lambda: self._validate(valid, cfg, device)) if valid is not None else None,
            fingerprint=lambda: self._fingerprint(cfg, n_rows), rows_per_epoch=n_rows // world, uneven_inputs=True)
        loop = training.LoopConfig(cfg.epochs, cfg.learning_rate, cfg.weight_decay, cfg.seed,
                                   patience=cfg.early_stopping_patience, mixed_precision=cfg.mixed_precision,
                                   reseed_each_epoch=True, resume=cfg.resume)
        self.history = training.fit(task, loop, device, progress=progress, checkpoint_path=checkpoint_path,
                                    distributed=distributed)
        return self.history

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
        ndcg = ranking_metrics.ndcg_of_scores(np.concatenate(users), np.concatenate(labels), np.concatenate(scores),
                                              cfg.early_stopping_k)
        return loss_sum / rows, ranking_metrics.mean(ndcg)

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
        ranker.module = ranker.make_module(ranker.cfg, len(ranker.features))
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


class MLPNet(nn.Module):
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

    def make_module(self, cfg: TrainConfig, n_features: int) -> nn.Module:
        if cfg.loss != "bce":
            raise ModelError(f"model 'mlp' trains with loss 'bce' only, got train.loss = {cfg.loss!r}")
        return MLPNet(self.n_users, self.n_items, n_features, cfg.embedding_dim, list(cfg.hidden), cfg.dropout)

    def _prepare(self, train_dir: str | os.PathLike, module: nn.Module) -> None:
        assert isinstance(module, MLPNet)  # the network make_module built
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

    def make_module(self, cfg: TrainConfig, n_features: int) -> nn.Module:
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
