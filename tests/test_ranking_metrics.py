"""The numpy ranking metrics: hand-worked values, a direct computation, and torchmetrics on ml-100k."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import dataset
from peer_metrics import KS, TOLERANCE, ml100k_peer

from reelrank import ranking_metrics as rm
from reelrank.columns import ITEM_IDX, RANK, USER_IDX
from reelrank.metric_keys import RANKING_METRICS


def _frames(recs: list[tuple[int, int, int]], truth: list[tuple[int, int]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (pd.DataFrame(recs, columns=[USER_IDX, ITEM_IDX, RANK]), pd.DataFrame(truth, columns=[USER_IDX, ITEM_IDX]))


def test_hand_worked_example():
    # user 1: list [a, b, c, d], relevant {b, d, e}; user 2: list [x], relevant {x}; user 3: no list, relevant {y};
    # user 9 has a list and nothing relevant (left out); user 2's relevant pair is listed twice (counts once)
    recs, truth = _frames([(1, 10, 1), (1, 11, 2), (1, 12, 3), (1, 13, 4), (2, 20, 1), (9, 10, 1)],
                          [(1, 11), (1, 13), (1, 14), (2, 20), (2, 20), (3, 30)])
    hits = rm.ranked_hits(recs, truth, 4)
    assert hits.users.tolist() == [1, 2, 3] and hits.n_relevant.tolist() == [3, 1, 1]
    got = rm.mean_metrics(hits, [2, 4])
    ndcg2 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    ndcg4 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3) + 1 / math.log2(4))
    want = {"precision@2": (1 / 2 + 1 / 2) / 3, "recall@2": (1 / 3 + 1) / 3, "ndcg@2": (ndcg2 + 1) / 3,
            "map@2": ((1 / 2) / 2 + 1) / 3, "hit_rate@2": 2 / 3,
            "precision@4": (2 / 4 + 1 / 4) / 3, "recall@4": (2 / 3 + 1) / 3, "ndcg@4": (ndcg4 + 1) / 3,
            "map@4": ((1 / 2 + 2 / 4) / 3 + 1) / 3, "hit_rate@4": 2 / 3}
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-15), key
    assert rm.ndcg(hits, 4)[2] == 0.0  # the user without a list


def test_limits_and_errors():
    recs, truth = _frames([(1, 10, 1), (1, 11, 2), (2, 20, 1)], [(1, 10), (1, 11), (2, 20)])
    perfect = rm.mean_metrics(rm.ranked_hits(recs, truth, 50), [1, 2, 50])
    assert perfect["ndcg@50"] == perfect["map@50"] == perfect["recall@50"] == 1.0
    assert perfect["precision@50"] == pytest.approx((2 / 50 + 1 / 50) / 2)
    assert rm.mean_metrics(rm.ranked_hits(recs, truth.iloc[:0], 5), [5]) == {f"{m}@5": 0.0 for m in RANKING_METRICS}
    with pytest.raises(ValueError, match="depth"):
        rm.ranked_hits(recs, truth, 0)
    with pytest.raises(ValueError, match="k must be in 1..2"):
        rm.ndcg(rm.ranked_hits(recs, truth, 2), 3)


def test_every_ranking_metric_has_a_per_user_function():
    assert tuple(rm.PER_USER) == RANKING_METRICS


def test_ndcg_of_scores_matches_a_direct_computation():
    rng = np.random.default_rng(3)
    users = rng.integers(0, 20, 400)
    labels = (rng.random(400) < 0.2).astype(float)
    scores = rng.random(400)
    per_user = []
    for u in np.unique(users):
        m = users == u
        lab, sc = labels[m], scores[m]
        if lab.sum() == 0:
            continue
        top = lab[np.argsort(-sc)][:10]
        ideal = np.sort(lab)[::-1][:10]
        disc = 1 / np.log2(np.arange(2, 12))
        per_user.append((top * disc[: len(top)]).sum() / (ideal * disc[: len(ideal)]).sum())
    np.testing.assert_allclose(rm.ndcg_of_scores(users, labels, scores, 10), per_user, rtol=1e-12)
    assert rm.mean(rm.ndcg_of_scores(users, labels, labels, 10)) == pytest.approx(1.0)
    assert math.isnan(rm.mean(rm.ndcg_of_scores(users, np.zeros(400), scores, 10)))  # nothing relevant


def test_ndcg_of_target_ranks():
    got = rm.ndcg_of_target_ranks(np.array([0, 1, 9, 10, 500]), 10)
    np.testing.assert_array_equal(got, [1.0, 1 / math.log2(3), 1 / math.log2(11), 0.0, 0.0])


def test_ideal_dcg():
    np.testing.assert_allclose(rm.ideal_dcg(np.array([0, 1, 2, 7]), 3),
                               [0.0, 1.0, 1 + 1 / math.log2(3), 1 + 1 / math.log2(3) + 0.5], rtol=1e-15)


@pytest.mark.slow
def test_numpy_metrics_match_torchmetrics_on_ml100k():
    """The peer library on real data; definitions and the MAP conversion are in ``peer_metrics``'s docstring."""
    recs, truth, peer = ml100k_peer(dataset("ml-100k"))
    got = rm.mean_metrics(rm.ranked_hits(recs, truth, max(KS)), KS)
    assert got.keys() == peer.keys()
    for key in peer:
        assert got[key] == pytest.approx(peer[key], abs=TOLERANCE), key
    assert 0.1 < got["ndcg@10"] < 0.5 and got["map@10"] < got["precision@10"]
