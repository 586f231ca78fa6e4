"""The layout's rules, checked on the source: no import cycles among runner's modules (imports
inside functions count too) nor between its rooms (runner/engine/, runner/suite.py, ...), no module over about 450 lines and no function over 60 lines
unless it says why.

An exception is written in the code itself, where a reader meets it: a module's docstring
containing "Longer than" (saying why it is not split), a function whose first body line is a
comment starting "# long:" (saying why).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "runner"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imports(name: str, path: Path) -> set[str]:
    """Every runner module this one imports, anywhere in it (functions included), plus the
    packages whose __init__ Python runs to import them."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    targets = set()
    for mod in found:
        if mod in MODULES:
            targets.add(mod)
            targets.update(p for p in _parents(mod) if p in MODULES)
    targets.discard(name)
    return targets


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walker_sees_a_cycle():
    # the check itself can fail: a two-module loop and a three-module loop are found
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert _cycles(graph) == [["a", "b"], ["c", "d", "e"]]


def test_imports_inside_functions_are_seen(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from runner.errors import ExitClass\n    import runner.records\n")
    assert {"runner.errors", "runner.records", "runner"} <= _imports("runner.zz", src)


def test_no_import_cycles():
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    assert _cycles(graph) == []


def _room(module: str) -> str:
    """runner.engine.session -> runner.engine; runner.suite -> runner.suite."""
    return ".".join(module.split(".")[:2])


def test_no_import_cycles_between_rooms():
    # a room (runner/engine/, runner/suite.py, ...) builds on others, never on one built on it
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        for target in _imports(name, path):
            if _room(target) not in (_room(name), "runner"):
                graph.setdefault(_room(name), set()).add(_room(target))
    assert "runner.lang" in graph["runner.engine"]  # the graph is really built
    assert _cycles(graph) == []


def _module_docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


def test_no_module_over_the_size_rule_without_a_reason():
    too_long = []
    for name, path in MODULES.items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES and "Longer than" not in _module_docstring(path):
            too_long.append(f"{name}: {lines} lines")
    assert too_long == []


def _long_functions(path: Path, root: Path = ROOT) -> list[str]:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = node.end_lineno - node.lineno + 1
        if length <= MAX_FUNCTION_LINES:
            continue
        body_start = node.body[0].lineno
        if isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant):
            body_start = node.body[0].end_lineno + 1  # after the docstring
        said = any(lines[i].strip().startswith("# long:") for i in range(node.lineno, body_start))
        if not said:
            out.append(f"{path.relative_to(root)}:{node.lineno} {node.name}: {length} lines")
    return out


def test_no_function_over_the_size_rule_without_a_reason():
    assert [f for path in MODULES.values() for f in _long_functions(path)] == []


def test_the_size_check_sees_a_long_function(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    src = tmp_path / "m.py"
    src.write_text(f"def long():\n{body}\n\ndef explained():\n    # long: a table\n{body}")
    assert _long_functions(src, tmp_path) == [f"m.py:1 long: {MAX_FUNCTION_LINES + 1} lines"]
