"""What the warehouse shows, written down at publish time so that a reader can answer without the metastore.

The metastore decides what readers see (:mod:`reelrank.warehouse.publishing`: ``published_runs`` names the run shown for
each date). Asking it costs a JVM. So every publish ends by writing ``_published.json`` in the database's
folder: the run shown for each date, and for each table its columns and the folder of every published version.
A reader trusts the file only while it is current, and can tell without the metastore: the file also lists the
folders under ``published_runs``, and every flip first writes a new such folder. Any folder it does not list
(a publish under way, or one that died before writing the file) makes the file stale, and the reader says so
(``reelrank query`` then answers "publish under way"; ``--spark`` asks the metastore).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime

from reelrank.warehouse import storage

log = logging.getLogger(__name__)

FILE = "_published.json"
FORMAT = 1
"""Bumped when the file's layout changes; a reader takes a file of another format for a stale one."""


@dataclass(frozen=True)
class Manifest:
    """The published state of one database, as of the last publish."""

    database: str
    published: dict[str, str]
    """ISO run date -> the run shown for it."""
    tables: dict[str, dict]
    """Table -> ``{"columns": [...], "versions": {ISO date: folder}}``; ``published_runs`` included."""
    pointer_dirs: list[str]
    """Folders under ``published_runs`` when the file was written, ``run_date=D/<run_id>``, sorted."""

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "database": self.database, "published": self.published,
                           "tables": self.tables, "pointer_dirs": self.pointer_dirs,
                           "written_at": datetime.now(UTC).isoformat(timespec="seconds")}, indent=1, sort_keys=True)


def pointer_dirs(db_location: str, pointer: str) -> list[str]:
    """The ``run_date=D/<run_id>`` folders under the pointer table's folder, sorted."""
    root = storage.join(db_location, pointer)
    if not storage.isdir(root):
        return []
    return sorted(f"{d}/{r}" for d in storage.listdir(root, dirs_only=True) if d.startswith("run_date=")
                  for r in storage.listdir(storage.join(root, d), dirs_only=True))


def read(db_location: str, pointer: str) -> Manifest | None:
    """The manifest in ``db_location`` when it is current (no flip since it was written); else None."""
    path = storage.join(db_location, FILE)
    try:
        if not storage.exists(path):
            return None
        raw = json.loads(storage.read_text(path))
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            log.debug("%s is not a manifest of format %s", path, FORMAT)
            return None
        m = Manifest(raw["database"], dict(raw["published"]), dict(raw["tables"]), list(raw["pointer_dirs"]))
        now = pointer_dirs(db_location, pointer)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        log.debug("cannot read %s: %s", path, e)
        return None
    if now != m.pointer_dirs:
        log.debug("%s is stale: published_runs holds %s, the file lists %s", path, now, m.pointer_dirs)
        return None
    return m


def remove(db_location: str) -> None:
    """Withdraw the manifest (readers find none current until the next publish writes one)."""
    storage.remove(storage.join(db_location, FILE))


def write(db_location: str, manifest: Manifest) -> None:
    """Replace the manifest whole (readers see the old file or the new one)."""
    storage.write_text(storage.join(db_location, FILE), manifest.to_json())


def updated(base: Manifest, run_date: date, run_id: str, folders: dict[str, str],
            columns: dict[str, list[str]], now_dirs: list[str]) -> Manifest:
    """``base`` with ``run_date`` turned to ``run_id``, whose tables (the pointer included) are in ``folders``
    with their ``columns``; a table this run did not write is no longer shown for that date (as in the view)."""
    day = run_date.isoformat()
    versions: dict[str, dict[str, str]] = {
        t: {d: f for d, f in spec["versions"].items() if d != day} for t, spec in base.tables.items()}
    cols: dict[str, list[str]] = {t: list(spec["columns"]) for t, spec in base.tables.items()}
    for table, folder in folders.items():
        versions.setdefault(table, {})[day] = folder
        cols[table] = columns[table]
    tables = {t: {"columns": cols[t], "versions": v} for t, v in versions.items()}
    return Manifest(base.database, {**base.published, day: run_id},
                    {t: spec for t, spec in tables.items() if spec["versions"]}, now_dirs)
