"""CLI behaviour that needs a fault injected inside the process."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from detector import cli
from detector.api import Detector
from detector.match.results import Result
from detector.runs.engines import score_one


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


@pytest.mark.parametrize("fault", ["key", "cv2"])
def test_any_failure_on_one_file_is_its_error_line(
    fault: str, index_dir: Path, clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cv2

    real = Detector.score_file

    def buggy(self: Detector, path: Path, **kw: float):  # type: ignore[no-untyped-def]
        if Path(path).name == "positive.mp4":
            raise KeyError("missing") if fault == "key" else cv2.error("OpenCV(4) resize: !ssize.empty()")
        return real(self, path, **kw)

    monkeypatch.setattr(Detector, "score_file", buggy)
    out = tmp_path / "r.jsonl"
    code = cli.main(["scan", str(clips["positive"]), str(clips["negative"]), "--index", str(index_dir),
                     "--out", str(out), "-q", "--workers", "2"])
    lines = {Path(x["path"]).name: x for x in map(json.loads, out.read_text().splitlines())}
    assert code == 0 and len(lines) == 2  # the batch went on; an error is not a flag
    bad = lines["positive.mp4"]
    assert bad["verdict"] == "error" and bad["error_kind"] == "internal" and bad["sha256"]
    assert bad["error"].startswith("KeyError: " if fault == "key" else "error: ")
    assert lines["negative.mp4"]["verdict"] == "pass" and lines["negative.mp4"]["error_kind"] is None


def test_a_fatal_unexpected_error_is_one_line_and_exit_2(
    index_dir: Path, clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    import detector.runs.export

    def broken_csv(*args: object, **kw: object) -> int:
        raise TypeError("a bug in the CSV writer\nsecond line")

    monkeypatch.setattr(detector.runs.export, "write_csv", broken_csv)
    args = ["scan", str(clips["positive"]), "--index", str(index_dir), "--out", str(tmp_path / "r.jsonl"),
            "--csv", str(tmp_path / "r.csv"), "-q"]
    assert cli.main(args) == 2  # not 1, which would read as "something flagged"
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "TypeError: a bug in the CSV writer second line" and "Traceback" not in err
    assert cli.main([*args, "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


class _ReplacingDetector:
    """Scores by returning a fixed result, but replaces (or rewrites) the file while "scoring"."""

    def __init__(self, contents: list[bytes], in_place: bool = False) -> None:
        self.contents, self.in_place, self.calls = contents, in_place, 0

    def score_file(self, path: Path) -> Result:
        if self.calls < len(self.contents):
            data = self.contents[self.calls]
            if self.in_place:
                time.sleep(0.05)  # past the file system's timestamp granularity (see detector.media.files)
                with open(path, "r+b") as fh:
                    fh.write(data)
            else:
                tmp = path.with_name("incoming.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)  # what a generator writing its output atomically does
        self.calls += 1
        return Result(path=str(path), verdict="pass", score=0.1, frames=1, duration=0.0)


def test_sha256_is_of_the_bytes_scored(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"old content")
    det = _ReplacingDetector([b"new content"])  # replaced during the first scoring only
    result = score_one(det, clip)
    assert det.calls == 2 and result["verdict"] == "pass"  # scored again, on the content it now has
    assert result["sha256"] == hashlib.sha256(b"new content").hexdigest()

    clip.write_bytes(b"version 1")
    det = _ReplacingDetector([b"VERSION 2", b"VERSION 3"], in_place=True)  # written to while scored, twice
    result = score_one(det, clip)
    assert det.calls == 2 and result["verdict"] == "error" and result["error_kind"] == "changed"
    assert "changed while it was scanned" in result["error"]
    # the content as it is after the scan, so a later line for the same content replaces this one
    assert result["sha256"] == hashlib.sha256(b"VERSION 3").hexdigest()

    det = _ReplacingDetector([])
    assert score_one(det, clip)["sha256"] == hashlib.sha256(b"VERSION 3").hexdigest() and det.calls == 1
