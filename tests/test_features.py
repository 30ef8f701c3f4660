"""Candidate union, features and labels on a small hand-built history."""

from __future__ import annotations

import math

import pytest
from pyspark.sql import types as T

from reelrank import columns as C
from reelrank import features
from reelrank.popularity import recommend_popular

pytestmark = pytest.mark.spark

DAY = 86400
HISTORY = [  # user, item, rating, ts
    (0, 0, 5.0, 0 * DAY), (0, 1, 3.0, 1 * DAY),
    (1, 0, 4.0, 2 * DAY), (1, 2, 2.0, 3 * DAY),
    (2, 0, 1.0, 4 * DAY), (2, 1, 5.0, 5 * DAY), (2, 3, 3.0, 10 * DAY),
]
ITEMS = [(0, ["Drama"]), (1, ["Comedy"]), (2, ["Drama", "Comedy"]), (3, ["Horror"]), (4, [])]
LIST_SCHEMA = T.StructType([T.StructField(c, t) for c, t in
                            [(C.USER_IDX, T.IntegerType()), (C.ITEM_IDX, T.IntegerType()), (C.SCORE, T.DoubleType()),
                             (C.RANK, T.IntegerType())]])


@pytest.fixture
def frames(spark):
    history = spark.createDataFrame(HISTORY, [C.USER_IDX, C.ITEM_IDX, C.RATING, C.TS])
    items = spark.createDataFrame(
        ITEMS,
        T.StructType(
            [T.StructField(C.ITEM_IDX, T.IntegerType()), T.StructField(C.GENRES, T.ArrayType(T.StringType()))]
        ),
    )
    return history, items


def test_popular_candidates_fill_every_users_list(spark, frames):
    """Each user gets n unseen items, even one who has seen all of the 2n most popular."""
    history, _ = frames
    pop = {(r[0], r[1]): (r[2], r[3]) for r in recommend_popular(history, history, history, 2).collect()}
    # popularity in users: item 0 (3) > item 1 (2) > items 2, 3 (1 each, tie broken by index); user 2 has seen
    # items 0, 1 and 3, so only item 2 is left to them in this catalogue
    assert pop == {(0, 2): (1.0, 1), (0, 3): (1.0, 2), (1, 1): (2.0, 1), (1, 3): (1.0, 2), (2, 2): (1.0, 1)}
    one = {(r[0], r[1]) for r in recommend_popular(history, history, history, 1).collect()}
    assert one == {(0, 2), (1, 1), (2, 2)}  # user 2 has seen both of the top two items: still one candidate


def test_build_features_union_labels_and_values(spark, frames, cfg):
    history, items = frames
    als = spark.createDataFrame([(0, 2, 0.9, 1), (0, 4, 0.5, 2)], LIST_SCHEMA)
    nb = spark.createDataFrame([(0, 2, 0.3, 1), (1, 1, 0.7, 1)], LIST_SCHEMA)
    pop = recommend_popular(history, history, history, 1)
    labels = spark.createDataFrame([(0, 2), (1, 3)], [C.USER_IDX, C.ITEM_IDX])
    lists = {"als": als, "item_neighbours": nb, "popular": pop}
    out = features.build_features(history, items, lists, features.missing_rank(cfg), labels)
    rows = {(r[C.USER_IDX], r[C.ITEM_IDX]): r.asDict() for r in out.collect()}
    # popular(1): user 0's most popular unseen item is 2, user 1's is 1, user 2's is 2
    assert set(rows) == {(0, 2), (0, 4), (1, 1), (2, 2)}
    assert rows[(1, 1)]["f_in_popular"] == 1.0 and rows[(0, 4)]["f_in_popular"] == 0.0
    assert dict(out.dtypes)[C.LABEL] == "float" and all(t == "float" for c, t in out.dtypes if c.startswith("f_"))
    assert rows[(0, 2)][C.LABEL] == 1.0 and rows[(0, 4)][C.LABEL] == 0.0 and rows[(1, 1)][C.LABEL] == 0.0
    assert rows[(2, 2)][C.LABEL] == 0.0
    r = rows[(0, 2)]
    # scores are z-scores within each user's list: ALS 0.9 and 0.5 -> +1 and -1; a one-item list (sd 0) -> 0
    assert r["f_als_score"] == pytest.approx(1.0) and rows[(0, 4)]["f_als_score"] == pytest.approx(-1.0)
    assert r["f_nb_score"] == pytest.approx(0.0) and rows[(1, 1)]["f_nb_score"] == pytest.approx(0.0)
    assert r["f_als_rank"] == pytest.approx(math.log1p(1)) and r["f_in_popular"] == 1.0
    # user 0 rated one Drama and one Comedy item: item 2 (Drama, Comedy) has affinity (1/2 + 1/2) / 2
    assert r["f_genre_affinity"] == pytest.approx(0.5)
    # counts as log ratios to the mean count (7 ratings, 3 users, 4 rated items), so that a longer history
    # at scoring time does not shift them
    assert r["f_user_mean"] == pytest.approx(4.0) and r["f_user_count"] == pytest.approx(math.log(2 / (7 / 3)))
    assert r["f_item_pop"] == pytest.approx(math.log(1 / (7 / 4))) and r["f_item_mean"] == pytest.approx(2.0)
    assert r["f_item_age"] == pytest.approx(math.log1p(10 - 3), rel=1e-6)
    # item 4 was never rated: neutral fills, no NaN anywhere
    r4 = rows[(0, 4)]
    assert (r4["f_item_pop"] == pytest.approx(math.log(1 / (7 / 4)))
            and r4["f_item_mean"] == pytest.approx(sum(h[2] for h in HISTORY) / len(HISTORY)))
    assert r4["f_nb_score"] == features.MISSING_Z and r4["f_genre_affinity"] == 0.0
    assert all(v == v for row in rows.values() for k, v in row.items() if k.startswith("f_"))


def test_every_feature_source_adds_its_candidates_and_features(spark, frames, cfg):
    """EASE's and the sequence model's lists join the union and give the ranker their z-scores and ranks."""
    history, items = frames
    assert features.sources() == ("als", "item_neighbours", "popular", "ease", "sasrec")  # the registry's
    lists = {"als": spark.createDataFrame([(0, 2, 0.9, 1)], LIST_SCHEMA),
             "item_neighbours": spark.createDataFrame([(1, 1, 0.7, 1)], LIST_SCHEMA),
             "popular": recommend_popular(history, history, history, 1),
             "ease": spark.createDataFrame([(0, 2, 2.0, 1), (0, 3, 1.0, 2)], LIST_SCHEMA),
             "sasrec": spark.createDataFrame([(0, 4, 5.0, 1), (0, 2, 3.0, 2)], LIST_SCHEMA)}
    out = features.build_features(history, items, lists, features.missing_rank(cfg))
    rows = {(r[C.USER_IDX], r[C.ITEM_IDX]): r.asDict() for r in out.collect()}
    assert set(rows) == {(0, 2), (0, 3), (0, 4), (1, 1), (2, 2)}  # (0, 3) only from EASE, (0, 4) only from SASRec
    missing = math.log1p(features.missing_rank(cfg))
    assert rows[(0, 4)]["f_sasrec_rank"] == pytest.approx(math.log1p(1)) and rows[(0, 4)]["f_sasrec_score"] > 0
    assert rows[(0, 4)]["f_ease_rank"] == pytest.approx(missing) and rows[(0, 4)]["f_ease_score"] == features.MISSING_Z
    assert rows[(0, 3)]["f_ease_rank"] == pytest.approx(math.log1p(2)) and rows[(0, 3)]["f_als_rank"] == pytest.approx(
        missing)
    assert "f_in_popular" in rows[(0, 2)] and "f_pop_score" not in rows[(0, 2)]
    with pytest.raises(ValueError, match="at least one"):
        features.build_features(history, items, {}, 10.0)


def test_validation_users_are_stable(spark):
    users = spark.range(2000).withColumnRenamed("id", C.USER_IDX)
    a = {r[0] for r in users.filter(features.is_validation_user(0.2)).collect()}
    b = {r[0] for r in users.filter(features.is_validation_user(0.2)).collect()}
    assert a == b and 300 < len(a) < 500


def test_write_shards_row_groups(spark, cfg, tmp_path):
    import pyarrow.parquet as pq

    df = spark.range(20000).selectExpr(f"cast(id as int) as {C.USER_IDX}", "cast(id % 7 as float) as f_x")
    small = cfg.replace(features={"rows_per_row_group": 1000, "files_per_split": 2}).features
    features.write_shards(df, str(tmp_path / "s"), small)
    files = sorted((tmp_path / "s").glob("part-*.parquet"))
    assert len(files) == 2
    meta = [pq.ParquetFile(f).metadata for f in files]
    assert sum(m.num_rows for m in meta) == 20000
    assert sum(m.num_row_groups for m in meta) >= 4  # ~10k rows per file in groups of about 1,000 rows


def test_genre_affinity_skips_null_genres_and_repeated_items(spark, frames):
    """Item metadata from a generic source can hold a null inside a genre list or repeat an item: a null genre
    counts for nothing, a repeated item neither doubles the pairs nor its genres."""
    history, _ = frames
    schema = T.StructType([T.StructField(C.ITEM_IDX, T.IntegerType()),
                           T.StructField(C.GENRES, T.ArrayType(T.StringType()))])
    items = spark.createDataFrame(ITEMS[:2] + [(2, ["Drama", None, "Comedy"]), (2, ["Drama", None, "Comedy"]),
                                               (3, None), (4, [None])], schema)
    pairs = spark.createDataFrame([(0, 2), (0, 3), (0, 4), (9, 2)], [C.USER_IDX, C.ITEM_IDX])
    out = {(r[C.USER_IDX], r[C.ITEM_IDX]): r["f_genre_affinity"]
           for r in features.genre_affinity(history, items, pairs).collect()}
    assert len(out) == 4 and features.genre_affinity(history, items, pairs).count() == 4
    # user 0 rated one Drama and one Comedy item: item 2 (Drama, Comedy) has affinity (1/2 + 1/2) / 2
    assert out[(0, 2)] == pytest.approx(0.5)
    assert out[(0, 3)] == 0.0 and out[(0, 4)] == 0.0 and out[(9, 2)] == 0.0
