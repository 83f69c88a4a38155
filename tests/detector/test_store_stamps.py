"""`Detector.score_video(store=...)` stores the bytes it scored: the file is stamped before and
after scoring, as `mamori scan` does (issue 27, point 10)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from detector.api import Detector
from detector.batch import FileChangedError, hash_file
from detector.recording import open_store
from detector.regions import DEFAULT_SCALES
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
