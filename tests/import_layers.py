"""The package floors as a checkable rule: parse every module's imports (ast) and report what breaks them.

Floors, bottom to top (``DESIGN.md``, "Layers"): ``basics`` → ``tasks`` → ``masks`` → ``mtl`` →
``experiments`` and ``commands`` → the top-level scripts. A module may import from its own floor or
below. Reported:

- an import that goes up a floor;
- an import cycle between modules, or between packages (whatever the floors);
- a project import inside a function (or any block below module level), unless :data:`LAZY_IMPORTS`
  names it with the reason: such an import usually hides a cycle or an upward import.

Imports under ``if TYPE_CHECKING:`` count like any other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

FLOORS: dict[str, int] = {"basics": 0, "tasks": 1, "masks": 2, "mtl": 3, "experiments": 4, "commands": 4,
                          "train": 5, "construct_mtl_mask": 5}

# (importing module, imported module) -> why it is imported inside a function
LAZY_IMPORTS: dict[tuple[str, str], str] = {
    ("commands.train", "mtl.run"): "imported once the options are read, so --help and bad flags answer without torch",
    ("masks.auto_classes", "masks.compact_config"): "registration imports transformers only when it is asked for",
    ("masks.auto_classes", "masks.compact_model"): "the compacted model code loads only when a model is built",
}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted
    target: str  # imported project module, dotted
    line: int
    nested: bool  # inside a function or block, not at module level


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_files(root: Path, floors: dict[str, int] = FLOORS) -> list[Path]:
    """Every Python file of the floors' packages and top-level scripts under ``root``."""
    files = []
    for name in floors:
        if (root / name).is_dir():
            files += sorted((root / name).rglob("*.py"))
        elif (root / f"{name}.py").is_file():
            files.append(root / f"{name}.py")
    return files


def _resolve(source: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = source.split(".") if is_package else source.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(root: Path, path: Path, modules: set[str], floors: dict[str, int] = FLOORS) -> list[Import]:
    """The project imports of one file: each resolved to the deepest project module it names."""
    source = module_name(root, path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    top_level = {id(n) for n in tree.body}
    for node in tree.body:  # imports under a module-level `if`/`try` (TYPE_CHECKING, fallbacks) are module level
        if isinstance(node, (ast.If, ast.Try)):
            top_level |= {id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
    found = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(source, path.name == "__init__.py", node)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for target in dict.fromkeys(targets):
            if target.split(".")[0] in floors:
                found.append(Import(source, target, node.lineno, id(node) not in top_level))
    return found


def cycles(edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

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
            if len(component) > 1 or v in graph[v]:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def violations(root: Path, floors: dict[str, int] = FLOORS,
               lazy: dict[tuple[str, str], str] = LAZY_IMPORTS) -> list[str]:
    """One line per broken rule under ``root`` (empty: the layering holds)."""
    files = project_files(root, floors)
    modules = {module_name(root, f) for f in files}
    found = [imp for f in files for imp in imports_of(root, f, modules, floors)]
    out = []
    for imp in found:
        src, dst = floors[imp.source.split(".")[0]], floors[imp.target.split(".")[0]]
        if dst > src:
            out.append(f"{imp.source}:{imp.line} imports {imp.target}: up a floor "
                       f"({imp.source.split('.')[0]} is below {imp.target.split('.')[0]})")
        if imp.nested and (imp.source, imp.target) not in lazy and imp.source != imp.target:
            out.append(f"{imp.source}:{imp.line} imports {imp.target} inside a function (move it to the top)")
    edges = {(i.source, i.target) for i in found if i.target in modules and i.source != i.target}
    for component in cycles(edges):
        out.append(f"import cycle: {' <-> '.join(component)}")
    packages = {(i.source.split(".")[0], i.target.split(".")[0]) for i in found
                if i.source.split(".")[0] != i.target.split(".")[0]}
    for component in cycles(packages):
        out.append(f"package cycle: {' <-> '.join(component)}")
    return out


def package_graph(root: Path, floors: dict[str, int] = FLOORS) -> dict[str, set[str]]:
    """Package -> packages it imports (for the docs), from every module's imports."""
    files = project_files(root, floors)
    modules = {module_name(root, f) for f in files}
    graph: dict[str, set[str]] = {}
    for f in files:
        for imp in imports_of(root, f, modules, floors):
            a, b = imp.source.split(".")[0], imp.target.split(".")[0]
            if a != b:
                graph.setdefault(a, set()).add(b)
    return graph
