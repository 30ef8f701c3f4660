"""The candidates stage function on hand-built ratings (10 users, 12 items): both fits, lists of unseen items."""

from __future__ import annotations

from datetime import date

import pytest
from pyspark.sql import functions as F
from stagekit import ITEMS, PER_USER, USERS, index, interactions, stage_io

from reelrank import columns as C
from reelrank.stages import candidates as stage

pytestmark = [pytest.mark.spark, pytest.mark.slow]  # every configured source fitted: ~40 s
DAY = date(2030, 1, 4)


def test_both_fits_keep_each_sources_lists_and_tables(spark, cfg):
    # the factor and sequence sources serve the full lists from their history fit: one fit each, and that path
    run_cfg = cfg.replace(candidates={"serve_from_history": ["als", "ease", "sasrec"]})
    inter = interactions(spark)
    history = inter.filter((F.col(C.TS) - 1_700_000_000) % 100 < PER_USER - 2)  # each user's latest two held out
    io = stage_io(spark, run_cfg, "candidates", DAY)
    result = stage.run(io, run_cfg, interactions=inter, history=history, user_index=index(spark, "user", USERS),
                       item_index=index(spark, "item", ITEMS))
    assert set(result.outputs) <= set(stage.STAGE.outputs)
    assert {"item_neighbours", "item_nb_history", "user_factors", "sequences"} <= set(result.outputs)
    rows = 0
    for split, fitted in (("candidates_history", history), ("candidates_full", inter)):
        lists = result.outputs[split]
        assert sorted(lists) == sorted(cfg.candidates.sources)
        seen = {(r[C.USER_IDX], r[C.ITEM_IDX]) for r in fitted.collect()}
        for name, df in lists.items():
            pdf = df.toPandas()
            rows += len(pdf)
            assert not set(pdf[[C.USER_IDX, C.ITEM_IDX]].itertuples(index=False, name=None)) & seen, (split, name)
            assert pdf.groupby(C.USER_IDX)[C.RANK].apply(lambda r: sorted(r) == list(range(1, len(r) + 1))).all()
    assert result.rows == rows
    nb = result.outputs["item_neighbours"].toPandas()  # published with the original ids
    assert len(nb) > 0 and (nb.entity_id == "i" + nb.entity_idx.map("{:02d}".format)).all()
    assert result.detail.startswith(f"per user from the full fit (seconds for both fits): {cfg.candidates.sources[0]} ")
    assert result.detail.endswith("; served from the history fit: als, ease, sasrec")
