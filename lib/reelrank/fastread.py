"""Answers to a person's questions read with DuckDB straight from the warehouse's Parquet files, without starting
Spark (a JVM per question costs 15-40 s): ``reelrank runs``, ``reelrank query`` and ``reelrank where``.

Only where the answer is certain to be Spark's:

- the files' place is certain and local: an embedded (Derby) metastore, which lives in the data dir beside the
  warehouse it describes, and a local data dir;
- the published tables are read through the manifest written at publish time (:mod:`reelrank.manifest`), and
  only while it is current; the ``runs`` table (not versioned) from its folder;
- the SQL is a SELECT whose every part DuckDB and Spark read the same way (:func:`not_portable`); DuckDB is set
  to Spark's NULL order and to NULL on division by zero.

Anything else, or any error, returns None and the caller asks Spark. Reading also works while a nightly runs (it
holds the metastore, not the files): Spark writes each Parquet file aside and renames it into place, and a
replaced version's files are kept for ``[warehouse] grace_hours``.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, date, datetime
from pathlib import Path

from reelrank import manifest, storage
from reelrank.config import Config

log = logging.getLogger(__name__)

POINTER = "published_runs"  # warehouse.POINTER, without importing pyspark

# What DuckDB and Spark SQL (3.5, ANSI off) compute alike, as DuckDB's parser names it. Left out on purpose:
# concat (NULL handling), hash, rand, date_format and the other pattern-based functions, round (Spark rounds the
# double's decimal text half up: 1.005 -> 1.01; DuckDB the binary value: 1.0), floor/ceil (BIGINT in Spark, DOUBLE
# in DuckDB), upper (ß), string casts (float text differs), array indexing (0- vs 1-based). Kept, though they
# differ at an edge no query here meets: split_part with an empty delimiter, chr above 255.
PORTABLE_FUNCTIONS = frozenset({
    "count", "count_star", "sum", "avg", "min", "max", "stddev", "stddev_samp", "variance", "var_samp",
    "+", "-", "*", "/", "%", "~~", "!~~", "abs", "greatest", "least", "lower", "length", "trim", "split_part", "chr",
    "row_number", "rank", "dense_rank",
})
PORTABLE_CLASSES = frozenset({
    "COLUMN_REF", "CONSTANT", "COMPARISON", "CONJUNCTION", "FUNCTION", "OPERATOR", "CASE", "CAST", "STAR",
    "WINDOW", "BETWEEN", "SUBQUERY", "TYPE",
})
PORTABLE_OPERATORS = frozenset({
    "OPERATOR_NOT", "OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL", "OPERATOR_COALESCE", "COMPARE_IN",
    "COMPARE_NOT_IN", "ARRAY_EXTRACT",
})
CAST_TARGETS = frozenset({"DATE", "DOUBLE"})
"""Casts both engines do alike (to an integer DuckDB rounds and Spark truncates; DECIMAL's default scale differs)."""
JOINS = frozenset({("INNER", "REGULAR"), ("LEFT", "REGULAR"), ("RIGHT", "REGULAR"), ("FULL", "REGULAR"),
                   ("INNER", "CROSS")})
"""(join_type, ref_type) of joins both read alike; not DuckDB's POSITIONAL, ASOF, SEMI/ANTI spellings."""
RESULT_TYPES = ("BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE", "DECIMAL",
                "VARCHAR", "DATE", "TIMESTAMP", "MAP")
"""Result column types printed alike (a date difference is an INTERVAL in DuckDB, a day count in Spark)."""


def _db_folder(cfg: Config) -> Path | None:
    local = storage.local_path(cfg.data_dir)
    if cfg.warehouse.metastore != "derby" or local is None:
        return None
    return Path(local) / "warehouse" / f"{cfg.warehouse.database}.db"


def table_files(cfg: Config, table: str) -> str | None:
    """The glob of an unpartitioned managed table's Parquet files, or None when it cannot be read directly."""
    folder = _db_folder(cfg)
    if folder is None or not any((folder / table).glob("*.parquet")):
        return None
    return str(folder / table / "*.parquet")


def _single_quoted_removed(sql: str) -> str:
    return re.sub(r"'(?:[^'\\]|\\.|'')*'", "''", sql)


def not_portable(sql: str) -> str | None:
    """Why DuckDB might answer ``sql`` differently from Spark SQL, or None when it reads it the same way."""
    import duckdb

    if '"' in _single_quoted_removed(sql):
        return 'a double-quoted string (a string to Spark, a column name to DuckDB)'
    if "\\" in sql:
        return "a backslash (an escape in Spark's strings, a character in DuckDB's)"
    if "''" in sql:
        return "two single quotes (an escaped quote to DuckDB, two adjacent strings to Spark)"
    with duckdb.connect() as con:
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0])
    if tree.get("error") or len(tree.get("statements", [])) != 1:
        return tree.get("error_message") or "not one SELECT statement"
    problems: list[str] = []

    def walk(node) -> None:
        if isinstance(node, list):
            for v in node:
                walk(v)
            return
        if not isinstance(node, dict):
            return
        kind = node.get("class")
        if node.get("type") == "JOIN" and ((node.get("join_type"), node.get("ref_type")) not in JOINS
                                           or node.get("using_columns")):
            problems.append(f"a {node.get('ref_type', '').lower()} {node.get('join_type', '').lower()} join"
                            f"{' with USING' if node.get('using_columns') else ''}")
        if node.get("sample") or node.get("qualify"):
            problems.append("SAMPLE or QUALIFY")
        if node.get("type") == "DISTINCT_MODIFIER" and node.get("distinct_on_targets"):
            problems.append("DISTINCT ON")
        if node.get("type") == "LIMIT_MODIFIER" and node.get("limit_type", "ROW_COUNT") != "ROW_COUNT":
            problems.append("a LIMIT that is not a row count")
        if node.get("type") not in (None, "ORDER_MODIFIER", "LIMIT_MODIFIER", "DISTINCT_MODIFIER") \
                and str(node.get("type")).endswith("_MODIFIER"):
            problems.append(str(node.get("type")).lower())
        if node.get("setop_type") not in (None, "UNION", "EXCEPT", "INTERSECT"):
            problems.append(str(node.get("setop_type")).lower())
        if kind == "STAR" and (node.get("exclude_list") or node.get("replace_list") or node.get("rename_list")
                               or node.get("columns") or node.get("expr")):
            problems.append("a * with EXCLUDE/REPLACE/COLUMNS")
        if kind is not None:
            if kind not in PORTABLE_CLASSES:
                problems.append(kind.lower())
            elif kind == "FUNCTION" or kind == "WINDOW":
                if node.get("function_name") not in PORTABLE_FUNCTIONS:
                    problems.append(f"{node.get('function_name')}()")
            elif kind == "OPERATOR" and node.get("type") not in PORTABLE_OPERATORS:
                problems.append(node.get("type", "").lower())
            elif kind == "OPERATOR" and node.get("type") == "ARRAY_EXTRACT":
                index = (node.get("children") or [{}, {}])[-1]
                if index.get("class") != "CONSTANT" or index.get("literal", {}).get("kind") != "STRING":
                    problems.append("an index that is not a map key")
            elif kind == "CAST" and (node.get("try_cast") or
                                     node.get("type_expr", {}).get("type_name", "").upper() not in CAST_TARGETS):
                problems.append("TRY_CAST or a cast to other than DATE or DOUBLE")
        for v in node.values():
            walk(v)

    walk(tree["statements"])
    node = tree["statements"][0]["node"]
    while node and node.get("type") == "SET_OPERATION_NODE":  # the result's names are the first SELECT's
        node = node.get("left") or (node.get("children") or [None])[0]
    if not node:
        return "a statement whose result names cannot be told"
    if any(not (e.get("alias") or _named_alike(e, top=True) and _lower_case(sql, e))
           for e in node.get("select_list", [])):
        problems.append("an expression without a name (Spark and DuckDB name some differently: add AS name)")
    return ", ".join(sorted(set(problems))) or None


def _lower_case(sql: str, expr: dict) -> bool:
    """An unaliased expression (not a plain column) is written in lower case: Spark names ``AVG(Score)``
    ``avg(score)``, DuckDB keeps the spelling."""
    if expr.get("class") in ("COLUMN_REF", "STAR"):
        return True
    at, n = expr.get("query_location"), expr.get("query_location_length")
    if not isinstance(at, int) or not isinstance(n, int) or at + n > len(sql):
        return False
    text = re.sub(r"\bDISTINCT\b", "distinct", sql[at:at + n])  # Spark names count(DISTINCT x) so too
    return text == text.lower()


def _named_alike(expr: dict, top: bool = False) -> bool:
    """Whether Spark and DuckDB give an unaliased select item the same name (after :func:`spark_name`): a column,
    ``*``, or functions of plain columns and numbers, e.g. ``count(*)``, ``avg(value)``, ``round(max(s), 1)``."""
    kind = expr.get("class")
    if kind == "STAR":
        return True
    if kind == "COLUMN_REF":
        return top or len(expr.get("column_names", [])) == 1  # Spark drops a qualifier only from a whole column
    if kind == "CONSTANT":
        return not top and expr.get("literal", {}).get("kind") == "INTEGER"  # 1.0E3 is (x * 1000.0) in DuckDB
    if kind != "FUNCTION" or expr.get("function_name") not in PORTABLE_FUNCTIONS or expr.get("filter"):
        return False
    args = [a.get("expression", {}) for a in expr.get("arguments", [])]
    if expr.get("is_operator") and len(args) != 2:  # unary minus: "(- x)" in Spark, "-x" in DuckDB
        return False
    return all(_named_alike(a) for a in args)


def spark_name(duckdb_name: str) -> str:
    """The name Spark gives the select item DuckDB named ``duckdb_name`` (for those :func:`_named_alike` admits)."""
    return duckdb_name.replace("count_star()", "count(1)").replace('"', "")


def _view_sql(name: str, columns: list[str], versions: dict[str, str]) -> str:
    """One table as readers see it: every published date's folder, the date as ``run_date``."""
    parts = []
    for day, folder in sorted(versions.items()):
        path = storage.local_path(folder)
        if path is None or not any(Path(path).glob("*.parquet")):
            raise FileNotFoundError(f"{name}: no Parquet files in {folder}")
        date.fromisoformat(day)  # the date is pasted into SQL: it must be one
        glob = str(Path(path) / "*.parquet").replace("'", "''")
        parts.append(f"SELECT *, DATE '{day}' AS run_date FROM read_parquet('{glob}', union_by_name = true, "
                     f"hive_partitioning = false)")
    cols = ", ".join(f'"{c}"' for c in columns)
    return f"SELECT {cols} FROM ({' UNION ALL BY NAME '.join(parts)})"


def _connect(cfg: Config, sql: str):
    """A DuckDB connection with a view per warehouse table ``sql`` names; None when it cannot have them."""
    import duckdb

    folder = _db_folder(cfg)
    if folder is None:
        return None
    db = cfg.warehouse.database
    current = manifest.read(str(folder), POINTER)
    named = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", sql.lower()))
    con = duckdb.connect()
    try:
        con.execute("SET default_null_order = 'nulls_first_on_asc_last_on_desc'")  # Spark's
        con.execute("SET ieee_floating_point_ops = false")
        con.execute("SET error_on_division_by_zero = false")  # x / 0 is NULL, as in Spark
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"CREATE SCHEMA {db}")
        runs = table_files(cfg, "runs")
        if "runs" in named and runs is not None:
            con.execute(f"CREATE VIEW {db}.runs AS SELECT * FROM read_parquet('{runs}', union_by_name = true)")
        if current is not None and current.database == db:
            for table, spec in current.tables.items():
                if table.lower() in named:
                    con.execute(f"CREATE VIEW {db}.{table} AS {_view_sql(table, spec['columns'], spec['versions'])}")
        return con
    except Exception:
        con.close()
        raise


def _python(value):
    """A DuckDB value as pyspark's Row gives it: a timestamp as naive local time. Spark writes instants (INT96,
    which DuckDB reads as naive UTC, or UTC-adjusted micros, which it reads with a zone)."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone().replace(tzinfo=None)
    return value


def query(cfg: Config, sql: str) -> tuple[list[str], list[tuple]] | None:
    """``sql``'s columns and rows when DuckDB can answer it as Spark would; None when Spark must."""
    try:
        folder = _db_folder(cfg)
        if folder is None:
            return None
        if (why := not_portable(sql)) is not None:
            log.debug("asking Spark: the query has %s", why)
            return None
        con = _connect(cfg, sql)
        if con is None:
            return None
        with con:
            result = con.execute(sql)
            odd = [f"{d[0]} {d[1]}" for d in result.description if not str(d[1]).startswith(RESULT_TYPES)]
            if odd:
                log.debug("asking Spark: result column(s) of a type printed differently: %s", ", ".join(odd))
                return None
            columns = [spark_name(d[0]) for d in result.description]
            rows = [tuple(_python(v) for v in r) for r in result.fetchall()]
        return columns, rows
    except Exception as e:  # a table the manifest does not know, a file mid-collection: Spark answers instead
        log.debug("DuckDB could not answer (%s); asking Spark", e)
        return None


def where(cfg: Config, table: str, day: date | None) -> str | None:
    """The folder readers of ``table`` see for ``day`` (default the latest published date), from a current
    manifest; None when it cannot tell (Spark then answers, or explains why there is none)."""
    try:
        folder = _db_folder(cfg)
        current = manifest.read(str(folder), POINTER) if folder is not None else None
        if table == POINTER or current is None or current.database != cfg.warehouse.database \
                or not current.published:
            return None
        key = (day or max(date.fromisoformat(d) for d in current.published)).isoformat()
        found = current.tables.get(table, {}).get("versions", {}).get(key)
        return None if found is None else str(storage.local_path(found) or found)
    except Exception as e:  # an odd manifest: Spark answers instead
        log.debug("the manifest could not answer (%s); asking Spark", e)
        return None


def runs_sql(database: str, limit: int) -> str:
    """Every run's latest row (as ``reelrank runs`` shows it), newest first; SQL that DuckDB and Spark read alike."""
    return (f"SELECT run_id, run_date, status, seconds, stage_rows['score'] AS recommendations, "
            f"published_model, split_part(error, chr(10), 1) AS error FROM (SELECT *, row_number() OVER (PARTITION "
            f"BY run_id ORDER BY recorded_at DESC NULLS LAST, finished_at DESC NULLS LAST) AS _latest FROM "
            f"{database}.runs) WHERE _latest = 1 ORDER BY started_at DESC LIMIT {int(limit)}")
