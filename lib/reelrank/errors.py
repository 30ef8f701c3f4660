"""One line for any failure a user can cause or meet: a corrupt file, a Java exception, running out of memory.

Spark hands its failures to Python as a ``Py4JJavaError`` whose text is "An error occurred while calling
o62.getResult" followed by hundreds of lines of Java stack; the cause a user can act on (a file that is not
Parquet, a heap too small) sits at the end of the Java cause chain. Importing this module imports neither
pyspark nor py4j, so ``reelrank --help`` stays instant.
"""

from __future__ import annotations

import re
from typing import Any

from reelrank.warehouse import storage

JAVA_OOM = "java.lang.OutOfMemoryError"
_PYTHON_TRACEBACK = "Traceback (most recent call last)"
_MAX_CAUSES = 32
"""Java cause chains are short; a bound guards against a cycle."""
_PARQUET_PATH = [
    re.compile(r"(\S+) is not a Parquet file"),
    re.compile(r"Could not read footer for file:\s*(?:FileStatus\{path=)?([^\s;,}]+)"),
    re.compile(r"Encountered error while reading file\s+(\S+?)\.?(?:\s|$)"),
    re.compile(r"((?:file:|[a-z0-9]+://)?/\S+?\.parquet)\b"),
]
"""How Spark and parquet-mr name the file they could not read, most specific first."""


class CorruptFile(ValueError):
    """A file reelrank reads back (model, checkpoint, shard, published Parquet) is truncated, corrupt or not what
    it should be; the message names the file and what to do."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


def java_causes(e: BaseException) -> list[str]:
    """The Java exception chain of a ``Py4JJavaError`` as ``toString()`` texts, outermost first ([] for others)."""
    j = getattr(e, "java_exception", None)
    out: list[str] = []
    try:
        while j is not None and len(out) < _MAX_CAUSES:
            out.append(str(j.toString()))
            j = j.getCause()
    except Exception:  # the JVM is gone (killed for memory): keep what was read
        pass
    return out


def _java_error(e: BaseException) -> BaseException | None:
    """``e`` or the first exception it was raised from that carries a Java exception."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if getattr(cur, "java_exception", None) is not None:
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def _simple_class(text: str) -> str:
    """``org.apache.spark.SparkException: msg`` -> ``SparkException: msg``."""
    return re.sub(r"^(?:[a-z_$][\w$]*\.)+(?=[A-Z])", "", text)


def _python_error_line(traceback_text: str) -> str:
    """The exception line at the end of a Python worker's traceback (``ValueError: ...``)."""
    lines = [ln.strip() for ln in traceback_text.splitlines() if ln.strip()]
    return lines[-1] if lines else traceback_text.strip()


def java_message(e: BaseException) -> str:
    """The root cause of a Java failure in one line (``RuntimeException: ... is not a Parquet file...``), or the
    first line of ``e`` when it carries no Java exception."""
    causes = java_causes(e)
    if not causes:
        return first_line(str(e))
    root = causes[-1]
    if "PythonException" in root.split(":", 1)[0]:  # a Python worker failed: its own last line says why
        return _python_error_line(root)
    return first_line(_simple_class(root))


def first_line(text: str) -> str:
    """The first non-blank line of ``text``, stripped."""
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), text.strip())


def summary(e: BaseException) -> str:
    """``e`` in one line; a Java trace it carries or wraps (``RunFailed(f"... {e} ...")``) becomes its root cause."""
    java = _java_error(e)
    if java is e:
        return java_message(e)
    text = str(e)
    if java is not None and str(java) and str(java) in text:
        text = text.replace(str(java), java_message(java))
    if _PYTHON_TRACEBACK in text:  # pyspark's PythonException: a Python worker's whole traceback
        return _python_error_line(text)
    return first_line(text) or type(e).__name__


def error_type(e: BaseException) -> str:
    """The name of what failed: the Java root exception's simple class for a Java failure, else the Python type."""
    causes = java_causes(_java_error(e) or e)
    if causes:
        return _simple_class(causes[-1]).split(":", 1)[0]
    return type(e).__name__


def out_of_memory(e: BaseException) -> bool:
    """Whether ``e``, anything it was raised from or its Java cause chain ran out of memory (JVM or Python)."""
    cur: BaseException | None = e
    seen: set[int] = set()
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, MemoryError):
            return True
        for cause in java_causes(cur):
            if JAVA_OOM in cause or _python_error_line(cause).startswith("MemoryError"):
                return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def memory_advice(spark_cfg: Any) -> str:
    """Which setting to raise, from the config's ``[spark]`` section: the driver's memory (which is all of it in
    local mode), and on a cluster the executors' too."""
    advice = f"raise [spark] driver_memory (now {spark_cfg.driver_memory}) in the config"
    if not str(spark_cfg.master).startswith("local"):
        now = spark_cfg.extra.get("spark.executor.memory", "1g, Spark's default")
        advice += f", and for executors spark.executor.memory (now {now}) under [spark] extra"
    return advice


def unreadable_parquet(e: BaseException) -> CorruptFile | None:
    """The Parquet file a Spark failure could not read, named in its Java cause chain with why, or None."""
    causes = java_causes(_java_error(e) or e)
    for pattern in _PARQUET_PATH:
        for cause in reversed(causes):  # the innermost cause says it most plainly
            for line in cause.splitlines():
                if m := pattern.search(line):
                    raw = m.group(1).rstrip(".,;:)")
                    local = storage.local_path(raw)
                    path = str(local) if local is not None else raw
                    after = re.sub(r"^[\s.:]*(Details:?)?\s*", "", line[m.start(1) + len(raw):]).strip()
                    reason = re.sub(r"^is\s+", "", (after or _root_reason(causes, raw)).rstrip(" ."))
                    return CorruptFile(path, f"cannot read {path}: {reason or 'unreadable'}")
    return None


def _root_reason(causes: list[str], path: str) -> str:
    """The root Java cause's message without its class and without ``path``."""
    text = first_line(_simple_class(causes[-1])).replace(path, "")
    return re.sub(r"^\w*(?:Exception|Error):\s*", "", text).strip(" :")
