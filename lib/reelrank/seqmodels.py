"""Next-item models over each user's time-ordered items: SASRec and a GRU variant, trained in torch.

* :class:`SASRecNet`: causal self-attention over the last L items (Kang & McAuley, "Self-Attentive Sequential
  Recommendation", ICDM 2018), pre-LayerNorm blocks, trained with cross-entropy over the whole catalogue at every
  position ("SASRec+", Klenitskiy & Vasilev, "Turning Dross Into Gold Loss: is BERT4Rec really better than
  SASRec?", RecSys 2023), which beats the original binary cross-entropy by a wide margin on next-item protocols.
* :class:`GRUNet`: a GRU over the same sequences (GRU4Rec, Hidasi et al., ICLR 2016), same head and loss
  (cross-entropy, as in Hidasi & Czapp, "The effect of third party implementations on reproducibility",
  RecSys 2023).

Above ``full_softmax_max_items`` the loss samples ``negatives`` items shared by the batch (sampled softmax;
Petrov & Macdonald's gSASRec, RecSys 2023, shows what is lost). Items are tokens ``item_idx + 1``; 0 pads on the
left, so the last position is always the latest item. This module knows nothing of Spark: it trains on a padded
``int64`` matrix (read from the sequence shards by :mod:`reelrank.sequences`) and scores one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from reelrank import ranking_metrics, training
from reelrank.config import SequenceConfig
from reelrank.device import autocast
from reelrank.errors import CorruptFile
from reelrank.training import EpochStats, History, read_torch

log = logging.getLogger(__name__)

PAD = 0
"""The padding token; item ``i`` is token ``i + 1``."""
VALIDATE_CELLS = 1 << 25
"""Users × items scores held at once in :meth:`SequenceModel.validate` (128 MB of float32)."""

_RUN_LENGTH_KEYS = ("epochs", "max_positions", "patience", "refit_epochs", "refit_max_positions")
"""Settings that only say how long to train: a checkpoint written under other values still resumes."""
_PAYLOAD_KEYS = {"kind", "n_items", "config", "state", "history"}
SEQUENCE_REMEDY = "rerun the candidates stage"


class SASRecNet(nn.Module):
    """Item + position embeddings, ``blocks`` pre-LN causal self-attention blocks, a final LayerNorm."""

    padding_free = True
    """Left padding changes no output (masked keys, positions counted from the latest item): scoring may cut it."""

    def __init__(self, n_items: int, cfg: SequenceConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.items = nn.Embedding(n_items + 1, d, padding_idx=PAD)
        self.positions = nn.Embedding(cfg.max_len, d)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(_Block(d, cfg.heads, cfg.dropout) for _ in range(cfg.blocks))
        self.norm = nn.LayerNorm(d)
        self.heads = cfg.heads
        nn.init.normal_(self.items.weight, std=d**-0.5)
        nn.init.normal_(self.positions.weight, std=d**-0.5)
        with torch.no_grad():
            self.items.weight[PAD].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """``seq`` [B, L] tokens → hidden states [B, L, d]; position t sees items up to t only."""
        length = seq.shape[1]
        # positions count back from the latest item, so trimming or padding on the left changes nothing (with
        # SASRec's fixed left-padded window this is the same embedding of absolute positions)
        pos = torch.arange(length - 1, -1, -1, device=seq.device)
        x = self.items(seq) * math.sqrt(self.items.embedding_dim) + self.positions(pos)[None]
        x = self.drop(x) * (seq != PAD).unsqueeze(-1)
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
        # a query may attend to earlier non-padding keys, and always to itself (no fully masked row, no NaN)
        allowed = (causal[None] & (seq != PAD)[:, None, :]) | torch.eye(length, dtype=torch.bool,
                                                                        device=seq.device)[None]
        for block in self.blocks:
            x = block(x, allowed[:, None])
        return self.norm(x)


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Dropout(dropout), nn.Linear(d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                             dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.out(att.transpose(1, 2).reshape(b, length, d)))
        return x + self.drop(self.ff(self.ln2(x)))


class GRUNet(nn.Module):
    """Item embeddings → ``blocks`` GRU layers → LayerNorm (GRU4Rec's recurrent encoder)."""

    padding_free = False
    """The padding tokens run through the GRU too, so scoring keeps the full ``max_len`` window."""

    def __init__(self, n_items: int, cfg: SequenceConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.items = nn.Embedding(n_items + 1, d, padding_idx=PAD)
        self.drop = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(d, d, num_layers=cfg.blocks, batch_first=True,
                          dropout=cfg.dropout if cfg.blocks > 1 else 0.0)
        self.norm = nn.LayerNorm(d)
        nn.init.normal_(self.items.weight, std=d**-0.5)
        with torch.no_grad():
            self.items.weight[PAD].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.drop(self.items(seq)))
        return self.norm(self.drop(out))


NETS: dict[str, Callable[[int, SequenceConfig], nn.Module]] = {"sasrec": SASRecNet, "gru4rec": GRUNet}
"""Every sequence encoder by name (the candidate source's name)."""


@dataclass
class SeqHistory(History):
    """A fit's :class:`~reelrank.training.History` and the validation NDCG@k of the epoch it kept."""

    best_ndcg: float = -1.0
    """-1 when no epoch was validated."""


class _EpochCallback:
    """The training loop's :class:`~reelrank.training.Progress` that hands each epoch's statistics to a function."""

    def __init__(self, end_epoch: Callable[[EpochStats], None]) -> None:
        self.end_epoch = end_epoch

    def start_epoch(self, epoch: int, epochs: int, total_rows: int) -> None:
        pass

    def batch(self, rows: int, loss: float) -> None:
        pass


class SequenceModel:
    """A trained encoder plus what scoring needs: its kind, item count and settings."""

    def __init__(self, kind: str, n_items: int, cfg: SequenceConfig) -> None:
        if kind not in NETS:
            raise ValueError(f"unknown sequence model {kind!r}; known: {', '.join(NETS)}")
        self.kind, self.n_items, self.cfg = kind, n_items, cfg
        torch.manual_seed(cfg.seed)  # the initial weights, so a seed fixes the whole fit
        self.net = NETS[kind](n_items, cfg)
        self.item_embedding: nn.Embedding = self.net.items  # type: ignore[assignment]
        self.history = SeqHistory()

    def grown_to(self, n_items: int) -> SequenceModel:
        """A copy for a catalogue of ``n_items >= self.n_items`` items: the same weights, new items' embeddings
        initialised as a fresh model's (items keep their index from night to night)."""
        grown = SequenceModel(self.kind, n_items, self.cfg)
        state = grown.net.state_dict()
        for key, value in self.net.state_dict().items():
            if state[key].shape == value.shape:
                state[key] = value.clone()
            else:
                state[key][: value.shape[0]] = value
        grown.net.load_state_dict(state)
        return grown

    # -- scoring -------------------------------------------------------------------------------------
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every item (not the padding token) for hidden states [..., d]."""
        return hidden @ self.item_embedding.weight[1:].T

    def score_last(self, seq: torch.Tensor, device: torch.device | None = None, batch: int = 256) -> torch.Tensor:
        """Every item's score after each sequence's latest item: [B, n_items] float32 on the CPU."""
        return self._at_latest_item(seq, device, batch, self.logits, self.n_items)

    def last_hidden(self, seq: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """Each sequence's hidden state after its latest item: [B, d] float32 on the CPU (Spark scoring)."""
        return self._at_latest_item(seq, None, batch, lambda hidden: hidden, self.cfg.dim)

    @torch.no_grad()
    def _at_latest_item(self, seq: torch.Tensor, device: torch.device | None, batch: int,
                        head: Callable[[torch.Tensor], torch.Tensor], width: int) -> torch.Tensor:
        """``head`` of each sequence's hidden state after its latest item, [B, width] float32 on the CPU, in the
        latest ``max_len`` window: shortest histories first, each batch cut to its longest where the net allows
        (the same outputs, little padding)."""
        self.net.eval()
        device = device or next(self.net.parameters()).device
        seq = _fit_length(seq, self.cfg.max_len)
        order = torch.argsort((seq != PAD).sum(1), stable=True)
        out = torch.empty(len(seq), width)
        for start in range(0, len(seq), batch):
            idx = order[start:start + batch]
            part = _cut_padding(seq[idx]) if self.net.padding_free else seq[idx]
            with autocast(device, self.cfg.mixed_precision):
                out[idx] = head(self.net(part.to(device))[:, -1]).float().cpu()
        return out

    # -- training ------------------------------------------------------------------------------------
    def fit(self, seqs: torch.Tensor, device: torch.device, progress: Callable[[EpochStats], None] | None = None,
            distributed: bool = False, checkpoint_path: str | os.PathLike | None = None) -> SeqHistory:
        """Train on ``seqs`` [U, ≤L+1] (left-padded tokens): each user's last item is the validation target
        (early stopping on NDCG@k over all unseen items), the rest teach next-item prediction at every position.
        Keeps the best epoch's weights. With ``checkpoint_path``, the state after every epoch is written there and
        a fit of the same sequences and settings continues from it (in one process, to the same weights as an unbroken
        fit)."""
        cfg = self.cfg
        gen = torch.Generator().manual_seed(cfg.seed)
        # the last column is the validation target: it is never a training target
        inputs, targets = seqs[:, :-2], seqs[:, 1:-1]
        trainable = (targets != PAD).sum(1) > 0
        inputs, targets = inputs[trainable], targets[trainable]
        lengths = (targets != PAD).sum(1)
        # with length-sorted batches a batch's mean loss would weigh a short history's positions more than a long
        # one's; dividing each batch's summed loss by the average positions per batch weighs every position alike,
        # as random batches do in expectation
        per_batch = float(lengths.double().mean()) * cfg.batch_size if cfg.bucket_batches and len(lengths) else 0.0
        val_input, val_target = seqs[:, :-1], seqs[:, -1]
        val_ok = (val_target != PAD) & ((val_input != PAD).sum(1) > 0)
        val_input, val_target = val_input[val_ok], val_target[val_ok]
        rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)

        @contextmanager
        def batches(epoch: int) -> Iterator[Iterator[tuple[torch.Tensor, torch.Tensor]]]:
            # the same order on every process (same seed); each takes every world-th user of an equal share, so all
            # run the same number of steps
            order = length_batched_order(lengths, cfg.batch_size * world, cfg.bucket_batches, gen)
            yield on_device(order[rank:len(order) // world * world:world])

        def on_device(order: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for idx in order.split(cfg.batch_size):
                x, y = _trim(inputs[idx], targets[idx])
                yield x.to(device), y.to(device)

        def loss(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, int]:
            return self._loss(net(batch[0]), batch[1], gen)

        task = training.Task(
            self.kind, self.net, batches, loss, validate=lambda: (None, self.validate(val_input, val_target, device)),
            fingerprint=lambda: self._fingerprint(seqs, world), rows_per_epoch=int(lengths.sum()),
            backward_scale=(lambda n: n / per_batch) if per_batch else None, generator=gen)
        loop = training.LoopConfig(cfg.epochs, cfg.learning_rate, cfg.weight_decay, cfg.seed, patience=cfg.patience,
                                   eval_every=cfg.eval_every, max_samples=cfg.max_positions,
                                   mixed_precision=cfg.mixed_precision)
        hist = training.fit(task, loop, device, progress=_EpochCallback(progress) if progress else None,
                            checkpoint_path=checkpoint_path, distributed=distributed)
        best = hist.epochs[hist.best_epoch].val_ndcg if hist.best_epoch >= 0 else None
        self.history = SeqHistory(**vars(hist), best_ndcg=-1.0 if best is None else best)
        self.net.cpu()
        return self.history

    def _fingerprint(self, seqs: torch.Tensor, world: int) -> str:
        """What a checkpoint must share with this fit to be resumed: the sequences, the model and settings."""
        c = {k: v for k, v in dataclasses.asdict(self.cfg).items() if k not in _RUN_LENGTH_KEYS}
        digest = hashlib.sha256(seqs.contiguous().numpy().tobytes()).hexdigest()
        return json.dumps({"kind": self.kind, "n_items": self.n_items, "cfg": c, "world": world,
                           "sequences": [list(seqs.shape), digest]}, sort_keys=True)

    def _loss(self, hidden: torch.Tensor, targets: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, int]:
        """Mean cross-entropy of the next item over the non-padding positions (full or sampled softmax)."""
        keep = targets != PAD
        h, y = hidden[keep], targets[keep] - 1
        if self.n_items <= self.cfg.full_softmax_max_items:
            return F.cross_entropy(self.logits(h).float(), y), len(y)
        neg = torch.randint(0, self.n_items, (self.cfg.negatives,), generator=gen).to(h.device)
        w = self.item_embedding.weight[1:]
        pos_logit = (h * w[y]).sum(-1, keepdim=True)
        neg_logit = h @ w[neg].T
        neg_logit = neg_logit.masked_fill(neg[None, :] == y[:, None], float("-inf"))
        logits = torch.cat([pos_logit, neg_logit], 1).float()
        return F.cross_entropy(logits, torch.zeros(len(y), dtype=torch.long, device=h.device)), len(y)

    def validate(self, inputs: torch.Tensor, targets: torch.Tensor, device: torch.device, batch: int = 256) -> float:
        """Mean NDCG@k of ``targets`` (one token per user) among every item not in the user's input."""
        if len(inputs) == 0:
            return 0.0
        self.net.to(device)
        # users × items scores a chunk at a time (all at once was 8 GB at 100,000 users × 20,000 items and the
        # kernel killed the 10M night, issue 15); chunks of whole length-sorted batches, so score_last's batches
        # and outputs are the same as in one call
        order = torch.argsort((_fit_length(inputs, self.cfg.max_len) != PAD).sum(1), stable=True)
        step = max(1, VALIDATE_CELLS // max(self.n_items, 1) // batch) * batch
        rank = torch.empty(len(inputs), dtype=torch.long)
        for start in range(0, len(inputs), step):
            idx = order[start:start + step]
            scores = self.score_last(inputs[idx], device, batch)
            mask_seen(scores, inputs[idx])
            target_score = scores.gather(1, (targets[idx] - 1)[:, None])
            rank[idx] = (scores > target_score).sum(1)
        per_user = ranking_metrics.ndcg_of_target_ranks(rank.numpy(), self.cfg.early_stopping_k)
        # the mean in torch, as the models trained so far were validated (numpy's pairwise sum differs in the last bit)
        return float(torch.from_numpy(per_user).mean())

    # -- serialisation -------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save({"kind": self.kind, "n_items": self.n_items, "config": dataclasses.asdict(self.cfg),
                    "state": self.net.state_dict(), "history": dataclasses.asdict(self.history)}, buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "sequence model bytes") -> SequenceModel:
        """The model :meth:`to_bytes` wrote (tensors and plain values only); ``source`` names it in errors."""
        payload = read_torch(data, source, "sequence model", SEQUENCE_REMEDY)
        if not isinstance(payload, dict) or not _PAYLOAD_KEYS <= payload.keys():
            raise CorruptFile(source, f"sequence model {source} is not a reelrank sequence model: {SEQUENCE_REMEDY}")
        known = {f.name for f in dataclasses.fields(SequenceConfig)}  # settings since removed (a time budget) drop
        config = SequenceConfig(**{k: v for k, v in payload["config"].items() if k in known})
        model = cls(payload["kind"], payload["n_items"], config)
        model.net.load_state_dict(payload["state"])
        hist = payload["history"]
        epochs = [EpochStats(**{"val_loss": None, **e}) for e in hist["epochs"]]
        model.history = SeqHistory(epochs, hist["best_epoch"], hist["stopped_early"], hist.get("capped", False),
                                   hist.get("resumed_from"), hist["best_ndcg"])
        model.net.eval()
        return model


def mask_seen(scores: torch.Tensor, seqs: torch.Tensor) -> None:
    """Set the score of every item in each row's sequence to -inf, in place."""
    rows = torch.arange(len(seqs))[:, None].expand_as(seqs)
    real = seqs != PAD
    scores[rows[real], seqs[real] - 1] = float("-inf")


def pad_left(rows: list[np.ndarray] | np.ndarray, length: int) -> torch.Tensor:
    """Variable-length token arrays → [len(rows), length] int64, keeping each row's last ``length`` tokens."""
    out = np.zeros((len(rows), length), dtype=np.int64)
    for i, r in enumerate(rows):
        r = np.asarray(r, dtype=np.int64)[-length:]
        if len(r):
            out[i, length - len(r):] = r
    return torch.from_numpy(out)


def length_batched_order(lengths: torch.Tensor, group: int, chunk_groups: int, gen: torch.Generator) -> torch.Tensor:
    """A random order of the users in which each run of ``group`` consecutive users (one batch) comes from one
    chunk of ``chunk_groups`` batches sorted by length, batches shuffled; the usual bucketing of variable-length
    sequences. ``chunk_groups`` 0: a plain random permutation."""
    order = torch.randperm(len(lengths), generator=gen)
    if chunk_groups == 0:
        return order
    span = group * chunk_groups
    full: list[torch.Tensor] = []
    rest: list[torch.Tensor] = []
    for start in range(0, len(order), span):
        part = order[start:start + span]
        part = part[torch.argsort(lengths[part], stable=True)]
        for piece in part.split(group):
            (full if len(piece) == group else rest).append(piece)
    shuffled = [full[i] for i in torch.randperm(len(full), generator=gen).tolist()]
    return torch.cat(shuffled + rest) if shuffled or rest else order


def _fit_length(seq: torch.Tensor, length: int) -> torch.Tensor:
    """The last ``length`` columns, left-padded when shorter."""
    if seq.shape[1] >= length:
        return seq[:, -length:]
    return F.pad(seq, (length - seq.shape[1], 0), value=PAD)


def _first_used(x: torch.Tensor) -> int:
    """The first column holding a token in some row (the last column when all are padding)."""
    used = (x != PAD).any(0).nonzero()
    return int(used[0]) if len(used) else x.shape[1] - 1


def _cut_padding(x: torch.Tensor) -> torch.Tensor:
    """``x`` without the columns that are padding in every row."""
    return x[:, _first_used(x):]


def _trim(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the columns that are padding in every row of the batch (cheaper attention for short histories)."""
    first = _first_used(x)
    return x[:, first:], y[:, first:]
