"""Shared by the benchmark scripts: where the datasets are, a Markdown table, and appending a dated section to a
results file."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path

DATASETS = Path(os.environ.get("REELRANK_DATASETS", Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))
"""The shared datasets (ml-100k, ml-100k-stratified): ``$REELRANK_DATASETS``, else ``../shared/datasets``."""


def markdown(rows: list[dict]) -> str:
    """``rows`` (dicts with the same keys) as a Markdown table."""
    cols = list(rows[0]) if rows else []
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows])


def append_result(path: Path, title: str, body: str) -> None:
    """Append ``## <UTC time> · <machine, CPUs, load> · title`` and ``body`` to the results file ``path``."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(f"\n## {stamp} · {machine} · {title}\n\n{body}\n")
