"""The quality gate's noise allowance, checked against simulated runs with a known truth."""

import dataclasses

import numpy as np
import pytest

from reelrank import quality
from reelrank.config import load_config


@pytest.fixture(scope="module")
def gate():
    return load_config().quality


def test_bound_covers_the_sample_standard_error():
    """μ(1−μ)/n bounds the variance of a mean of [0, 1] values, whatever their spread."""
    rng = np.random.default_rng(3)
    for draw in (rng.random(500), rng.beta(0.2, 2.0, 500), (rng.random(500) < 0.3).astype(float)):
        actual = draw.std() / np.sqrt(draw.size)
        assert actual <= quality.standard_error_bound(draw.mean(), draw.size) + 1e-12
    assert quality.standard_error_bound(0.4, 0) == float("inf")


def test_a_drop_is_noise_on_few_users_and_real_on_many(gate):
    """Two tiny runs (~25 users) once stopped a nightly at 0.0477 -> 0.0309; such dips are noise there."""
    assert quality.metric_drop(0.0309, 25, 0.0477, 25, gate) is None
    assert quality.metric_drop(0.0150, 25, 0.0477, 25, gate) is None
    assert quality.metric_drop(0.0150, 2000, 0.0477, 2000, gate) > gate.noise_z
    assert quality.metric_drop(0.40, 25, 0.41, 25, gate) is None  # above the floor


def test_noise_z_zero_fails_every_value_under_the_floor(gate):
    strict = dataclasses.replace(gate, noise_z=0.0)
    assert quality.metric_drop(0.0309, 25, 0.0477, 25, strict) is not None
    assert quality.metric_drop(0.10, 0, 0.30, 0, strict) is not None  # no user counts: the floor alone decides
    assert quality.metric_drop(0.10, 0, 0.30, 0, gate) is None


def _per_user_ndcg(rng, users, hit_rate):
    """Per-user NDCG-like values: zero for a miss, else the discount of a uniform rank in 1..10."""
    hit = rng.random(users) < hit_rate
    return np.where(hit, 1.0 / np.log2(rng.integers(1, 11, users) + 1), 0.0)


def test_false_alarms_and_misses_on_simulated_runs(gate):
    """Runs drawn from one model rarely fail the gate (z = 2: at most ~2.3% one-sided); a halved model fails."""
    rng = np.random.default_rng(11)
    no_drop = dataclasses.replace(gate, max_metric_drop=0.0)  # the hardest case: any dip is under the floor
    trials, users = 2000, 60
    alarms = 0
    for _ in range(trials):
        a, b = _per_user_ndcg(rng, users, 0.45), _per_user_ndcg(rng, users, 0.45)
        alarms += quality.metric_drop(b.mean(), users, a.mean(), users, no_drop) is not None
    assert alarms / trials < 0.03
    for share, power in ((0.5, 0.95), (0.25, 1.0)):  # the model's hit rate halved, quartered, on 1,000 users
        caught = 0
        for _ in range(200):
            a, b = _per_user_ndcg(rng, 1000, 0.45), _per_user_ndcg(rng, 1000, 0.45 * share)
            caught += quality.metric_drop(b.mean(), 1000, a.mean(), 1000, gate) is not None
        assert caught >= power * 200, (share, caught)


def test_champion_is_the_best_list_or_within_noise_the_configured_one(gate):
    best = quality.choose_champion({"mlp": (0.33, 1000), "als": (0.13, 1000), "popular": (0.12, 1000)}, "mlp", gate)
    assert best.model == "mlp" and "best ndcg@10" in best.why
    assert gate.champion == "best"
    close = quality.choose_champion({"mlp": (0.30, 200), "als": (0.32, 200)}, "mlp", gate)
    assert close.model == "als" and "within noise" in close.why and "published the better als" in close.why
    keep = dataclasses.replace(gate, champion="configured")
    close = quality.choose_champion({"mlp": (0.30, 200), "als": (0.32, 200)}, "mlp", keep)
    assert close.model == "mlp" and "within noise" in close.why
    # a tie keeps the configured model
    assert quality.choose_champion({"mlp": (0.30, 200), "als": (0.30, 200)}, "mlp", gate).model == "mlp"


def test_champion_is_the_best_list_when_the_ranker_is_worse_beyond_noise(gate):
    """The 400-user synthetic night of the operator issue: MLP 0.057, popularity 0.234, ALS 0.190 on ~80 users."""
    values = {"mlp": (0.057, 80), "popular": (0.234, 80), "als": (0.190, 80)}
    champ = quality.choose_champion(values, "mlp", gate)
    assert champ.model == "popular"
    assert "published popular" in champ.why and "mlp ndcg@10 0.0570 vs popular 0.2340" in champ.why
    strict = dataclasses.replace(gate, on_regression="fail")
    with pytest.raises(quality.QualityGateFailed, match="quality.on_regression = fail"):
        quality.choose_champion(values, "mlp", strict)


def test_champion_without_a_ranker_metric_is_the_best_list(gate):
    assert quality.choose_champion({"als": (0.2, 10), "ease": (0.25, 10)}, "mlp", gate).model == "ease"


def test_champion_paired_test_sees_a_consistent_small_gain(gate):
    """A list that beats the ranker by 0.02 on 90% of 200 users: within noise unpaired, clear paired."""
    rng = np.random.default_rng(0)
    mlp = rng.uniform(0, 0.6, 200)
    seq = mlp + np.where(rng.random(200) < 0.9, 0.02, 0.0)
    values = {"mlp": (float(mlp.mean()), 200), "sasrec": (float(seq.mean()), 200)}
    keep = dataclasses.replace(gate, champion="configured")
    assert quality.choose_champion(values, "mlp", keep).model == "mlp"
    paired = quality.choose_champion(values, "mlp", keep, {"mlp": mlp, "sasrec": seq})
    assert paired.model == "sasrec" and "paired standard errors" in paired.why


def test_a_winning_ranker_says_by_how_many_standard_errors(gate):
    """The champion line gives the choice's power (issue 30): the runner-up, and the lead in standard errors of
    the paired per-user differences on the validation users."""
    rng = np.random.default_rng(1)
    mlp = rng.uniform(0, 0.6, 400)
    als = mlp - np.where(rng.random(400) < 0.5, 0.05, 0.0)
    pop = als - 0.1
    values = {name: (float(v.mean()), 400) for name, v in (("mlp", mlp), ("als", als), ("popular", pop))}
    champ = quality.choose_champion(values, "mlp", gate, {"mlp": mlp, "als": als, "popular": pop})
    diff = mlp - als
    z = diff.mean() / (diff.std(ddof=1) / np.sqrt(len(diff)))
    assert champ.model == "mlp"
    assert champ.why.endswith(f"; als next at {als.mean():.4f}, {z:.1f} paired standard errors behind on 400 users")
    alone = quality.choose_champion({"mlp": (0.3, 10)}, "mlp", gate)
    assert alone.why == "mlp has the best ndcg@10 (0.3000) of 1 lists"
    same = quality.choose_champion({"mlp": (0.3, 10), "als": (0.3, 10)}, "mlp", gate, {"mlp": mlp, "als": mlp})
    assert same.why.endswith("0.0 paired standard errors behind on 10 users")


def test_two_tiers_pick_the_best_source_on_every_user_then_pair_the_ranker_on_its_own(gate):
    """Sources are judged on all 1,000 holdout users, the ranker on its 200 validation users (issue 30): EASE
    leads ALS on all users though not on the ranker's, and the ranker is then compared with EASE only, paired on
    those 200 users."""
    import pandas as pd

    rng = np.random.default_rng(2)
    users = np.arange(1000)
    val = users[::5]
    als = pd.Series(rng.uniform(0, 0.5, 1000), index=users)
    ease = als + np.where(users % 5 == 0, -0.01, 0.03)  # better overall, worse on the validation users
    mlp = pd.Series(0.0, index=users)
    mlp[val] = ease[val] + 0.02  # beats EASE by 0.02 on each of its users
    values = {"als": (float(als.mean()), 1000), "ease": (float(ease.mean()), 1000),
              "mlp": (float(mlp[val].mean()), 200)}
    champ = quality.choose_in_two_tiers(values, "mlp", gate, {"als": als, "ease": ease, "mlp": mlp}, val)
    assert champ.model == "mlp"
    assert champ.why.startswith("sources: ease has the best ndcg@10") and "on 1,000 users" in champ.why
    assert "als next at" in champ.why and "of 3 lists" not in champ.why
    worse = mlp.copy()
    worse[val] = ease[val] - 0.05
    values["mlp"] = (float(worse[val].mean()), 200)
    lost = quality.choose_in_two_tiers(values, "mlp", gate, {"als": als, "ease": ease, "mlp": worse}, val)
    assert lost.model == "ease" and f"vs ease {ease[val].mean():.4f} on 200 users" in lost.why
