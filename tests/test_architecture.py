"""The shape of the package, checked: layers (import-linter), function length, exits, docstrings.

README "How the code is laid out" describes what these tests hold to.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "checkbox_dist"
MAX_LINES = 80
# Declarative tables may run longer than a function should; none is needed today.
LONG_OK: set[tuple[str, str]] = set()
ENTRY_POINTS = {"cli.py", "__main__.py"}
# The command line's per-command modules: each imports its command's implementation inside run(), when the
# command runs, so building the parser (`--help`) imports no torch (checkbox_dist/commands/__init__.py).
COMMANDS = PACKAGE / "commands"


def _functions():
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path, node


def test_import_layers_and_no_cycles():
    """`lint-imports` (pyproject.toml [tool.importlinter]) keeps the layer order and forbids cycles."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is part of the dev extra"
    proc = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "2 kept, 0 broken" in proc.stdout


def test_import_linter_catches_an_upward_import(tmp_path):
    """The contract is not vacuous: a data module importing the training loop breaks it."""
    copy = tmp_path / "checkbox_dist"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "data" / "upward.py").write_text("from checkbox_dist.train import loop  # noqa: F401\n")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    proc = subprocess.run([exe, "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert proc.returncode != 0
    assert "checkbox_dist.data.upward -> checkbox_dist.train.loop" in proc.stdout


def test_no_function_over_80_lines():
    long = [f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path, node in _functions()
            if node.end_lineno - node.lineno + 1 > MAX_LINES and (path.name, node.name) not in LONG_OK]
    assert not long, "functions over 80 lines:\n" + "\n".join(long)


def test_only_the_command_line_exits():
    calls = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in ENTRY_POINTS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("exit", "_exit") \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in ("sys", "os"):
                calls.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not calls, "library code must raise, not exit: " + ", ".join(calls)


DATED = re.compile(r"\b20\d\d-\d\d-\d\d\b")
MEASURED = re.compile(r"\b\d[\d,.]*\s?(img/s|images/s|ms per|% top-1)|\bVersion \d+ \(")


def test_docstrings_carry_no_lab_notes():
    """Docstrings say what code does; dates, results and version histories live in docs/. One test over every
    module of the package, listing every offender."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                       ast.ClassDef))]
        for node in nodes:
            doc = ast.get_docstring(node) or ""
            for kind, pattern in (("dated note", DATED), ("measurement", MEASURED)):
                for match in pattern.finditer(doc):
                    found.append(f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 1)} {kind}: {match.group(0)}")
    assert not found, "lab notes in docstrings:\n" + "\n".join(found)


def test_no_function_level_imports_of_the_package_below_the_cli():
    """Imports of checkbox_dist modules sit at the top of a module, where import-linter sees the layering;
    only the command line imports a command's modules when that command runs (fast --help)."""
    found = []
    for path, node in _functions():
        if path.name in ENTRY_POINTS or path.parent == COMMANDS or (path.parent == PACKAGE / "synth"
                                                                   and path.name == "__init__.py"):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("checkbox_dist"):
                found.append(f"{path.relative_to(REPO)}:{inner.lineno} {inner.module}")
            elif isinstance(inner, ast.Import) and any(a.name.startswith("checkbox_dist") for a in inner.names):
                found.append(f"{path.relative_to(REPO)}:{inner.lineno}")
    assert not found, "function-level imports of checkbox_dist:\n" + "\n".join(sorted(set(found)))
