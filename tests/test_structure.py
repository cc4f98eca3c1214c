"""The shape of the code: small units in the three packages, and benchmarks that stand on their own.

The import layers themselves are checked by import-linter (`make lint` runs `lint-imports`, configured in
pyproject.toml); this keeps the sizes the architecture promises (docs/architecture.md).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("llama_unsloth", "postprocessors", "recipes")
MAX_MODULE, MAX_CLASS, MAX_FUNCTION = 600, 400, 80


def _sources(*folders: str) -> List[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_no_module_class_or_function_is_oversized() -> None:
    too_big = []
    for path in _sources(*PACKAGES):
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(ROOT)
        if text.count("\n") + 1 > MAX_MODULE:
            too_big.append(f"{name}: {text.count(chr(10)) + 1} lines (module limit {MAX_MODULE})")
        for node in ast.walk(ast.parse(text)):
            size = (getattr(node, "end_lineno", 0) or 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, ast.ClassDef) and size > MAX_CLASS:
                too_big.append(f"{name}:{node.name}: {size} lines (class limit {MAX_CLASS})")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and size > MAX_FUNCTION:
                too_big.append(f"{name}:{node.name}: {size} lines (function limit {MAX_FUNCTION})")
    assert not too_big, "split by job, not in halves:\n" + "\n".join(too_big)


def test_benchmarks_import_nothing_from_tests() -> None:
    offenders = []
    for path in _sources("benchmarks"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n == "tests" or n.startswith("tests.")]
    assert not offenders, "benchmarks must not depend on the test suite:\n" + "\n".join(offenders)


def test_the_layer_contract_names_every_package_of_llama_unsloth() -> None:
    import tomllib

    layers = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"][
        0
    ]["layers"]
    named = {part.strip() for layer in layers for part in layer.replace(":", "|").split("|")}
    modules = {
        "llama_unsloth." + p.stem if p.is_file() else "llama_unsloth." + p.name
        for p in (ROOT / "llama_unsloth").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").is_file())
    }
    # The package's own __init__ (the public names) and data folders sit outside the layers.
    assert modules - named == set(), f"add these to [tool.importlinter] layers: {sorted(modules - named)}"


def _import_graph() -> dict:
    """Module -> modules it imports (module level, inside functions and under TYPE_CHECKING alike)."""
    modules = {}
    for path in _sources(*PACKAGES):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict = {name: set() for name in modules}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def test_no_import_cycle_among_modules() -> None:
    # import-linter's layers keep packages in order; this also catches a cycle inside one package.
    graph, cycles = _import_graph(), []
    state: dict = {}

    def visit(node: str, trail: List[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(
                    " -> ".join(trail[trail.index(nxt) :] + [node, nxt]) if nxt in trail else f"{node} -> {nxt}"
                )
            elif nxt not in state:
                visit(nxt, trail + [node])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycles, "import cycles (imports inside functions count too):\n" + "\n".join(cycles)


def test_test_file_names_are_unique() -> None:
    # The tests folders have no __init__.py: pytest imports each test file by its base name, so two files of one
    # name in different folders stop collection ("import file mismatch").
    seen: dict = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        seen.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    clashes = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not clashes, f"rename one of each: {clashes}"
