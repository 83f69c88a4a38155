"""The house's floors (issue 29, docs/architecture.md): each room of `detector/` imports only from
its own floor or the floors below, and `index/` imports nothing of `detector/`. Every import
statement counts: module level, inside functions, and `if TYPE_CHECKING:` ones."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: bottom to top; a module's floor is its room's (`detector/ROOM/...`) or its own name's
FLOORS: list[tuple[str, ...]] = [
    ("index", "detector.errors"),
    ("detector.media",),
    ("detector.embed",),
    ("detector.match",),
    ("detector.pipeline", "detector.shortlist", "detector.recording", "detector.api", "detector.client"),
    ("detector.runs",),
    ("detector.review",),
    ("detector.service",),
    ("detector.cli",),
]


def _modules() -> dict[str, Path]:
    out = {}
    for package in ("detector", "index"):
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _floor(module: str) -> int | None:
    for i, names in enumerate(FLOORS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return i
    return None


def _imports(path: Path, module: str, modules: dict[str, Path]) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name not in (module, "detector", "index"):
                found.add(name)
    return found


def test_every_module_has_a_floor() -> None:
    modules = _modules()
    homeless = sorted(m for m in modules if m not in ("detector", "index") and _floor(m) is None)
    assert not homeless, f"modules in no room of tests/test_rooms.py FLOORS (and docs/architecture.md): {homeless}"


def test_rooms_import_only_downwards() -> None:
    modules = _modules()
    upward = []
    for module, path in sorted(modules.items()):
        here = _floor(module)
        if here is None:  # the packages' own __init__ (the public face: lazy re-exports)
            continue
        for target in sorted(_imports(path, module, modules)):
            there = _floor(target)
            if there is not None and there > here:
                upward.append(f"{module} (floor {here}) imports {target} (floor {there})")
    assert not upward, "imports up the house (docs/architecture.md):\n" + "\n".join(upward)
