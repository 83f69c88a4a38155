"""CLI behaviour that needs a fault injected inside the process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detector import cli
from detector.api import Detector


def test_unexpected_failure_on_one_file_does_not_end_the_scan(
    index_dir: Path, clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Detector.score_file

    def flaky(self: Detector, path: Path, **kw: float):  # type: ignore[no-untyped-def]
        if Path(path).name == "positive.mp4":
            raise RuntimeError("decoder exploded")
        return real(self, path, **kw)

    monkeypatch.setattr(Detector, "score_file", flaky)
    out = tmp_path / "r.jsonl"
    code = cli.main(["scan", str(clips["positive"]), str(clips["negative"]), "--index", str(index_dir),
                     "--out", str(out), "-q"])
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert code == 0 and len(lines) == 2
    assert lines[0]["verdict"] == "error" and lines[0]["error"] == "RuntimeError: decoder exploded"
    assert lines[1]["verdict"] == "pass"


def test_out_folder_is_made_and_a_bad_out_is_a_clear_error(index_dir: Path, clips: dict[str, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "new" / "r.jsonl"
    assert cli.main(["scan", str(clips["negative"]), "--index", str(index_dir), "--out", str(out), "-q"]) == 0
    assert len(out.read_text().splitlines()) == 1
    capsys.readouterr()
    (tmp_path / "file").write_text("x")
    code = cli.main(["scan", str(clips["negative"]), "--index", str(index_dir), "--out", str(tmp_path / "file" / "r.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(("FileExistsError:", "NotADirectoryError:")), err
