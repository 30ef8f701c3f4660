"""Module structure: no import cycles inside reelrank, nobody imports the CLI, and --help never loads Spark."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "lib" / "reelrank"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(node: ast.stmt, importer: str) -> list[str]:
    """The reelrank modules an import statement names (``from reelrank import x`` names ``reelrank.x``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:  # relative: resolve against the importer's package
            package = importer if MODULES.get(importer, Path()).name == "__init__.py" else importer.rpartition(".")[0]
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
            target = f"{base}.{node.module}" if node.module else base
        else:
            target = node.module or ""
        subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
        return [target] + subs
    return []


def _top_level_imports(tree: ast.Module) -> list[ast.stmt]:
    """Import statements that run when the module is imported: the body, and inside top-level if/try blocks
    (but not ``if TYPE_CHECKING:``)."""
    out, todo = [], list(tree.body)
    while todo:
        node = todo.pop(0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                todo += node.body + node.orelse
        elif isinstance(node, ast.Try):
            todo += node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body]
    return out


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[name] = {t for node in _top_level_imports(tree) for t in _imported(node, name)
                       if t in MODULES and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_graph_sees_the_known_imports():
    graph = _graph()
    assert "reelrank.config" in graph["reelrank.cli.bootstrap"]
    assert {"reelrank.cli.bootstrap", "reelrank.warehouse.sqlserver"} <= graph["reelrank.cli.main"]
    assert "reelrank.columns" in graph["reelrank.inputs.sources"]  # `from reelrank import columns as C`


LONG_MODULE = 420
"""About 400 lines (issue 29): a module longer than this says why in its docstring ("about N lines")."""


def test_long_modules_say_why_in_their_docstring():
    long = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    unexplained = [f"{name} ({n} lines)" for name, n in sorted(long.items()) if n > LONG_MODULE
                   and not re.search(r"about \d+ lines", ast.get_docstring(ast.parse(MODULES[name].read_text())) or "")]
    assert not unexplained, "split these modules or say why in their docstring: " + ", ".join(unexplained)


def test_the_layout_has_its_sub_packages():
    """Warehouse, input sources, command line, stages, candidate sources and training are sub-packages."""
    packages = {name for name, path in MODULES.items() if path.name == "__init__.py"} - {"reelrank"}
    assert packages == {f"reelrank.{p}" for p in ("candidates", "cli", "inputs", "stages", "training", "warehouse")}


def test_cycle_detection_works():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_reelrank_modules():
    cycles = _cycles(_graph())
    assert not cycles, "module-level import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_nothing_imports_the_cli():
    """reelrank.cli.main is the top of the tree: helpers come from reelrank.cli.bootstrap (any import, lazy too)."""
    offenders = []
    for folder in ("lib", "jobs", "bench"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path in (PACKAGE / "cli" / "main.py", PACKAGE / "cli" / "__main__.py"):
                continue
            importer = _module_name(path) if PACKAGE in path.parents else ""
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and "reelrank.cli.main" in _imported(node, importer):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, f"import reelrank.cli.main (use reelrank.cli.bootstrap): {', '.join(offenders)}"


HELP_SNIPPET = r"""
import contextlib, io, sys
from reelrank.cli import main as cli

for argv in [["--help"], ["--version"], ["stage", "--help"], ["stage", "ingest", "--help"], ["nightly", "--help"],
             ["tune", "--help"], ["query", "--help"], ["runs", "--help"], ["where", "--help"], ["report", "--help"],
             ["spark-conf", "--help"], ["serve-sql", "--help"]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            rc = cli.main(argv)
        except SystemExit as e:
            rc = e.code
    assert rc in (0, None), (argv, rc)
    text = out.getvalue()
    if argv == ["--version"]:
        import reelrank
        assert text.strip() == f"reelrank {reelrank.__version__}", text
    else:
        assert text.startswith("usage: reelrank"), (argv, text[:200])
for argv in [[], ["bogus"], ["stage"], ["stage", "bogus"], ["nightly", "--source", "excel"]]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            rc = cli.main(argv)
        except SystemExit as e:
            rc = e.code
    assert rc == 2, (argv, rc)
heavy = sorted(m for m in ("pyspark", "py4j", "torch", "pandas", "reelrank.pipeline") if m in sys.modules)
assert not heavy, heavy
print("ok")
"""


def _python(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "lib"), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120)


def test_help_and_version_do_not_load_spark():
    r = _python("-c", HELP_SNIPPET)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout[-2000:] + r.stderr[-3000:]


def test_module_entry_help_and_version():
    r = _python("-m", "reelrank.cli", "stage", "ingest", "--help")
    assert r.returncode == 0 and "ingest" in r.stdout and "--resume" in r.stdout, r.stderr
    r = _python("-m", "reelrank.cli", "--version")
    assert r.returncode == 0 and r.stdout.startswith("reelrank "), r.stderr


def test_cli_choices_come_from_one_place():
    import argparse
    import typing

    from reelrank import catalog
    from reelrank.cli import main as cli
    from reelrank.inputs.settings import SourceKind

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    stage = {a.dest: a for a in sub.choices["stage"]._actions}
    assert tuple(stage["stage"].choices) == catalog.STAGE_NAMES
    assert tuple(stage["source"].choices) == typing.get_args(SourceKind)
    assert set(sub.choices) == {
        "nightly", "stage", "query", "runs", "where", "report", "spark-conf", "serve-sql", "tune"
    }


def test_every_job_has_a_thin_entry():
    """jobs/NAME.py exists for each job in bootstrap.JOBS (every stage, nightly, tune) and runs that job."""
    from reelrank.cli.bootstrap import JOBS

    files = {p.stem: p for p in (REPO / "jobs").glob("*.py") if p.name != "__init__.py"}
    assert set(files) == set(JOBS)
    for name, path in files.items():
        text = path.read_text()
        assert "from reelrank.cli.bootstrap import run_job" in text and f'run_job("{name}")' in text, path
        assert len(text.splitlines()) <= 10, path
