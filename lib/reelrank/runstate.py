"""One run's identity and state on disk, and the catalog-checked I/O its stages go through.

A run lives under ``<data_dir>/runs/<run_id>/`` (work frames, shards, the model, ``state.json``); its warehouse
tables are staged under each table's ``run_date=<date>/<run_id>/`` directory and published by the last stage.
``runs/current-<date>`` points at the date's latest attempt, so separate spark-submit stage jobs continue it.
An output is complete when its directory holds :data:`DONE`, written by the runner after the stage that
declares it has ended; ``--resume`` skips a stage whose declared outputs are all complete.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from reelrank import faults
from reelrank.catalog import DATASETS, TABLES, Stage, stage
from reelrank.config import Config
from reelrank.runs import RunRecord, StageTimer
from reelrank.warehouse import storage
from reelrank.warehouse.publishing import RunOutputs, read_table

log = logging.getLogger("reelrank")

DONE = "_DONE"
"""Completion marker the runner writes into every output directory of a stage that ended (Spark's own
``_SUCCESS`` says only that one write finished, not that the stage did)."""

NOT_OUTPUTS = ("quality", "report")
"""Config sections that change no stage's output: a run may resume across a change of them."""


class RunFailed(RuntimeError):
    """The run did not publish; the previous output is unchanged."""


class UndeclaredDataset(RuntimeError):
    """A stage wrote or returned a dataset its declaration does not name, or missed one it names."""


@dataclass
class RunContext:
    """One run's identity and state: where each dataset lives, the run record, the staged tables."""

    spark: SparkSession
    cfg: Config
    record: RunRecord
    outputs: RunOutputs = field(init=False)
    report: str | None = None
    gate_against: dict | None = None
    """The published run tonight's gate compared with (:func:`reelrank.quality.last_published`); None on a
    first night, when only the absolute checks ran."""

    def __post_init__(self) -> None:
        self.outputs = RunOutputs(self.spark, self.cfg, self.record.run_date, self.record.run_id)

    @property
    def db(self) -> str:
        return self.cfg.warehouse.database

    @property
    def work(self) -> str:
        return storage.join(self.cfg.data_dir, "runs", self.record.run_id)

    @classmethod
    def start(cls, spark: SparkSession, cfg: Config, run_date: date) -> RunContext:
        """A new attempt for ``run_date``; later stage jobs of that date pick it up."""
        ctx = cls(spark, cfg, RunRecord(run_date=run_date, config_hash=cfg.fingerprint(), source=cfg.source.kind))
        storage.makedirs(ctx.work)
        storage.write_text(_pointer(cfg, run_date), ctx.record.run_id)
        ctx.save_state()
        return ctx

    @staticmethod
    def resumable(cfg: Config, run_date: date) -> bool:
        """An unpublished attempt of ``run_date`` made with the same settings exists."""
        state = _read_state(cfg, run_date)
        if state is None:
            return False
        if state.get("published") or state.get("outputs_hash") != cfg.fingerprint(exclude=NOT_OUTPUTS):
            log.info("not resuming run %s: %s", state["run_id"],
                     "already published" if state.get("published") else "its config differs")
            return False
        return True

    @classmethod
    def resume(cls, spark: SparkSession, cfg: Config, run_date: date) -> RunContext:
        """The latest attempt for ``run_date`` (for a single stage job after earlier ones); a published one is
        refused, since a stage job must never change a published night."""
        state = _read_state(cfg, run_date)
        if state is None:
            raise RunFailed(f"no run started for {run_date} under {cfg.data_dir}: "
                            "run the ingest stage (or nightly) first")
        if state.get("published"):
            raise RunFailed(f"run {state['run_id']} of {run_date} is published, and a stage job never changes a "
                            f"published night: start a new attempt with `reelrank stage ingest --date {run_date}` "
                            f"(its publish stage replaces the night through the quality gate) or "
                            f"`reelrank nightly --date {run_date}`")
        rec = RunRecord(run_date=run_date, config_hash=state["config_hash"], source=state["source"],
                        run_id=state["run_id"], elapsed_before=float(state.get("elapsed", 0.0)))
        if state.get("started"):
            rec.started = datetime.fromisoformat(state["started"])
        rec.stages = [StageTimer(**s) for s in state["stages"]]
        return cls(spark, cfg, rec)

    def save_state(self, published: bool = False) -> None:
        state = {"published": published, "outputs_hash": self.cfg.fingerprint(exclude=NOT_OUTPUTS),
                 "run_id": self.record.run_id, "config_hash": self.record.config_hash, "source": self.record.source,
                 "started": self.record.started.isoformat(), "elapsed": round(self.record.seconds, 3),
                 "stages": [vars(s) for s in self.record.stages]}
        storage.write_text(storage.join(self.work, "state.json"), json.dumps(state, indent=1))

    def location(self, name: str) -> str:
        """Where dataset ``name`` of this run lives (a directory; a URI for warehouse tables)."""
        kind = DATASETS[name].kind
        if kind == "table":
            return self.outputs.location(name)
        if kind == "shards":
            return storage.join(self.work, "shards", name.removeprefix("shards_"))
        if kind == "model":
            return storage.join(self.work, "model")
        return storage.join(self.work, "frames", name)

    def complete(self, name: str) -> bool:
        """Whether dataset ``name`` was written by a stage that ended."""
        return storage.exists(storage.join(self.location(name), DONE))

    def stage_complete(self, name: str) -> bool:
        """Whether every output stage ``name`` declares is complete (a stage without outputs never is)."""
        outputs = stage(name).outputs
        return bool(outputs) and all(self.complete(n) for n in outputs)

    def table(self, name: str) -> DataFrame:
        """A warehouse table this run staged (read back from its directory), for the report and summary."""
        return self.spark.read.parquet(self.location(name))

    def stage_tables(self) -> list[str]:
        """The warehouse tables this run has staged and completed, in catalog order."""
        return [t for t in TABLES if self.complete(t)]


@dataclass(frozen=True)
class Shards:
    """A ``shards`` input: the folder Petastorm and torch read, and its rows for Spark."""

    path: str
    spark: SparkSession

    @property
    def frame(self) -> DataFrame:
        return self.spark.read.parquet(self.path)


@dataclass
class Result:
    """What a stage function returns: its outputs by name, and its row count and detail for the log line."""

    outputs: dict[str, Any]
    """Each declared output: a DataFrame (written by the runner unless the stage wrote it through
    :meth:`StageIO.write`), a ``frames`` output's ``{part: DataFrame}``, or the folder a ``shards``/``model``
    output was written to (:meth:`StageIO.folder`)."""
    rows: int
    detail: str = ""


class StageIO:
    """One stage's side of the catalog: its declared inputs read for it, and its declared outputs written, checked
    and marked complete. A stage writes through it mid-way when it must read an output back (a lineage cut) or
    fill a folder; everything else it returns in its :class:`Result`."""

    def __init__(self, ctx: RunContext, stage: Stage) -> None:
        self.ctx, self.stage = ctx, stage
        self.written: set[tuple[str, str | None]] = set()

    @property
    def spark(self) -> SparkSession:
        return self.ctx.spark

    @property
    def run_id(self) -> str:
        return self.ctx.record.run_id

    @property
    def run_date(self) -> date:
        return self.ctx.record.run_date

    def location(self, name: str) -> str:
        """Where dataset ``name`` of this run lives, for messages (any dataset: nothing is read or written)."""
        return self.ctx.location(name)

    def _check(self, name: str, allowed: tuple[str, ...], what: str) -> None:
        if name not in allowed:
            raise UndeclaredDataset(f"stage {self.stage.name} {what} {name!r}, which its declaration in "
                                    f"reelrank.stages.{self.stage.name} does not name "
                                    f"({what.split()[0]} declared: {', '.join(allowed) or 'none'})")

    def inputs(self) -> dict[str, Any]:
        """The stage function's keyword arguments: each declared input of this run (a DataFrame, ``{part:
        DataFrame}`` for ``frames``, :class:`Shards`, the model's folder) and each published table as
        ``published_<name>`` (the whole published view, None before the first night)."""
        spark, args = self.ctx.spark, dict[str, Any]()
        for name in self.stage.inputs:
            kind, path = DATASETS[name].kind, self.ctx.location(name)
            if kind == "frames":
                args[name] = {part: spark.read.parquet(storage.join(path, part))
                              for part in storage.listdir(path, dirs_only=True)}
            elif kind == "shards":
                args[name] = Shards(path, spark)
            elif kind == "model":
                args[name] = path
            else:
                args[name] = spark.read.parquet(path)
        for name in self.stage.published:
            args[f"published_{name}"] = read_table(spark, self.ctx.db, name)
        return args

    def folder(self, name: str) -> str:
        """The folder a ``shards`` or ``model`` output is written to by the stage itself (asking is not writing:
        the stage returns the folder in its :class:`Result`, and the runner checks it is there)."""
        self._check(name, self.stage.outputs, "writes")
        if DATASETS[name].kind not in ("shards", "model"):
            raise UndeclaredDataset(f"stage {self.stage.name}: {name} is a {DATASETS[name].kind}, written with "
                                    "StageIO.write or returned, not a folder")
        return self.ctx.location(name)

    def write(self, name: str, df: DataFrame, part: str | None = None) -> DataFrame:
        """Write output ``name`` (or one part of a ``frames`` output) now and return it read back (lineage cut)."""
        self._check(name, self.stage.outputs, "writes")
        self.written.add((name, part))
        if DATASETS[name].kind == "table":
            written = self.ctx.outputs.stage(name, df)
        else:
            path = self.ctx.location(name) + (f"/{part}" if part else "")
            df.write.mode("overwrite").parquet(path)
            written = self.ctx.spark.read.parquet(path)
        faults.hit(f"write.{self.stage.name}")  # a crash in the middle of the stage, after it wrote something
        return written

    def publish(self) -> dict[str, str]:
        """Swap every staged table of this run in at once (the publish stage); table -> location."""
        return self.ctx.outputs.publish(list(TABLES))

    def accept(self, outputs: dict[str, Any]) -> None:
        """After the stage function: it must have returned exactly its declared outputs; write the DataFrames it
        did not write itself, and check that each folder it names is the declared one and is there."""
        undeclared = sorted(set(outputs) - set(self.stage.outputs))
        if undeclared:
            raise UndeclaredDataset(f"stage {self.stage.name} returned {', '.join(undeclared)}, which its "
                                    f"declaration does not name (outputs declared: "
                                    f"{', '.join(self.stage.outputs) or 'none'})")
        missing = [n for n in self.stage.outputs if n not in outputs]
        if missing:
            raise UndeclaredDataset(f"stage {self.stage.name} ended without writing its declared output(s) "
                                    f"{', '.join(missing)}")
        for name in self.stage.outputs:
            value, target = outputs[name], self.ctx.location(name)
            if isinstance(value, str):
                if value != target:
                    raise UndeclaredDataset(f"stage {self.stage.name} returned {value} for {name}, which lives at "
                                            f"{target}")
                if not storage.isdir(target) and not storage.is_object_store(target):  # no empty folders there
                    raise RunFailed(f"stage {self.stage.name}: output {name} is missing at {target}")
            elif isinstance(value, dict):
                for part, df in value.items():
                    if (name, part) not in self.written:
                        self.write(name, df, part=part)
            elif (name, None) not in self.written:
                self.write(name, value)

    def start(self) -> None:
        """Before the stage function: its outputs are no longer complete; a ``frames`` output starts empty."""
        for name in self.stage.outputs:
            target = self.ctx.location(name)
            storage.remove(storage.join(target, DONE))
            if DATASETS[name].kind == "frames":
                storage.remove(target)

    def finish(self) -> None:
        """After the stage's outputs are written: mark each complete."""
        for name in self.stage.outputs:
            target = self.ctx.location(name)
            if not storage.isdir(target) and not storage.is_object_store(target):  # no empty folders there
                raise RunFailed(f"stage {self.stage.name}: output {name} is missing at {target}")
            storage.write_text(storage.join(target, DONE), f"{self.stage.name} {self.ctx.record.run_id}\n")


def _pointer(cfg: Config, run_date: date) -> str:
    return storage.join(cfg.data_dir, "runs", f"current-{run_date.isoformat()}")


def _read_state(cfg: Config, run_date: date) -> dict | None:
    """The state of the date's latest attempt, or None when there is none."""
    pointer = _pointer(cfg, run_date)
    if not storage.exists(pointer):
        return None
    state_file = storage.join(cfg.data_dir, "runs", storage.read_text(pointer).strip(), "state.json")
    return json.loads(storage.read_text(state_file)) if storage.exists(state_file) else None


def collect_work(cfg: Config, keep: str, grace_hours: float) -> list[str]:
    """Delete the work directories of runs other than ``keep`` untouched for ``grace_hours`` (an unpublished
    attempt older than that is no longer resumed), the date pointers left pointing at nothing, and Spark
    checkpoints as old; return what was removed."""
    cutoff = time.time() - grace_hours * 3600
    runs = storage.join(cfg.data_dir, "runs")
    removed = []
    if storage.isdir(runs):
        for name in storage.listdir(runs, dirs_only=True):
            work = storage.join(runs, name)
            if name != keep and _last_touched(work) < cutoff:
                storage.remove(work)
                removed.append(work)
        for name in storage.listdir(runs):
            pointer = storage.join(runs, name)
            target = storage.join(runs, storage.read_text(pointer).strip()) if name.startswith("current-") else None
            if target is not None and not storage.isdir(target):
                storage.remove(pointer)
                removed.append(pointer)
    checkpoints = storage.join(cfg.data_dir, "checkpoints")
    if storage.isdir(checkpoints):
        for name in storage.listdir(checkpoints, dirs_only=True):
            folder = storage.join(checkpoints, name)
            if _last_touched(folder) < cutoff:
                storage.remove(folder)
                removed.append(folder)
    return removed


def _last_touched(folder: str) -> float:
    """The newest modification time of ``folder`` and its direct children (a resumed run touches its state)."""
    return max([storage.mtime(folder)] + [storage.mtime(storage.join(folder, n)) for n in storage.listdir(folder)])
