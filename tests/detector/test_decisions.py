"""A decision's optional mark (`time`, `box`): parsing, validation and the decision id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detector.review.decisions import DecisionFileError, decisions_from, read_decisions

GOOD = {"path": "v.mp4", "sha256": "a" * 64, "character": "a", "decision": "infringing", "reviewer": "kim"}


def test_mark_parses_and_joins_the_id(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    lines = [GOOD, {**GOOD, "time": 1.5}, {**GOOD, "time": 1.5, "box": [10, 20, 110, 220]},
             {**GOOD, "time": 2, "box": [10, 20, 110, 220]}, {**GOOD, "time": 2.0, "box": [10, 20, 110, 220]}]
    f.write_text("".join(json.dumps(obj) + "\n" for obj in lines))
    plain, whole, boxed, other, same = read_decisions(f)
    assert (plain.time, plain.box) == (None, None)
    # a not_infringing decision without a mark keeps the id it had before marks existed (and before
    # the decision was hashed); an infringing one by the same reviewer is another decision (issue 27)
    [allowed] = decisions_from([{**GOOD, "decision": "not_infringing"}], "d")
    assert allowed.id == "d-23f9d57881a4" and plain.id not in (allowed.id, "")
    assert (whole.time, whole.box) == (1.5, None) and (boxed.time, boxed.box) == (1.5, (10, 20, 110, 220))
    assert isinstance(other.time, float) and other.time == 2.0
    assert len({plain.id, whole.id, boxed.id, other.id}) == 4 and other.id == same.id  # two marks: two decisions


@pytest.mark.parametrize(("extra", "message"), [
    ({"time": -1}, "time must be a number of seconds >= 0, not -1"),
    ({"time": "1.5"}, "time must be a number of seconds >= 0, not '1.5'"),
    ({"time": True}, "time must be a number"),
    ({"time": None}, "time must be a number"),
    ({"time": 10**400}, r"time must be a number .*\.\.\.$"),
    ({"box": [0, 0, 10, 10]}, "box needs a time"),
    ({"time": 1, "box": [0, 0, 10]}, r"box must be \[x0, y0, x1, y1\], four integers >= 0"),
    ({"time": 1, "box": [0, 0, 10.5, 10]}, "four integers"),
    ({"time": 1, "box": [-1, 0, 10, 10]}, "four integers"),
    ({"time": 1, "box": [0, False, 10, 10]}, "four integers"),
    ({"time": 1, "box": "0,0,10,10"}, "four integers"),
    ({"time": 1, "box": None}, "four integers"),
    ({"time": 1, "box": [10, 0, 10, 10]}, r"x0 < x1 and y0 < y1, not \[10, 0, 10, 10\]"),
    ({"time": 1, "box": [0, 20, 10, 10]}, "x0 < x1 and y0 < y1"),
])
def test_bad_marks_name_file_and_line(tmp_path: Path, extra: dict[str, object], message: str) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, **extra}) + "\n")
    with pytest.raises(DecisionFileError, match=f"d.jsonl:2: .*{message}") as err:
        read_decisions(f)
    assert "\n" not in str(err.value)


def test_nan_time_is_refused() -> None:
    with pytest.raises(DecisionFileError, match=r"decisions\[0\]: time must be a number of seconds >= 0, not nan"):
        decisions_from(json.loads('[{"path": "v.mp4", "sha256": "' + "a" * 64 + '", "character": "a", '
                                  '"decision": "infringing", "time": NaN}]'), "decisions")


def test_http_body_takes_marks() -> None:
    [d] = decisions_from([{**GOOD, "decision": "not_infringing", "time": 0, "box": [0, 0, 64, 48]}], "decisions")
    assert (d.decision, d.time, d.box, d.where) == ("not_infringing", 0.0, (0, 0, 64, 48), "decisions[0]")
    with pytest.raises(DecisionFileError, match=r"decisions\[1\]: box needs a time"):
        decisions_from([GOOD, {**GOOD, "box": [0, 0, 1, 1]}], "decisions")
