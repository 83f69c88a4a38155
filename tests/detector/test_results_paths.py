"""Result lines with non-UTF-8 names: the exact path comes back, and a damaged line does not crash a reader."""

from __future__ import annotations

import os

from detector.match.results import Result, path_of


def test_non_utf8_path_round_trips_and_damaged_path_bytes_fall_back() -> None:
    name = os.fsdecode(b"clips/caf\xe9.mp4")  # Latin-1 bytes: not UTF-8
    rec = Result(path=name, verdict="pass", score=0.0, frames=1, duration=1.0).to_dict()
    assert rec["path"] == "clips/caf\\xe9.mp4" and rec["path_bytes"]
    assert path_of(rec) == name
    for bad in ("not base64!", 12, ""):
        assert path_of({**rec, "path_bytes": bad}) == "clips/caf\\xe9.mp4"
