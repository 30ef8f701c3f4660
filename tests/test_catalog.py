"""The run catalog: stage declarations (each beside its function) that hold together, and a StageIO that refuses
what is not declared."""

from __future__ import annotations

import inspect
from datetime import date

import pytest

from reelrank import catalog
from reelrank.catalog import DATASETS, STAGE_NAMES, Stage, stages

WRITTEN_BY_THE_RUNNER = {n for n, d in DATASETS.items() if d.kind == "record"}


def test_stages_are_collected_from_their_modules_in_run_order():
    found = stages()
    assert tuple(found) == STAGE_NAMES and STAGE_NAMES[-1] == "publish"
    for name, decl in found.items():
        assert decl.func.__module__ == f"reelrank.stages.{name}", name
    with pytest.raises(ValueError, match="unknown stage 'bogus'"):
        catalog.stage("bogus")


def test_every_input_is_an_output_of_an_earlier_stage():
    written: set[str] = set()
    for stage in stages().values():
        missing = set(stage.inputs) - written
        assert not missing, f"stage {stage.name} reads {sorted(missing)} before any stage writes it"
        written |= set(stage.outputs)


def test_every_dataset_is_written_by_exactly_one_stage():
    writers: dict[str, list[str]] = {}
    for stage in stages().values():
        for name in stage.outputs:
            writers.setdefault(name, []).append(stage.name)
    assert set(writers) == set(DATASETS) - WRITTEN_BY_THE_RUNNER, "a dataset no stage writes, or an undeclared output"
    assert all(len(w) == 1 for w in writers.values()), {n: w for n, w in writers.items() if len(w) > 1}


def test_published_reads_name_tables_and_publish_takes_every_table():
    for stage in stages().values():
        assert all(DATASETS[n].kind in ("table", "record") for n in stage.published), stage.name
    assert set(catalog.stage("publish").inputs) == set(catalog.TABLES) | {"champion"}
    assert set(catalog.stage("publish").published) == {"runs", "metrics"}  # the quality gate's earlier nights


def test_each_stage_function_takes_exactly_its_declared_inputs():
    """``run(io, cfg, **inputs)``: a keyword per declared input and ``published_<name>`` per published table; one
    the runner would not pass, or a declared input the function cannot take, is a declaration out of step."""
    for stage in stages().values():
        params = inspect.signature(stage.func).parameters
        assert list(params)[:2] == ["io", "cfg"], stage.name
        named = {n for n, p in params.items() if p.kind == inspect.Parameter.KEYWORD_ONLY}
        passed = set(stage.inputs) | {f"published_{n}" for n in stage.published}
        assert named <= passed, f"{stage.name} takes {sorted(named - passed)}, which it does not declare"
        if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
            assert passed <= named, f"{stage.name} declares {sorted(passed - named)}, which it does not take"


def _probe(inputs: tuple[str, ...] = ("history",), outputs: tuple[str, ...] = ("holdout",)) -> Stage:
    return Stage("probe", lambda io, cfg: None, inputs=inputs, outputs=outputs)


@pytest.mark.spark
def test_stage_io_refuses_undeclared_datasets(spark, cfg):
    from reelrank.runstate import RunContext, StageIO, UndeclaredDataset

    ctx = RunContext.start(spark, cfg, date(2026, 1, 9))
    io = StageIO(ctx, _probe())
    df = spark.createDataFrame([(1, 2)], "user_idx INT, item_idx INT")
    with pytest.raises(UndeclaredDataset, match="stage probe writes 'learn'"):
        io.write("learn", df)
    with pytest.raises(UndeclaredDataset, match="stage probe writes 'model'"):
        io.folder("model")
    io.start()
    with pytest.raises(UndeclaredDataset, match="without writing its declared output"):
        io.accept({})
    with pytest.raises(UndeclaredDataset, match="returned learn, which its declaration does not name"):
        io.accept({"holdout": df, "learn": df})
    assert not ctx.complete("holdout")
    io.accept({"holdout": df})  # returned, not written by the stage: the runner writes it
    io.finish()
    assert ctx.complete("holdout") and ctx.stage_complete("matrix") is False
    assert sorted(tuple(r) for r in spark.read.parquet(ctx.location("holdout")).collect()) == [(1, 2)]
    StageIO(ctx, io.stage).start()  # a rerun of the stage: its outputs are no longer complete
    assert not ctx.complete("holdout")


@pytest.mark.spark
def test_asking_for_a_folder_is_not_writing_it(spark, cfg):
    """A ``shards`` output returned but never filled fails the stage; once filled it is complete."""
    from reelrank.runstate import RunContext, RunFailed, StageIO, UndeclaredDataset
    from reelrank.warehouse import storage

    ctx = RunContext.start(spark, cfg, date(2026, 1, 10))
    io = StageIO(ctx, _probe(inputs=(), outputs=("shards_val",)))
    io.start()
    storage.remove(ctx.location("shards_val"))
    folder = io.folder("shards_val")
    with pytest.raises(RunFailed, match="output shards_val is missing"):
        io.accept({"shards_val": folder})
    with pytest.raises(UndeclaredDataset, match="returned /elsewhere for shards_val"):
        io.accept({"shards_val": "/elsewhere"})
    spark.createDataFrame([(1, 2)], "user_idx INT, item_idx INT").write.parquet(folder)
    io.accept({"shards_val": folder})
    io.finish()
    assert ctx.complete("shards_val")


@pytest.mark.spark
def test_inputs_are_read_for_the_stage(spark, cfg):
    """Each declared input comes as its kind reads (frames by part, shards with their path), published ones by
    ``published_<name>`` (None before the first night)."""
    from reelrank.runstate import RunContext, Shards, StageIO

    ctx = RunContext.start(spark, cfg, date(2026, 1, 11))
    df = spark.createDataFrame([(1, 2)], "user_idx INT, item_idx INT")
    writer = StageIO(ctx, _probe(inputs=(), outputs=("history", "candidates_history", "shards_val")))
    writer.write("history", df)
    writer.write("candidates_history", df, part="b")
    writer.write("candidates_history", df, part="a")
    df.write.mode("overwrite").parquet(ctx.location("shards_val"))
    reader = StageIO(ctx, Stage("probe", lambda io, cfg: None, inputs=("history", "candidates_history", "shards_val"),
                                published=("no_such_table",)))
    got = reader.inputs()
    assert set(got) == {"history", "candidates_history", "shards_val", "published_no_such_table"}
    assert got["history"].collect() == df.collect() and list(got["candidates_history"]) == ["a", "b"]
    assert isinstance(got["shards_val"], Shards) and got["shards_val"].frame.count() == 1
    assert got["published_no_such_table"] is None
