"""No import circles in `detector/` and `index/` (issue 29): the module graph has no strongly
connected set of two or more modules.

The graph is read from the source with `ast`, not by importing, so it sees every import a module
can run:
- module-level imports, imports inside functions and methods, and `if TYPE_CHECKING:` imports
  (a type-only import is still a dependency: it runs under mypy and decides the layering);
- relative imports (`from . import x`, `from ..y import z`), resolved against the importing module;
- `from pkg import name`: an edge to the submodule `pkg.name` when there is one, else to `pkg`;
  `import a.b.c`: an edge to the deepest module of that path there is.
Not counted: the implicit import of a package's `__init__` by its submodules (every submodule has
it; counting it would forbid a package from re-exporting its own submodules' names), imports of
anything outside these packages, and a module importing itself.

The modules are found by walking the folders, so the test needs no change when modules move
between subpackages.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("detector", "index")

#: (importing module, imported module) -> the line numbers of the imports that make the edge
Graph = dict[str, dict[str, list[int]]]


def find_modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the packages (a package is its __init__)."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _deepest(name: str, modules: dict[str, Path]) -> str | None:
    """The module of `name` itself, else of its longest dotted prefix that is a module."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
              modules: dict[str, Path]) -> Iterator[str]:
    """The modules of `modules` that one import statement of `module` imports."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if (target := _deepest(alias.name, modules)) is not None:
                yield target
        return
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        anchor = package[: len(package) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    for alias in node.names:
        if f"{base}.{alias.name}" in modules:  # `from pkg import submodule`
            yield f"{base}.{alias.name}"
        elif (target := _deepest(base, modules)) is not None:
            yield target


def import_graph(modules: dict[str, Path]) -> Graph:
    """Every module's imports of other modules in `modules`, with their line numbers."""
    graph: Graph = {m: {} for m in modules}
    for module, path in modules.items():  # ast.walk: breadth first, so a target's lines may be out of order
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in set(_imported(node, module, path.name == "__init__.py", modules)) - {module}:
                    graph[module].setdefault(target, []).append(node.lineno)
    return graph


def circles(graph: Graph) -> list[list[str]]:
    """The strongly connected sets of two or more modules (Tarjan), each sorted, in name order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
            members = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                members.append(w)
                if w == v:
                    break
            if len(members) > 1:
                found.append(sorted(members))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def describe(circle: list[str], graph: Graph, modules: dict[str, Path], root: Path) -> str:
    """One circle: its modules, and each import inside it with file and line."""
    inside = set(circle)
    lines = [f"{len(circle)} modules: {', '.join(circle)}"]
    for m in circle:
        for target, linenos in sorted(graph[m].items()):
            if target in inside:
                where = ", ".join(f"{modules[m].relative_to(root)}:{n}" for n in sorted(linenos))
                lines.append(f"    {m} -> {target}  ({where})")
    return "\n".join(lines)


def test_no_import_circles() -> None:
    modules = find_modules(ROOT)
    assert "detector.api" in modules and "index.store" in modules, "the walk found no modules"
    graph = import_graph(modules)
    found = circles(graph)
    assert not found, f"{len(found)} import circle(s):\n" + "\n".join(
        describe(c, graph, modules, ROOT) for c in found)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_the_walk_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Each kind of import the rule counts closes a circle in a made-up package; the kinds it does
    not count close none."""
    _write(tmp_path, {
        "detector/__init__.py": "from detector.top import Top\n",  # re-export: no circle with `top`
        "detector/top.py": "from detector import low\n",
        "detector/low.py": "def f():\n    from detector.sub import deep\n",  # function level
        "detector/sub/__init__.py": "",
        "detector/sub/deep.py": ("from typing import TYPE_CHECKING\n"
                                 "if TYPE_CHECKING:\n    from .. import top\n"),  # relative, type-only
        "detector/a.py": "import detector.b\n",
        "detector/b.py": "from .a import x\n",
        "detector/solo.py": "import os\nimport numpy\nfrom detector import solo\n",
        "index/__init__.py": "",
        "index/one.py": "from index.two import y\n",
        "index/two.py": "import index.one as one\n",
    })
    modules = find_modules(tmp_path)
    graph = import_graph(modules)
    assert graph["detector.top"] == {"detector.low": [1]}  # `from pkg import submodule`: the submodule
    assert graph["detector.solo"] == {}
    assert circles(graph) == [
        ["detector.a", "detector.b"],
        ["detector.low", "detector.sub.deep", "detector.top"],
        ["index.one", "index.two"],
    ]
    text = describe(["index.one", "index.two"], graph, modules, tmp_path)
    assert "index.one -> index.two  (index/one.py:1)" in text
