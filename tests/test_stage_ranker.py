"""The features, train, evaluate and score stage functions, each called directly on a tiny night: 60 users' ratings
and hand-built candidate lists for every source the ranker's features describe."""

from __future__ import annotations

from datetime import date

import pytest
from stagekit import stage_io

from reelrank import columns as C
from reelrank import features, matrix, neighbours
from reelrank.inputs.sources import ITEMS_SCHEMA
from reelrank.runstate import Shards
from reelrank.stages import evaluate, score, train
from reelrank.stages import features as features_stage
from reelrank.warehouse import storage

pytestmark = [pytest.mark.spark, pytest.mark.slow]
DAY = date(2030, 1, 5)
USERS, ITEMS, RATED, HELD_OUT, LISTED = 60, 30, 8, 2, 6


def _rated(u: int) -> list[int]:
    return [(5 * u + 3 * j) % ITEMS for j in range(RATED)]


@pytest.fixture(scope="module")
def night(spark, cfg):
    """The frames a night holds before features: ratings split into history and holdout, per-source lists."""
    rows = [(u, i, f"u{u:02d}", f"i{i:02d}", float(1 + (u * i) % 5), 1_700_000_000 + 100 * u + j, "f.csv",
             RATED * u + j) for u in range(USERS) for j, i in enumerate(_rated(u))]
    inter = spark.createDataFrame(rows, "user_idx INT, item_idx INT, user_id STRING, item_id STRING, rating DOUBLE, "
                                        "ts LONG, source_file STRING, source_row LONG")
    history = inter.filter(f"ts - 1700000000 < 100 * user_idx + {RATED - HELD_OUT}")
    holdout = inter.filter(f"ts - 1700000000 >= 100 * user_idx + {RATED - HELD_OUT}")
    user_index = spark.createDataFrame([(f"u{u:02d}", u) for u in range(USERS)], "user_id STRING, user_idx INT")
    item_index = spark.createDataFrame([(f"i{i:02d}", i) for i in range(ITEMS)], "item_id STRING, item_idx INT")
    items = matrix.items_frame(spark.createDataFrame([], ITEMS_SCHEMA), item_index)

    def lists(k: int, seen_upto: int):
        """Source k's top LISTED per user among the items unseen in the fitted ratings; every source lists the
        held-out items of a user whose index is a multiple of k + 2 first (so labels and metrics differ)."""
        out = []
        for u in range(USERS):
            seen = set(_rated(u)[:seen_upto])
            held = [i for i in _rated(u)[RATED - HELD_OUT:] if i not in seen] if u % (k + 2) == 0 else []
            rest = sorted((i for i in range(ITEMS) if i not in seen and i not in held),
                          key=lambda i: ((i * (k + 3) + u) % ITEMS, i))
            out += [(u, i, float(LISTED - r), r + 1) for r, i in enumerate((held + rest)[:LISTED])]
        return spark.createDataFrame(out, "user_idx INT, item_idx INT, score DOUBLE, rank INT")

    names = features.sources()
    return {"interactions": inter, "history": history, "holdout": holdout, "items": items,
            "user_index": user_index, "item_index": item_index,
            "candidates_history": {n: lists(k, RATED - HELD_OUT) for k, n in enumerate(names)},
            "candidates_full": {n: lists(k, RATED) for k, n in enumerate(names)},
            "item_nb_history": neighbours.neighbour_lists(history, "item", cfg.neighbours)}


@pytest.fixture(scope="module")
def shards(spark, cfg, night):
    io = stage_io(spark, cfg, "features", DAY)
    result = features_stage.run(io, cfg, **{n: night[n] for n in features_stage.STAGE.inputs})
    return io, result


def test_features_label_the_held_out_candidates_and_write_three_shard_sets(spark, cfg, night, shards):
    io, result = shards
    assert set(result.outputs) == set(features_stage.STAGE.outputs)
    learn = result.outputs["learn"].toPandas()
    held = {(r[C.USER_IDX], r[C.ITEM_IDX]) for r in night["holdout"].collect()}
    labelled = learn[learn[C.LABEL] == 1]
    assert len(labelled) > 0 and set(labelled[[C.USER_IDX, C.ITEM_IDX]].itertuples(index=False, name=None)) <= held
    sizes = {n: Shards(result.outputs[n], spark).frame.count() for n in ("shards_train", "shards_val", "shards_score")}
    assert sizes["shards_train"] + sizes["shards_val"] == len(learn) and min(sizes.values()) > 0
    assert result.rows == len(learn) + sizes["shards_score"]
    assert all(result.outputs[n] == io.location(n) for n in ("shards_train", "shards_val", "shards_score"))


@pytest.fixture(scope="module")
def model(spark, cfg, night, shards):
    io = stage_io(spark, cfg, "train", DAY)
    folder = shards[1].outputs
    result = train.run(io, cfg, shards_train=Shards(folder["shards_train"], spark),
                       shards_val=Shards(folder["shards_val"], spark), user_index=night["user_index"],
                       item_index=night["item_index"])
    return result


def test_train_leaves_the_ranker_in_its_folder(spark, cfg, shards, model):
    folder = model.outputs["model"]
    assert set(model.outputs) == {"model"} and storage.exists(storage.join(folder, f"{cfg.train.model}.pt"))
    assert model.rows == Shards(shards[1].outputs["shards_train"], spark).frame.count()
    assert model.detail.startswith(f"{cfg.train.model} on ")


@pytest.fixture(scope="module")
def evaluated(spark, cfg, night, shards, model):
    io = stage_io(spark, cfg, "evaluate", DAY)
    return evaluate.run(io, cfg, shards_val=Shards(shards[1].outputs["shards_val"], spark), holdout=night["holdout"],
                        history=night["history"], item_nb_history=night["item_nb_history"],
                        candidates_history=night["candidates_history"], model=model.outputs["model"])


def test_evaluate_measures_every_list_and_picks_a_champion(cfg, night, evaluated):
    metrics = evaluated.outputs["metrics"].toPandas()
    assert evaluated.rows == len(metrics)
    ndcg = metrics[(metrics.metric == "ndcg") & (metrics.k == cfg.evaluate.ks[0])].set_index(C.MODEL)["value"]
    assert set(ndcg.index) == set(features.sources()) | {cfg.train.model}
    assert ((ndcg >= 0) & (ndcg <= 1)).all() and ndcg.max() > 0
    # sources on every user with a holdout (none saw it); the ranker on its validation users only
    users = metrics[(metrics.metric == "ndcg") & (metrics.k == cfg.evaluate.ks[0])].set_index(C.MODEL)["users"]
    held = night["holdout"].select(C.USER_IDX).distinct().count()
    assert (users.drop(cfg.train.model) == held).all() and 0 < users[cfg.train.model] < held
    assert {"rmse", "mae"} <= set(metrics.metric)
    champion = evaluated.outputs["champion"].collect()
    assert len(champion) == 1 and champion[0]["model"] in ndcg.index
    assert evaluated.detail.endswith(f"publishing {champion[0]['model']}")


@pytest.mark.parametrize("chosen", ["popular", "ranker"])
def test_score_publishes_the_champions_top_n_with_ids(spark, cfg, night, shards, model, chosen):
    name = cfg.train.model if chosen == "ranker" else chosen
    io = stage_io(spark, cfg, "score", DAY)
    champion = spark.createDataFrame([(name, "picked by the test")], "model STRING, why STRING")
    result = score.run(io, cfg, shards_score=Shards(shards[1].outputs["shards_score"], spark),
                       model=model.outputs["model"], champion=champion, candidates_full=night["candidates_full"],
                       user_index=night["user_index"], item_index=night["item_index"])
    recs = result.outputs["recommendations"].toPandas()
    assert result.rows == len(recs) and set(recs[C.MODEL]) == {name} and set(recs[C.MODEL_VERSION]) == {io.run_id}
    assert (recs.groupby(C.USER)[C.RANK].max() <= cfg.score.top_n).all() and recs[C.USER].nunique() == USERS
    if chosen == "popular":  # the source's own list, cut to top_n
        listed = night["candidates_full"]["popular"].toPandas()
        want = listed[listed[C.RANK] <= cfg.score.top_n]
        assert sorted(zip(recs[C.USER], recs[C.ITEM], recs[C.RANK], strict=True)) == sorted(
            zip("u" + want[C.USER_IDX].map("{:02d}".format), "i" + want[C.ITEM_IDX].map("{:02d}".format),
                want[C.RANK], strict=True))
    else:  # every unseen candidate of the score shards ranked by the ranker, ids joined
        assert recs.groupby(C.USER)[C.SCORE].apply(lambda s: s.is_monotonic_decreasing).all()
