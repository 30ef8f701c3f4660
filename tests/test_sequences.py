"""Sequence models: shards round-trip through Petastorm, each model learns and reloads exactly, Spark scoring agrees
with torch, and a model that can learn a deterministic next item does."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from reelrank import columns as C
from reelrank import seqmodels
from reelrank.seqmodels import NETS, PAD, SequenceModel, length_batched_order, mask_seen, pad_left
from reelrank.sequences import ITEMS, read_sequences, score_sequences, sequence_frame, write_sequence_shards

N_USERS, N_ITEMS = 60, 25


def _cycles() -> pd.DataFrame:
    """Every user walks the items in a fixed cycle (item i is followed by i+1 mod N_ITEMS) from a random start;
    pairs of interactions share a timestamp and are ordered by their file row."""
    rng = np.random.default_rng(3)
    rows = []
    for user in range(N_USERS):
        start, length = int(rng.integers(0, N_ITEMS)), int(rng.integers(8, 20))
        for step in range(length):
            rows.append((user, (start + step) % N_ITEMS, 4.0, 1000 + step // 2, "f", user * 100 + step))
    return pd.DataFrame(rows, columns=[C.USER_IDX, C.ITEM_IDX, C.RATING, C.TS, C.SOURCE_FILE, C.SOURCE_ROW])


def _small(cfg, **kw):
    return dataclasses.replace(cfg.sequence, **{"max_len": 12, "dim": 16, "epochs": 3, "eval_every": 1,
                                                "batch_size": 16, "dropout": 0.0, "learning_rate": 0.01, **kw})


@pytest.fixture(scope="module")
def cycles(spark):
    pdf = _cycles()
    # shuffled rows: the order must come from (ts, file row), not from where a row sits in the frame
    return pdf, spark.createDataFrame(pdf.sample(frac=1.0, random_state=1)).repartition(3)


@pytest.mark.spark
def test_sequence_shards_round_trip_through_petastorm(cycles, tmp_path, cfg):
    pdf, df = cycles
    seq_cfg = _small(cfg, max_len=6)
    write_sequence_shards(df, str(tmp_path / "seq"), seq_cfg, files=2)
    users, tokens = read_sequences(str(tmp_path / "seq"), seq_cfg.max_len + 1)
    assert users.tolist() == list(range(N_USERS)) and tokens.shape == (N_USERS, 7)
    for user, row in zip(users, tokens.numpy(), strict=True):
        expect = pdf[pdf[C.USER_IDX] == user].sort_values([C.TS, C.SOURCE_ROW])[C.ITEM_IDX].to_numpy()[-7:] + 1
        assert row[-len(expect):].tolist() == expect.tolist()
        assert (row[: 7 - len(expect)] == PAD).all()


@pytest.mark.spark
def test_sequence_frame_keeps_all_seen_items(cycles):
    pdf, df = cycles
    frame = sequence_frame(df, 4, seen=True).toPandas().set_index(C.USER_IDX)
    for user, g in pdf.groupby(C.USER_IDX):
        assert len(frame.loc[user, ITEMS]) == min(4, len(g))
        assert sorted(frame.loc[user, "_seen"]) == sorted(g[C.ITEM_IDX])


@pytest.mark.parametrize("kind", sorted(NETS))
def test_one_epoch_lowers_the_loss_and_reload_scores_identically(kind, cfg):
    seqs = pad_left([(_cycles().query(f"{C.USER_IDX} == {u}")[C.ITEM_IDX].to_numpy() + 1) for u in range(N_USERS)],
                    13)
    model = SequenceModel(kind, N_ITEMS, _small(cfg, epochs=1))
    gen = torch.Generator().manual_seed(0)
    model.net.train(False)
    with torch.no_grad():
        before, _ = model._loss(model.net(seqs[:, :-1]), seqs[:, 1:], gen)
    hist = model.fit(seqs, torch.device("cpu"))
    with torch.no_grad():
        after, _ = model._loss(model.net(seqs[:, :-1]), seqs[:, 1:], gen)
    assert len(hist.epochs) == 1 and float(after) < float(before)
    again = SequenceModel.from_bytes(model.to_bytes())
    assert torch.equal(again.score_last(seqs), model.score_last(seqs))


@pytest.mark.parametrize("kind", sorted(NETS))
def test_learns_a_deterministic_next_item(kind, cfg):
    """On the cycle data the next item is always the current one + 1: a trained model ranks it first."""
    seqs = pad_left([(_cycles().query(f"{C.USER_IDX} == {u}")[C.ITEM_IDX].to_numpy() + 1) for u in range(N_USERS)],
                    13)
    model = SequenceModel(kind, N_ITEMS, _small(cfg, epochs=40, eval_every=5, patience=0))
    hist = model.fit(seqs, torch.device("cpu"))
    assert hist.best_ndcg > 0.9
    scores = model.score_last(seqs)
    mask_seen(scores, seqs)
    expect = seqs[:, -1] % N_ITEMS  # token t = item t-1 is followed by item t
    assert (scores.argmax(1) == expect).float().mean() > 0.75  # chance: 1 in ~15 unseen items


def test_validation_in_chunks_equals_one_score_matrix(cfg, monkeypatch):
    seqs = pad_left([(_cycles().query(f"{C.USER_IDX} == {u}")[C.ITEM_IDX].to_numpy() + 1) for u in range(N_USERS)],
                    13)
    model = SequenceModel("sasrec", N_ITEMS, _small(cfg, epochs=2))
    model.fit(seqs, torch.device("cpu"))
    inputs, targets = seqs[:, :-1], seqs[:, -1]
    scores = model.score_last(inputs, batch=4)  # what validate held before issue 15: every user × item at once
    mask_seen(scores, inputs)
    rank = (scores > scores.gather(1, (targets - 1)[:, None])).sum(1)
    k = model.cfg.early_stopping_k
    want = float(torch.where(rank < k, 1.0 / torch.log2(rank.double() + 2.0), 0.0).mean())
    monkeypatch.setattr(seqmodels, "VALIDATE_CELLS", N_ITEMS * 8)  # chunks of 8 users: 8 chunks
    assert 0.0 < model.validate(inputs, targets, torch.device("cpu"), batch=4) == want


def test_fit_is_deterministic_with_a_seed(cfg):
    seqs = pad_left([(_cycles().query(f"{C.USER_IDX} == {u}")[C.ITEM_IDX].to_numpy() + 1) for u in range(20)], 13)
    a, b = (SequenceModel("sasrec", N_ITEMS, _small(cfg, epochs=2, dropout=0.2)) for _ in range(2))
    a.fit(seqs, torch.device("cpu"))
    b.fit(seqs, torch.device("cpu"))
    assert torch.equal(a.score_last(seqs), b.score_last(seqs))


def test_a_fit_broken_after_two_epochs_resumes_to_the_unbroken_weights(cfg, tmp_path):
    seqs = pad_left([(_cycles().query(f"{C.USER_IDX} == {u}")[C.ITEM_IDX].to_numpy() + 1) for u in range(30)], 13)
    ckpt = tmp_path / "sasrec.ckpt"
    unbroken = SequenceModel("sasrec", N_ITEMS, _small(cfg, epochs=4, dropout=0.2, patience=0))
    unbroken.fit(seqs, torch.device("cpu"))
    SequenceModel("sasrec", N_ITEMS, _small(cfg, epochs=2, dropout=0.2, patience=0)).fit(
        seqs, torch.device("cpu"), checkpoint_path=ckpt)  # the "killed" run: its last checkpoint is epoch 2
    resumed = SequenceModel("sasrec", N_ITEMS, _small(cfg, epochs=4, dropout=0.2, patience=0))
    hist = resumed.fit(seqs, torch.device("cpu"), checkpoint_path=ckpt)
    assert len(hist.epochs) == 4 and hist.best_epoch == unbroken.history.best_epoch
    assert [e.train_loss for e in hist.epochs] == [e.train_loss for e in unbroken.history.epochs]
    assert torch.equal(resumed.score_last(seqs), unbroken.score_last(seqs))

    # other sequences: the checkpoint is ignored and the fit starts from scratch
    other = SequenceModel("sasrec", N_ITEMS, _small(cfg, epochs=1, dropout=0.2, patience=0))
    assert len(other.fit(seqs[:20], torch.device("cpu"), checkpoint_path=ckpt).epochs) == 1


def test_the_position_cap_keeps_the_best_validated_weights(cfg):
    """``max_positions``: the fit stops at the batch that reaches it and validates there; the same cap trains the
    same weights (a count, never the clock)."""
    seqs = pad_left([(_cycles().query(f"{C.USER_IDX} == {u}")[C.ITEM_IDX].to_numpy() + 1) for u in range(N_USERS)],
                    13)
    small = _small(cfg, epochs=1000, eval_every=50, max_positions=1)
    model = SequenceModel("gru4rec", N_ITEMS, small)
    hist = model.fit(seqs, torch.device("cpu"))
    assert hist.capped and len(hist.epochs) == 1 and hist.epochs[0].val_ndcg is not None
    assert hist.best_epoch == 0 and 0 < hist.epochs[0].samples < len(seqs) * 12  # one batch, not the whole epoch
    again = SequenceModel("gru4rec", N_ITEMS, small)
    again.fit(seqs, torch.device("cpu"))
    for a, b in zip(model.net.state_dict().values(), again.net.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_length_batched_order_draws_each_batch_from_one_sorted_chunk():
    lengths = torch.from_numpy(np.random.default_rng(0).integers(1, 200, 1000))
    gen = torch.Generator().manual_seed(1)
    order = length_batched_order(lengths, 32, 8, gen)
    assert sorted(order.tolist()) == list(range(1000))
    spread = [int(b.max() - b.min()) for b in lengths[order[:992]].split(32)]
    random = [int(b.max() - b.min()) for b in lengths[torch.randperm(1000, generator=gen)[:992]].split(32)]
    assert np.mean(spread) < np.mean(random) / 4
    assert sorted(length_batched_order(lengths, 32, 0, gen).tolist()) == list(range(1000))


@pytest.mark.parametrize("kind", sorted(NETS))
def test_scores_do_not_depend_on_batching_or_left_padding(kind, cfg):
    rng = np.random.default_rng(5)
    seqs = pad_left([rng.integers(1, N_ITEMS + 1, int(n)) for n in rng.integers(1, 30, 40)], 30)
    model = SequenceModel(kind, N_ITEMS, _small(cfg, max_len=20))
    model.net.eval()
    with torch.no_grad():  # every row in the fixed max_len window, in input order
        window = model.logits(model.net(seqs[:, -20:])[:, -1])
    torch.testing.assert_close(model.score_last(seqs, batch=7), window, rtol=1e-4, atol=1e-5)


def test_mask_seen_and_pad_left():
    seqs = pad_left([np.array([3, 1]), np.array([5, 6, 7, 2])], 3)
    assert seqs.tolist() == [[0, 3, 1], [6, 7, 2]]
    scores = torch.zeros(2, 7)
    mask_seen(scores, seqs)
    assert torch.isinf(scores[0, [2, 0]]).all() and torch.isinf(scores[1, [5, 6, 1]]).all()
    assert torch.isfinite(scores).sum() == 14 - 5


@pytest.mark.spark
def test_spark_scoring_matches_torch_top_n(cycles, cfg):
    """Every user's Spark list is a top 3 of the torch scores: each score equals torch's for that item, and no
    unseen item scores above the list's last by more than float noise. Not the same item ids by equality: Spark
    scores each partition in its own length-sorted batches and multiplies in numpy, torch in one call, so scores
    differ in the last bits and two items whose scores tie within that noise may swap places."""
    pdf, df = cycles
    seq_cfg = _small(cfg, epochs=2)
    seqs = pad_left([(pdf[pdf[C.USER_IDX] == u].sort_values([C.TS, C.SOURCE_ROW])[C.ITEM_IDX].to_numpy() + 1)
                     for u in range(N_USERS)], seq_cfg.max_len + 1)
    model = SequenceModel("sasrec", N_ITEMS, seq_cfg)
    model.fit(seqs, torch.device("cpu"))
    recs = score_sequences(sequence_frame(df, seq_cfg.max_len, seen=True), model.to_bytes(), 3).toPandas()
    full = pad_left([(pdf[pdf[C.USER_IDX] == u].sort_values([C.TS, C.SOURCE_ROW])[C.ITEM_IDX].to_numpy() + 1)
                     for u in range(N_USERS)], 100)
    scores = model.score_last(full[:, -seq_cfg.max_len:])
    mask_seen(scores, full)
    third = scores.topk(3).values[:, -1].numpy()
    tol = 1e-4
    assert sorted(recs[C.USER_IDX].unique()) == list(range(N_USERS))
    for user, got in recs.sort_values([C.USER_IDX, C.RANK]).groupby(C.USER_IDX):
        assert got[C.RANK].tolist() == [1, 2, 3]
        want = scores[user, got[C.ITEM_IDX].to_numpy()].numpy()
        np.testing.assert_allclose(got[C.SCORE].to_numpy(), want, rtol=0, atol=tol)
        assert (np.diff(got[C.SCORE].to_numpy()) <= 0).all()
        assert (want >= third[user] - tol).all(), (user, got[C.ITEM_IDX].tolist(), scores[user].topk(3))


@pytest.mark.gpu
@pytest.mark.parametrize("kind", sorted(NETS))
def test_trains_and_scores_on_cuda(kind, cfg):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)")
    seqs = pad_left([(_cycles().query(f"{C.USER_IDX} == {u}")[C.ITEM_IDX].to_numpy() + 1) for u in range(N_USERS)],
                    13)
    model = SequenceModel(kind, N_ITEMS, _small(cfg, epochs=40, eval_every=5, patience=0))
    hist = model.fit(seqs, torch.device("cuda"))
    assert hist.best_ndcg > 0.9 and hist.epochs[-1].train_loss < hist.epochs[0].train_loss
    assert next(model.net.parameters()).device.type == "cpu"  # handed back ready for Spark's executors
    assert torch.isfinite(model.score_last(seqs, torch.device("cuda"))).any(1).all()


@pytest.mark.spark
@pytest.mark.slow
def test_two_processes_through_torch_distributor(spark, cfg):
    from reelrank.sequences import fit_distributed

    seqs = pad_left([(_cycles().query(f"{C.USER_IDX} == {u}")[C.ITEM_IDX].to_numpy() + 1) for u in range(N_USERS)],
                    13)
    train_cfg = dataclasses.replace(cfg.train, num_processes=2, device="cpu")
    model = fit_distributed("gru4rec", N_ITEMS, _small(cfg, epochs=30, eval_every=5, patience=0), seqs, train_cfg)
    assert len(model.history.epochs) == 30 and model.history.best_ndcg > 0.8
    assert model.history.epochs[-1].train_loss < model.history.epochs[0].train_loss
