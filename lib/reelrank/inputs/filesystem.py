"""Files a source reads, on any Hadoop file system, through the JVM: listing, opening, the first lines, small files.

Every failure becomes a one-line :class:`SourceError` naming the file (a missing or unreadable file, a corrupt
Parquet footer), never a Java trace: each JVM call goes through :func:`java_call`.
"""

from __future__ import annotations

import logging
import os
import re
import typing
import urllib.parse

from py4j.protocol import Py4JJavaError
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

MAX_CAUSES = 20
"""How deep a Java exception's causes are followed for its root message."""


class SourceError(ValueError):
    """The source cannot be read at all: missing, unreadable or empty file or folder, missing column, unknown kind."""


def display_name(uri: str) -> str:
    """``file:///a%20b/x.csv`` -> ``/a b/x.csv``; other schemes keep their URI."""
    text = urllib.parse.unquote(uri)
    return re.sub(r"^file:/+", "/", text)



def hadoop_fs(spark: SparkSession, path: str):  # noqa: ANN202 - a py4j Hadoop FileSystem and Path
    jvm = spark.sparkContext._jvm
    assert jvm is not None  # set when the first SparkContext starts, never reset (pyspark asserts the same)
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hpath


def local_path(path: str) -> str | None:
    """The local file system path of ``path`` (a plain path or a ``file:`` URI); None for other schemes."""
    scheme = urllib.parse.urlsplit(path).scheme
    if scheme == "file":
        return display_name(path)
    return None if scheme else path


def check_readable(path: str, folder: bool = False) -> None:
    """A local file (or folder, to list) this process may read; checked before Spark opens it, which would
    fail with a Java trace. Other file systems are checked where the file is opened (:func:`java_call`)."""
    local = local_path(path)
    if local is not None and not os.access(local, os.R_OK | (os.X_OK if folder else 0)):
        raise SourceError(f"cannot read {display_name(path)}: permission denied")


def java_call(path: str, call: typing.Callable[[], typing.Any]) -> typing.Any:
    """``call()``; a JVM error (unreadable or corrupt file) becomes a one-line :class:`SourceError` naming ``path``."""
    try:
        return call()
    except (Py4JJavaError, AnalysisException) as e:
        log.debug("reading %s failed", path, exc_info=True)
        raise SourceError(f"cannot read {display_name(path)}: {java_message(e)}") from None


def java_message(e: Exception) -> str:
    """The first line of the message of the Java exception's root cause (no trace, no Spark job wrapper)."""
    if isinstance(e, Py4JJavaError):
        cause = e.java_exception
        for _ in range(MAX_CAUSES):
            deeper = cause.getCause()
            if deeper is None:
                break
            cause = deeper
        text = str(cause.getMessage() or cause.toString())
    else:
        text = str(getattr(e, "desc", None) or e)
    return (text.strip().splitlines() or ["unknown error"])[0]


def require_folder(spark: SparkSession, folder: str, what: str) -> str:
    if not folder:
        raise SourceError(f"{what}: source.input is empty (set it to the folder to read)")
    fs, hpath = hadoop_fs(spark, folder)
    if not java_call(folder, lambda: fs.exists(hpath) and fs.getFileStatus(hpath).isDirectory()):
        raise SourceError(f"{what}: folder {folder} not found")
    check_readable(folder, folder=True)
    return folder.rstrip("/")


def require_file(spark: SparkSession, path: str, what: str) -> str:
    fs, hpath = hadoop_fs(spark, path)
    if not java_call(path, lambda: fs.exists(hpath) and fs.getFileStatus(hpath).isFile()):
        raise SourceError(f"{what}: file {path} not found")
    check_readable(path)
    return path


COMPRESSED = ("", ".gz", ".bz2", ".deflate")
"""Endings after a data file's own that Hadoop decompresses on read: a folder may hold ``part-0.csv.gz``."""


def list_files(spark: SparkSession, path: str, suffix: str | None, what: str) -> list[str]:
    """The file itself, the matches of a glob, or a folder's visible files (ending in ``suffix``, compressed or
    not)."""
    if not path:
        raise SourceError(f"{what}: source.input is empty (set it to a file or folder)")
    fs, hpath = hadoop_fs(spark, path)
    if any(ch in path for ch in "*?["):
        statuses = java_call(path, lambda: fs.globStatus(hpath)) or []
        found = sorted(s.getPath().toString() for s in statuses if s.isFile())
        if not found:
            raise SourceError(f"{what}: no files match {path}")
    elif not java_call(path, lambda: fs.exists(hpath)):
        raise SourceError(f"{what}: {path} not found")
    elif java_call(path, lambda: fs.getFileStatus(hpath).isFile()):
        found = [path]
    else:
        check_readable(path, folder=True)
        found = sorted(
            s.getPath().toString()
            for s in java_call(path, lambda: fs.listStatus(hpath))
            if s.isFile()
            and not s.getPath().getName().startswith((".", "_"))
            and (suffix is None or s.getPath().getName().endswith(tuple(suffix + c for c in COMPRESSED)))
        )
        if not found:
            raise SourceError(f"{what}: no {suffix or ''} files in folder {path}".replace("  ", " "))
    for f in found:
        check_readable(f)
    return found


def open_stream(spark: SparkSession, path: str):  # noqa: ANN202 - a py4j java.io.InputStream
    fs, hpath = hadoop_fs(spark, path)
    stream = java_call(path, lambda: fs.open(hpath))
    jvm = spark.sparkContext._jvm
    assert jvm is not None  # set when the first SparkContext starts, never reset (pyspark asserts the same)
    codec = jvm.org.apache.hadoop.io.compress.CompressionCodecFactory(
        spark.sparkContext._jsc.hadoopConfiguration()
    ).getCodec(hpath)
    return java_call(path, lambda: codec.createInputStream(stream)) if codec is not None else stream


def head(spark: SparkSession, path: str, n: int) -> list[str]:
    """The first ``n`` lines (fewer when the file is shorter; none when it is empty), read on the driver."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None  # set when the first SparkContext starts, never reset (pyspark asserts the same)
    reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(open_stream(spark, path), "UTF-8"))
    try:
        lines: list[str] = []
        while len(lines) < n and (line := java_call(path, reader.readLine)) is not None:
            lines.append(str(line))
        return lines
    finally:
        reader.close()


def read_bytes(spark: SparkSession, path: str) -> bytes:
    """A small file's bytes, read on the driver (item metadata)."""
    stream = open_stream(spark, path)
    try:
        jvm = spark.sparkContext._jvm
        assert jvm is not None  # set when the first SparkContext starts, never reset (pyspark asserts the same)
        return bytes(java_call(path, lambda: jvm.org.apache.commons.io.IOUtils.toByteArray(stream)))
    finally:
        stream.close()


def read_parquet(spark: SparkSession, *paths: str) -> DataFrame:
    """``spark.read.parquet``, with an unreadable or corrupt file (its footer is read here) named in one line."""
    return typing.cast(DataFrame, java_call(paths[0] if len(paths) == 1 else ", ".join(paths),
                                             lambda: spark.read.parquet(*paths)))
