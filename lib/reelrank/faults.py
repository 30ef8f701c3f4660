"""Failpoints: named places where a test (or a soak) can make a run die, to prove what a crash there leaves behind.

Off unless ``$REELRANK_FAILPOINTS`` names them, as ``NAME[#N]=ACTION`` separated by commas: the N-th time (default
the first) a process passes ``NAME``, ``kill`` sends itself SIGKILL (no cleanup runs, like a killed container) and
``raise`` raises :class:`InjectedFault`, which no ``except Exception`` catches (the same, in-process). Task
failpoints fire inside Spark tasks on their first attempt only (a task that fails once), through a local property
the driver sets. The idea is FreeBSD's fail(9) and TiKV's fail-rs.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "REELRANK_FAILPOINTS"
TASK_PROPERTY = "reelrank.failpoints"
"""Spark local property carrying ``$REELRANK_FAILPOINTS`` from the driver to its tasks."""

_hits: Counter[str] = Counter()


class InjectedFault(BaseException):
    """A failpoint fired (``raise``): a BaseException, so the run's failure handling is skipped as in a kill."""


def _parse(spec: str) -> dict[str, tuple[int, str]]:
    points = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, action = item.partition("=")
        name, _, nth = name.partition("#")
        if action not in ("kill", "raise"):
            raise ValueError(f"{ENV}: {item!r}: the action must be kill or raise")
        points[name] = (int(nth or 1), action)
    return points


def _fire(name: str, action: str) -> None:
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise InjectedFault(f"failpoint {name}")


def hit(name: str) -> None:
    """Pass failpoint ``name`` in the driver: fire when ``$REELRANK_FAILPOINTS`` arms it for this pass."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    points = _parse(spec)
    if name not in points:
        return
    _hits[name] += 1
    nth, action = points[name]
    if _hits[name] == nth:
        _fire(name, action)


def reset() -> None:
    """Forget how often each failpoint was passed (between in-process runs of a test)."""
    _hits.clear()


def propagate(spark) -> None:  # noqa: ANN001 - a SparkSession; this module imports no pyspark
    """Hand ``$REELRANK_FAILPOINTS`` to the tasks this thread starts (see :func:`task_hit`)."""
    spark.sparkContext.setLocalProperty(TASK_PROPERTY, os.environ.get(ENV) or None)


def task_hit(name: str) -> None:
    """Pass failpoint ``name`` inside a Spark task: the task's first attempt on partition 0 fails when armed, so
    Spark's retry (``local[N,2]`` or a cluster's ``spark.task.maxFailures``) must recover it."""
    from pyspark import TaskContext

    tc = TaskContext.get()
    if tc is None:
        return
    spec = tc.getLocalProperty(TASK_PROPERTY)
    if not spec or name not in _parse(spec) or tc.attemptNumber() > 0 or tc.partitionId() != 0:
        return
    raise RuntimeError(f"failpoint {name}: injected failure of task attempt 0 (partition 0)")
