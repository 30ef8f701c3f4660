"""The run catalog: declarations that hold together, and a StageIO that refuses what is not declared."""

from __future__ import annotations

from datetime import date

import pytest

from reelrank import catalog
from reelrank.catalog import DATASETS, STAGES


def test_every_input_is_an_output_of_an_earlier_stage():
    written: set[str] = set()
    for stage in STAGES:
        missing = set(stage.inputs) - written
        assert not missing, f"stage {stage.name} reads {sorted(missing)} before any stage writes it"
        written |= set(stage.outputs)


def test_every_dataset_is_written_by_exactly_one_stage():
    writers: dict[str, list[str]] = {}
    for stage in STAGES:
        for name in stage.outputs:
            writers.setdefault(name, []).append(stage.name)
    assert set(writers) == set(DATASETS), "a declared dataset no stage writes, or an output with no declaration"
    assert all(len(w) == 1 for w in writers.values()), {n: w for n, w in writers.items() if len(w) > 1}


def test_published_reads_name_tables_and_publish_takes_every_table():
    for stage in STAGES:
        assert all(DATASETS[n].kind == "table" for n in stage.published), stage.name
    assert set(catalog.DECLS["publish"].inputs) == set(catalog.TABLES) | {"champion"}
    assert catalog.STAGE_NAMES[-1] == "publish"


@pytest.mark.spark
def test_pipeline_runs_exactly_the_declared_stages():
    from reelrank import pipeline

    assert tuple(pipeline.STAGES) == catalog.STAGE_NAMES


@pytest.mark.spark
def test_stage_io_refuses_undeclared_datasets(spark, cfg):
    from reelrank.runstate import RunContext, StageIO, UndeclaredDataset

    ctx = RunContext.start(spark, cfg, date(2026, 1, 9))
    io = StageIO(ctx, catalog.StageDecl("probe", inputs=("history",), outputs=("holdout",)))
    df = spark.createDataFrame([(1, 2)], "user_idx INT, item_idx INT")
    with pytest.raises(UndeclaredDataset, match="stage probe writes 'learn'"):
        io.write("learn", df)
    with pytest.raises(UndeclaredDataset, match="stage probe reads 'accepted'"):
        io.read("accepted")
    with pytest.raises(UndeclaredDataset, match="reads published 'user_index'"):
        io.published("user_index")
    io.start()
    with pytest.raises(UndeclaredDataset, match="without writing its declared output"):
        io.finish()
    assert not ctx.complete("holdout")
    io.write("holdout", df)
    io.finish()
    assert ctx.complete("holdout") and ctx.stage_complete("matrix") is False
    StageIO(ctx, io.decl).start()  # a rerun of the stage: its outputs are no longer complete
    assert not ctx.complete("holdout")
