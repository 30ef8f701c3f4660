"""One process at a time on a data directory: an exclusive ``flock`` on ``reelrank.lock`` in its local state dir.

``reelrank nightly`` and ``reelrank stage`` hold it for their whole life, and so does every command that starts
Spark on an embedded Derby metastore (which admits one process); a second one stops at once with a line naming
the holder, before Spark starts. The kernel drops the lock when its process dies, SIGKILL included, so a killed
run never leaves a stale lock behind; the file's JSON (pid, command, run date, start time) only describes the
holder. Also here: who holds an embedded Derby metastore that some other program (the SQL server) booted.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from reelrank.warehouse import storage

LOCK_FILE = "reelrank.lock"
METASTORE_DIR = "metastore_db"
"""The embedded Derby metastore's folder in the local state dir."""
DERBY_LOCK_FILE = "dbex.lck"
"""Derby holds a POSIX (``fcntl``) lock on this file in its database folder while the database is booted."""
READ_RETRIES = 20
READ_PAUSE_S = 0.05
"""A holder writes its JSON just after taking the lock: a reader that comes in between waits up to ~1 s for it."""


@dataclass(frozen=True)
class Holder:
    """The process holding a data directory, as it described itself."""

    pid: int | None
    command: str
    run_date: str | None
    started_at: str | None

    def describe(self) -> str:
        """``pid 1234 (reelrank nightly --date 2026-12-02, started 2026-12-02 17:03:11 UTC)``."""
        facts = [self.command]
        if self.run_date and self.run_date not in self.command:
            facts.append(f"run date {self.run_date}")
        if self.started_at:
            facts.append(f"started {self.started_at}")
        who = f"pid {self.pid}" if self.pid else "another process"
        return f"{who} ({', '.join(f for f in facts if f)})"


class DataDirBusy(RuntimeError):
    """Another process holds the data directory."""

    def __init__(self, data_dir: str, holder: Holder) -> None:
        super().__init__(f"{data_dir} is in use by {holder.describe()}")
        self.data_dir = data_dir
        self.holder = holder


def lock_path(data_dir: str) -> Path:
    return storage.local_state_dir(data_dir) / LOCK_FILE


def command_line() -> str:
    """This process's command as a person typed it: ``reelrank nightly --date 2026-12-02``."""
    return " ".join([Path(sys.argv[0]).name or "python", *sys.argv[1:]])


def _read_holder(fd: int) -> Holder:
    for _ in range(READ_RETRIES):
        try:
            info = json.loads(os.pread(fd, 1 << 16, 0).decode() or "null")
        except (ValueError, OSError):
            info = None
        if isinstance(info, dict):
            return Holder(info.get("pid"), str(info.get("command", "")), info.get("run_date"), info.get("started_at"))
        time.sleep(READ_PAUSE_S)
    return Holder(None, "it did not say which", None, None)


@contextmanager
def hold(data_dir: str, run_date: date | None = None, command: str | None = None) -> Iterator[Path]:
    """Hold ``data_dir`` exclusively for the ``with`` block, or raise :class:`DataDirBusy` at once."""
    path = lock_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by the JVM or other children (PEP 446)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirBusy(data_dir, _read_holder(fd)) from None
        me = {"pid": os.getpid(), "command": command or command_line(),
              "run_date": run_date.isoformat() if run_date else None,
              "started_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def holder(data_dir: str) -> Holder | None:
    """Who holds ``data_dir`` now (another process, or another ``hold`` in this one), or None when it is free."""
    path = lock_path(data_dir)
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        return None
    finally:
        os.close(fd)


_FLOCK = "hhqqi4x"
"""Linux ``struct flock`` (type, whence, start, len, pid) on 64-bit machines."""


def derby_holder(metastore_dir: Path) -> Holder | None:
    """The process that has booted the embedded Derby database in ``metastore_dir``, or None.

    Asks the kernel (``F_GETLK``) who holds Derby's lock on ``dbex.lck``, which takes no lock itself: probing
    with a real lock would make a Derby booting at that instant fail.
    """
    path = metastore_dir / DERBY_LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        query = struct.pack(_FLOCK, fcntl.F_RDLCK, os.SEEK_SET, 0, 0, 0)
        kind, _, _, _, pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, query))
    except (OSError, struct.error):  # not Linux: let Derby say so itself
        return None
    finally:
        os.close(fd)
    if kind == fcntl.F_UNLCK:
        return None
    return Holder(pid or None, _process_name(pid), None, None)


_MAX_COMMAND_CHARS = 160


def is_orphan(pid: int) -> bool:
    """Whether ``pid``'s parent is gone (re-parented to init): the JVM of a killed reelrank, which exits by itself
    once it notices, releasing the metastore within seconds."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        return int(re.search(r"^PPid:\s*(\d+)", status, re.M).group(1)) <= 1  # type: ignore[union-attr]
    except (OSError, AttributeError, ValueError):
        return False


def _process_name(pid: int) -> str:
    """What a Derby holder is: the SQL server, or the JVM of some process's Spark session (named after its
    parent's command line), from ``/proc``."""
    args = _cmdline(pid)
    if any("HiveThriftServer2" in a for a in args):
        return "the SQL server, reelrank serve-sql"
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        ppid = int(re.search(r"^PPid:\s*(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
    except (OSError, AttributeError, ValueError):
        ppid = 0
    parent = _cmdline(ppid) if ppid > 1 else []
    name = Path(args[0]).name if args else "a program"
    if parent:
        text = " ".join([Path(parent[0]).name, *parent[1:]])
        return f"{name}, the Spark JVM of pid {ppid}: {text[:_MAX_COMMAND_CHARS]}"
    return f"{name} with the metastore open"


def _cmdline(pid: int) -> list[str]:
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []
