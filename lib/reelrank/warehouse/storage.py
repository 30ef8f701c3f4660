"""Every path under the data dir, local or remote: ``/abs/path``, ``file://``, ``hdfs://``, ``s3a://``, ``gs://``.

Spark reads and writes DataFrames at these locations itself; this module does the driver's small files (state,
pointers, models, reports) through fsspec, so a data dir on HDFS or an object store works like a local one.
Locations are strings throughout: ``pathlib`` would turn ``hdfs://nn/x`` into ``hdfs:/nn/x`` (issue 12).
Local locations are kept as plain absolute paths (what torch, matplotlib and Spark all accept).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import tempfile
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

import fsspec

REMOTE_SCHEMES = ("hdfs", "s3a", "s3", "gs", "gcs", "abfs", "abfss", "wasb", "wasbs", "viewfs")
"""Schemes Spark and fsspec both know (with their Hadoop connector or fsspec plugin installed)."""

_FSSPEC_PROTOCOL = {"s3a": "s3", "gcs": "gs", "wasb": "abfs", "wasbs": "abfs", "abfss": "abfs"}
"""Hadoop spells some schemes its own way; fsspec's names for them."""


class StorageError(RuntimeError):
    """A location cannot be used (unknown scheme, or its filesystem is not installed)."""


def scheme(location: str) -> str:
    """``""`` for a local path, else the URI's scheme (``file`` URIs are resolved to local paths first)."""
    parsed = urlparse(location)
    return parsed.scheme if len(parsed.scheme) > 1 else ""  # "C:" is a drive, not a scheme


def resolve(location: str | os.PathLike) -> str:
    """A canonical location: a local path (or ``file://`` URI) made absolute with ``~`` and ``$VAR`` expanded;
    a remote URI kept as written, without a trailing slash."""
    text = os.path.expandvars(os.fspath(location))
    kind = scheme(text)
    if kind == "file":
        text = unquote(urlparse(text).path)
        kind = ""
    if not kind:
        return str(Path(text).expanduser().resolve())
    if kind not in REMOTE_SCHEMES:
        raise StorageError(f"unsupported storage location {text!r}: expected a local path or a "
                           f"file://, {', '.join(s + '://' for s in REMOTE_SCHEMES)} URI")
    return text.rstrip("/")


def is_local(location: str) -> bool:
    return scheme(location) in ("", "file")


def is_object_store(location: str) -> bool:
    """S3, GCS, Azure: no real directories (an empty "folder" does not exist)."""
    return scheme(location) in ("s3a", "s3", "gs", "gcs", "abfs", "abfss", "wasb", "wasbs")


def local_path(location: str) -> Path | None:
    """The local path of ``location``, or None when it is remote."""
    if not is_local(location):
        return None
    return Path(unquote(urlparse(location).path) if scheme(location) == "file" else location)


def local_state_dir(data_dir: str) -> Path:
    """A driver-local directory for what must be on local disk (Spark's scratch, an embedded Derby metastore, the
    SQL server's pid and log files): the data dir when it is local, else one per data dir under
    ``$REELRANK_LOCAL_DIR`` (default the system temp dir)."""
    local = local_path(data_dir)
    if local is not None:
        return local
    digest = hashlib.sha256(data_dir.encode()).hexdigest()[:12]
    return Path(os.environ.get("REELRANK_LOCAL_DIR", tempfile.gettempdir())) / f"reelrank-{digest}"


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for paths and URIs alike."""
    return posixpath.join(base.rstrip("/") or "/", *parts) if parts else base


def name(location: str) -> str:
    return posixpath.basename(location.rstrip("/"))


def parent(location: str) -> str:
    return posixpath.dirname(location.rstrip("/"))


def url(location: str) -> str:
    """A URL with a scheme, as Petastorm and Hadoop want it: ``file:///abs`` for local paths."""
    path = local_path(location)
    return path.resolve().as_uri() if path is not None else location


def _fs(location: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem of ``location`` (host, port and account read from the URI) and the path within it."""
    path = local_path(location)
    if path is not None:
        return fsspec.filesystem("file"), str(path)
    kind = scheme(location)
    uri = _FSSPEC_PROTOCOL.get(kind, kind) + location[len(kind):]
    try:
        return fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError, OSError) as e:  # no plugin (s3fs, gcsfs), or no Hadoop runtime for hdfs://
        raise StorageError(f"cannot open {location}: the {kind}:// filesystem is not available to Python ({e})") from e


def exists(location: str) -> bool:
    fs, p = _fs(location)
    return fs.exists(p)


def isdir(location: str) -> bool:
    fs, p = _fs(location)
    return fs.isdir(p)


def makedirs(location: str) -> str:
    fs, p = _fs(location)
    fs.makedirs(p, exist_ok=True)
    return location


def read_bytes(location: str) -> bytes:
    fs, p = _fs(location)
    with fs.open(p, "rb") as f:
        return f.read()


def read_text(location: str) -> str:
    return read_bytes(location).decode("utf-8")


def write_bytes(location: str, data: bytes) -> str:
    """Write ``data`` whole: readers see the old file or the new one (a rename where the store has one;
    object stores make a single PUT visible at once)."""
    fs, p = _fs(location)
    fs.makedirs(posixpath.dirname(p), exist_ok=True)
    if is_object_store(location):
        fs.pipe_file(p, data)
        return location
    tmp = f"{p}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open(tmp, "wb") as f:
        f.write(data)
    if local_path(location) is not None:
        os.replace(tmp, p)  # atomic on POSIX, also over an existing file
    else:
        if fs.exists(p):
            fs.rm(p)
        fs.mv(tmp, p)
    return location


def write_text(location: str, text: str) -> str:
    return write_bytes(location, text.encode("utf-8"))


def remove(location: str) -> None:
    """Delete a file or a whole directory; nothing happens when it is not there."""
    fs, p = _fs(location)
    if fs.exists(p):
        fs.rm(p, recursive=True)


def listdir(location: str, dirs_only: bool = False) -> list[str]:
    """The names (not paths) in directory ``location``, sorted; [] when it does not exist."""
    fs, p = _fs(location)
    if not fs.isdir(p):
        return []
    entries = fs.ls(p, detail=True)
    return sorted(posixpath.basename(e["name"].rstrip("/")) for e in entries
                  if not dirs_only or e["type"] == "directory")


def mtime(location: str) -> float:
    """Seconds since the epoch of the last change of ``location``."""
    fs, p = _fs(location)
    modified = fs.modified(p)
    return modified.timestamp()
