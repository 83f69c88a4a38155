"""The house rules the CLI split (issue 19) keeps: a light `--help`, small modules and functions."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import MAMORI

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "faiss", "cv2", "av", "open_clip", "timm")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def test_parser_and_packages_import_nothing_heavy() -> None:
    code = (
        "import sys, index, detector, detector.cli\n"
        "detector.cli.build_parser()\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.split() == [], f"imported by `import index` + building the parser: {proc.stdout}"


def test_help_exits_0() -> None:
    for args in (["--help"], ["scan", "--help"], ["index", "build", "--help"]):
        proc = subprocess.run([*MAMORI, *args], capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0 and proc.stdout.startswith("usage: mamori"), (args, proc.stderr)


def test_lazy_names_resolve() -> None:
    import detector
    import index

    for package in (detector, index):
        assert all(getattr(package, name) is not None for name in package.__all__)
        assert set(package.__all__) <= set(dir(package))
        with pytest.raises(AttributeError):
            _ = package.no_such_name


def test_help_defaults_match_their_homes() -> None:
    """common.py copies these so that building the parser imports no torch or PyAV."""
    from detector.cli import common, serve_cmd
    from detector.embed.backbones import DEFAULT_BACKBONE
    from detector.embed.inference import PRECISIONS
    from detector.media.frames import DEFAULT_FPS, DEFAULT_MAX_FRAMES
    from detector.media.limits import Limits

    assert (common.DEFAULT_BACKBONE, common.PRECISIONS) == (DEFAULT_BACKBONE, PRECISIONS)
    assert (common.DEFAULT_FPS, common.DEFAULT_MAX_FRAMES) == (DEFAULT_FPS, DEFAULT_MAX_FRAMES)
    assert serve_cmd.LIMIT_DEFAULTS == dataclasses.asdict(Limits())


def _oversized() -> list[str]:
    found = []
    for path in sorted([*ROOT.joinpath("detector").rglob("*.py"), *ROOT.joinpath("index").rglob("*.py")]):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT)
        if (n := len(text.splitlines())) > MAX_MODULE_LINES:
            found.append(f"{rel}: {n} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    found.append(f"{rel}:{node.lineno} {node.name}(): {size} lines")
    return found


def test_cli_package_is_within_the_size_limits() -> None:
    assert not [x for x in _oversized() if x.startswith("detector/cli/")]


def test_modules_and_functions_are_small() -> None:
    found = _oversized()
    assert not found, f"{len(found)} over {MAX_MODULE_LINES} lines (module) or {MAX_FUNCTION_LINES} (function):\n" + (
        "\n".join(found)
    )


def test_index_never_imports_detector() -> None:
    """The dependency runs one way (issue 19, item 3): `detector` (the query path) uses `index`
    (storage, building, calibration), never the reverse."""
    found = []
    for path in sorted(ROOT.joinpath("index").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] == "detector"]
    assert not found, found


def test_rescan_path_imports_no_model_code() -> None:
    """`mamori rescan` scores stored vectors: loading it must not pay for PyTorch (~1.5 s a run)."""
    code = ("import sys, detector.runs.rescan, detector.runs.rescan_engines, detector.cli.rescan_cmd, detector.runs.batch\n"
            "print(' '.join(m for m in ('torch', 'open_clip', 'timm') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.split() == [], f"imported by the rescan path: {proc.stdout}"


def test_rescan_workers_default_to_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from detector.cli import rescan_cmd
    from detector.cli.app import build_parser

    assert build_parser().parse_args(["rescan", "S", "--index", "I"]).workers is None  # resolved when run
    for cores, want in ((0, 1), (1, 1), (2, 2), (64, rescan_cmd.DEFAULT_MAX_WORKERS)):
        monkeypatch.setattr(rescan_cmd.os, "sched_getaffinity", lambda pid, c=cores: set(range(c)))
        assert rescan_cmd.default_workers() == want
        assert rescan_cmd.default_workers("ray") == 1
