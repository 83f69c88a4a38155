"""`Detector.score_video(store=...)` stores the bytes it scored: the file is stamped before and
after scoring, as `mamori scan` does (issue 27, point 10)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from detector import recording
from detector.api import Detector
from detector.media.files import FileChangedError, hash_file
from detector.media.regions import DEFAULT_SCALES
from detector.recording import open_store
from index.scanstore import ScanStore


def test_a_video_that_changes_while_scored_is_not_stored(index_dir: Path, clips: dict[str, Path],
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    det = Detector.open(index_dir)
    video = tmp_path / "v.mp4"
    shutil.copy(clips["negative"], video)
    store = open_store(tmp_path / "s.store", det.store, DEFAULT_SCALES)
    with store.writer() as w:
        det.score_video(video, store=w)  # unchanged: stored under the sha256 of its bytes
        evidence = det._evidence

        def changing(*args: Any, **kw: Any) -> Iterator[Any]:
            out = evidence(*args, **kw)
            with open(video, "ab") as fh:  # the file grows while it is being scored
                fh.write(b"\0" * 64)
            return out

        monkeypatch.setattr(det, "_evidence", changing)
        with pytest.raises(FileChangedError, match="changed while it was scored"):
            det.score_video(video, store=w)
        assert det.score_file(video, store=w).error_kind == "changed"  # score_file: an error result
    entries = ScanStore.open(tmp_path / "s.store").entries()
    assert [(e.path, e.sha256) for e in entries] == [(str(video), entries[0].sha256)]
    assert entries[0].sha256 != hash_file(video)[0]  # only the bytes scored before the change


class CountingObserver:
    """A `detector.pipeline.FrameObserver` that counts what it is handed."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.results: list[Any] = []

    def embedded(self, p: Any, vectors: Any) -> None:
        assert len(vectors) == len(p.boxes)  # every region's vector, fresh or kept
        self.times.append(p.frame.time)

    def reused(self, p: Any) -> None:
        assert p.pixels is None
        self.times.append(p.frame.time)

    def finished(self, result: Any) -> None:
        self.results.append(result)


def test_the_observer_sees_each_frame_once_and_no_store_records_nothing(
        index_dir: Path, clips: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    det = Detector.open(index_dir)
    observer = CountingObserver()
    result = det.score_video(clips["positive"], observer=observer)
    assert len(observer.times) == result.frames > 0
    assert observer.times == sorted(set(observer.times))  # once per frame, in order
    assert observer.results == [result]

    def no_store(*args: Any, **kw: Any) -> None:
        raise AssertionError("score_video without a store recorded something")

    monkeypatch.setattr(recording, "add_to_store", no_store)
    monkeypatch.setattr(recording.StoreRecorder, "__init__", no_store)
    monkeypatch.setattr(recording.FrameRecorder, "__init__", no_store)
    assert det.score_video(clips["positive"]).to_dict() == det.score_video(clips["positive"]).to_dict()
    assert det.score_file(clips["negative"]).verdict != "error"
    assert not list(tmp_path.iterdir())
