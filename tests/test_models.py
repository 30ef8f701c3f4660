"""One conformance suite every Ranker passes, plus model-specific checks (MLP statistics, NeuMF resume, BPR)."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from reelrank import models, ranking_metrics
from reelrank.columns import ITEM_IDX, LABEL, USER_IDX
from reelrank.config import TrainConfig
from reelrank.errors import CorruptFile
from reelrank.loader import write_shards
from reelrank.models import RANKERS, ModelError, make_ranker

N_USERS, N_ITEMS = 60, 40
FEATURES = ["f_als_score", "f_item_pop", "f_user_mean"]


def learnable_frame(rows: int, seed: int) -> pd.DataFrame:
    """Labels from a fixed rule over features and per-user/per-item effects (so both model kinds can learn it)."""
    rng = np.random.default_rng(seed)
    rule = np.random.default_rng(99)
    taste = rule.standard_normal((N_USERS, 2))
    item_vec = rule.standard_normal((N_ITEMS, 2))
    u = rng.integers(0, N_USERS, rows)
    i = rng.integers(0, N_ITEMS, rows)
    x = rng.standard_normal((rows, len(FEATURES))) * [1.0, 50.0, 0.2] + [0.0, 500.0, 3.0]
    z = 1.5 * (taste[u] * item_vec[i]).sum(axis=1) + x[:, 0] + 0.3 * rng.standard_normal(rows)
    pdf = pd.DataFrame({USER_IDX: u.astype(np.int32), ITEM_IDX: i.astype(np.int32),
                        LABEL: (z > 0.5).astype(np.float32)})
    for k, name in enumerate(FEATURES):
        pdf[name] = x[:, k].astype(np.float32)
    return pdf


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("model-shards")
    return {
        "train": write_shards(learnable_frame(3000, 0), root / "train", files=3, row_group_rows=400),
        "val": write_shards(learnable_frame(600, 1), root / "val", files=2, row_group_rows=200),
    }


def tcfg(cfg, model: str, **over) -> TrainConfig:
    base = {"model": model, "epochs": 3, "batch_size": 128, "learning_rate": 0.03, "hidden": [16, 8],
            "embedding_dim": 8, "reader_workers": 1, "shuffle_buffer": 500, "device": "cpu",
            "early_stopping_patience": 0}
    return cfg.replace(train=base | over).train


@pytest.fixture(scope="module", params=sorted(RANKERS))
def fitted(request, cfg, shards):
    """Each ranker fitted once on the tiny shards; the conformance tests below share it."""
    c = tcfg(cfg, request.param)
    ranker = make_ranker(c, N_USERS, N_ITEMS)
    hist = ranker.fit(shards["train"], shards["val"], c)
    return ranker, hist, c


def ndcg_at_k(users: pd.Series, labels: pd.Series, scores: np.ndarray, k: int) -> float:
    """Mean validation NDCG@k as the rankers compute it."""
    return ranking_metrics.mean(ranking_metrics.ndcg_of_scores(users.to_numpy(), labels.to_numpy(), scores, k))


def score_input(rows: int = 200) -> pd.DataFrame:
    return learnable_frame(rows, 7)


# -- the conformance suite ---------------------------------------------------------------------------------


def test_training_loss_decreases(fitted):
    _, hist, c = fitted
    losses = [e.train_loss for e in hist.epochs]
    assert len(losses) == c.epochs
    assert losses[-1] < 0.9 * losses[0], losses
    assert all(e.val_loss is not None and math.isfinite(e.val_ndcg) for e in hist.epochs)


def test_ranks_validation_better_than_chance(fitted, shards):
    ranker, hist, _ = fitted
    val = learnable_frame(600, 1)
    shuffled = ndcg_at_k(val[USER_IDX], val[LABEL], np.random.default_rng(0).random(len(val)), 10)
    assert hist.epochs[hist.best_epoch].val_ndcg > shuffled + 0.05
    # The reported NDCG is the kept model's, recomputed from score_frame.
    assert ndcg_at_k(val[USER_IDX], val[LABEL], ranker.score_frame(val), 10) == pytest.approx(
        hist.epochs[hist.best_epoch].val_ndcg, abs=1e-5)


def test_save_load_gives_identical_scores(fitted, tmp_path):
    ranker, _, c = fitted
    path = ranker.save(tmp_path / "m" / "model.pt")
    loaded = models.load(path)
    pdf = score_input()
    assert type(loaded) is type(ranker)
    assert np.array_equal(loaded.score_frame(pdf), ranker.score_frame(pdf))
    assert path == str(tmp_path / "m" / "model.pt")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "model.pt"]
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["model"] == ranker.name and meta["config"] == dataclasses.asdict(c)
    assert meta["n_users"] == N_USERS and meta["n_items"] == N_ITEMS


def test_bytes_round_trip_gives_identical_scores(fitted):
    ranker, _, _ = fitted
    data = ranker.to_bytes()
    again = models.from_bytes(data)
    pdf = score_input()
    scores = again.score_frame(pdf)
    assert scores.dtype == np.float32 and scores.shape == (len(pdf),)
    assert np.array_equal(scores, ranker.score_frame(pdf))
    assert np.array_equal(again.score_frame(pdf.iloc[::-1]), scores[::-1])  # row-wise, order-independent


def test_unknown_users_and_items_score(fitted):
    ranker, _, _ = fitted
    pdf = score_input(4)
    pdf[USER_IDX] = np.array([N_USERS, N_USERS + 500, 3, 3], dtype=np.int32)
    pdf[ITEM_IDX] = np.array([2, 2, N_ITEMS, N_ITEMS + 9], dtype=np.int32)
    pdf[FEATURES] = pdf[FEATURES].iloc[[0, 0, 0, 0]].to_numpy()
    s = ranker.score_frame(pdf)
    assert np.isfinite(s).all()
    assert s[0] == s[1] and s[2] == s[3]  # every unseen id shares the one "unknown" row


def test_missing_column_is_named(fitted):
    ranker, _, _ = fitted
    pdf = score_input()
    with pytest.raises(ModelError, match=ITEM_IDX):
        ranker.score_frame(pdf.drop(columns=[ITEM_IDX]))
    if ranker.features:
        with pytest.raises(ModelError, match="f_item_pop"):
            ranker.score_frame(pdf.drop(columns=["f_item_pop"]))
    else:  # id-only models score frames without features
        assert np.array_equal(ranker.score_frame(pdf[[USER_IDX, ITEM_IDX]]), ranker.score_frame(pdf))


def test_deterministic_with_a_seed(fitted, shards):
    ranker, _, c = fitted
    again = make_ranker(c, N_USERS, N_ITEMS)
    torch.manual_seed(12345)  # the global RNG state before fit must not matter
    again.fit(shards["train"], shards["val"], c)
    pdf = score_input()
    assert np.array_equal(again.score_frame(pdf), ranker.score_frame(pdf))

    other = make_ranker(dataclasses.replace(c, seed=c.seed + 1, epochs=1), N_USERS, N_ITEMS)
    other.fit(shards["train"], None, dataclasses.replace(c, seed=c.seed + 1, epochs=1))
    assert not np.array_equal(other.score_frame(pdf), ranker.score_frame(pdf))


# -- shared pieces ---------------------------------------------------------------------------------------


def test_unknown_model_and_bad_payload(cfg):
    unchecked = copy.copy(cfg.train)  # the config re-checks dataclasses.replace, so step past it
    object.__setattr__(unchecked, "model", "nope")
    with pytest.raises(ModelError, match="train.model"):
        make_ranker(unchecked, 3, 3)
    with pytest.raises(CorruptFile, match="model file model bytes is truncated or corrupt"):
        models.from_bytes(b"not a model")
    buf = io.BytesIO()
    torch.save({"format": 999}, buf)
    with pytest.raises(CorruptFile, match="format 999"):
        models.from_bytes(buf.getvalue())


# -- model-specific --------------------------------------------------------------------------------------


def test_mlp_standardises_with_train_statistics(fitted, shards):
    ranker, _, _ = fitted
    if ranker.name != "mlp":
        pytest.skip("MLP only")
    x = learnable_frame(3000, 0)[FEATURES].to_numpy(dtype=np.float64)
    np.testing.assert_allclose(ranker.module.mean.numpy(), x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(ranker.module.std.numpy(), x.std(axis=0), rtol=1e-4)


def test_mlp_without_id_embeddings_learns_from_features_and_reloads(cfg, shards):
    """embedding_dim 0 (the nightly's default): the features alone rank, and the model round-trips."""
    c = tcfg(cfg, "mlp", embedding_dim=0)
    ranker = make_ranker(c, N_USERS, N_ITEMS)
    hist = ranker.fit(shards["train"], shards["val"], c)
    val = learnable_frame(600, 1)
    shuffled = ndcg_at_k(val[USER_IDX], val[LABEL], np.random.default_rng(0).random(len(val)), 10)
    assert hist.epochs[hist.best_epoch].val_ndcg > shuffled + 0.05
    again = models.from_bytes(ranker.to_bytes())
    assert np.array_equal(again.score_frame(score_input()), ranker.score_frame(score_input()))


def test_mlp_rejects_pairwise_loss(cfg, shards):
    c = tcfg(cfg, "mlp", loss="bpr")
    with pytest.raises(ModelError, match="bce"):
        make_ranker(c, N_USERS, N_ITEMS).fit(shards["train"], None, c)


def test_neumf_bpr_learns(cfg, shards):
    c = tcfg(cfg, "neumf", loss="bpr", epochs=3)
    hist = make_ranker(c, N_USERS, N_ITEMS).fit(shards["train"], shards["val"], c)
    losses = [e.train_loss for e in hist.epochs]
    assert losses[-1] < 0.9 * losses[0], losses


def test_resume_from_checkpoint_equals_uninterrupted_run(cfg, shards, tmp_path):
    c4 = tcfg(cfg, "neumf", epochs=4)
    straight = make_ranker(c4, N_USERS, N_ITEMS)
    straight.fit(shards["train"], shards["val"], c4)

    ckpt = tmp_path / "model.pt.ckpt"
    c2 = dataclasses.replace(c4, epochs=2)
    make_ranker(c2, N_USERS, N_ITEMS).fit(shards["train"], shards["val"], c2, checkpoint_path=ckpt)
    assert ckpt.exists()
    resumed = make_ranker(c4, N_USERS, N_ITEMS)
    hist = resumed.fit(shards["train"], shards["val"], dataclasses.replace(c4, resume=True), checkpoint_path=ckpt)
    assert hist.resumed_from == 2 and len(hist.epochs) == 4
    pdf = score_input()
    assert np.array_equal(resumed.score_frame(pdf), straight.score_frame(pdf))
    assert [e.train_loss for e in hist.epochs] == [e.train_loss for e in straight.history.epochs]


def test_checkpoint_from_other_settings_is_ignored(cfg, shards, tmp_path):
    ckpt = tmp_path / "model.pt.ckpt"
    c = tcfg(cfg, "neumf", epochs=1)
    make_ranker(c, N_USERS, N_ITEMS).fit(shards["train"], None, c, checkpoint_path=ckpt)
    other = dataclasses.replace(c, embedding_dim=4, resume=True)
    hist = make_ranker(other, N_USERS, N_ITEMS).fit(shards["train"], None, other, checkpoint_path=ckpt)
    assert hist.resumed_from is None and len(hist.epochs) == 1


def test_early_stopping_keeps_the_best_epoch(cfg, shards, tmp_path):
    # Validation labels that are pure noise: NDCG wanders, so patience 1 stops the run early.
    noise = learnable_frame(600, 1)
    noise[LABEL] = (np.random.default_rng(5).random(len(noise)) < 0.3).astype(np.float32)
    val = write_shards(noise, tmp_path / "noise_val", files=1, row_group_rows=200)
    c = tcfg(cfg, "neumf", epochs=8, early_stopping_patience=1)
    ranker = make_ranker(c, N_USERS, N_ITEMS)
    hist = ranker.fit(shards["train"], val, c)
    ndcgs = [e.val_ndcg for e in hist.epochs]
    assert hist.stopped_early and len(ndcgs) < 8
    assert hist.best_epoch == int(np.argmax(ndcgs)) and hist.best_epoch == len(ndcgs) - 2
    kept = ndcg_at_k(noise[USER_IDX], noise[LABEL], ranker.score_frame(noise), 10)
    assert kept == pytest.approx(max(ndcgs), abs=1e-5)


def test_validation_shards_must_have_the_training_features(cfg, shards, tmp_path):
    pdf = learnable_frame(50, 2).drop(columns=["f_user_mean"])
    val = write_shards(pdf, tmp_path / "val", files=1, row_group_rows=50)
    c = tcfg(cfg, "mlp")
    with pytest.raises(ModelError, match="validation features"):
        make_ranker(c, N_USERS, N_ITEMS).fit(shards["train"], val, c)
