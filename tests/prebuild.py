"""Slow set-up that later tests need (``make package``'s tarball, the Airflow venv), started on a background thread
as soon as the run's tests are collected, so that it overlaps the tests before them instead of adding to the
suite's time. Each is a subprocess (pip, venv-pack): the thread only waits on it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_JOBS: dict[str, tuple[threading.Thread, dict[str, Any]]] = {}


def start(name: str, build: Callable[[], Any]) -> None:
    """Run ``build`` on a background thread, once per name."""
    if name in _JOBS:
        return
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = build()
        except BaseException as e:  # re-raised in the test that waits for it
            outcome["error"] = e

    thread = threading.Thread(target=run, name=f"prebuild-{name}", daemon=True)
    _JOBS[name] = (thread, outcome)
    thread.start()


def result(name: str, build: Callable[[], Any]) -> Any:
    """What ``build`` returned: the background run's when one was started, else run now."""
    if name not in _JOBS:
        start(name, build)
    thread, outcome = _JOBS[name]
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
