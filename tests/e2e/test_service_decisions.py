"""`POST /v1/admin/decisions` through the real `mamori serve`: decisions change the served index,
name files under `--media-root` only, and malformed result lines are a 422 (issue 27.2)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import reference_art, serving_copy

from detector.media.synth import make_clip

TOKENS = {"score": "tok-score", "admin": "tok-admin"}
SCOPES = {"score": "score", "admin": "score,admin"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, index_dir: Path) -> Iterator[dict[str, object]]:
    root = tmp_path_factory.mktemp("serve-decisions")
    media = tmp_path_factory.getbasetemp()  # the clips and each test's tmp_path are under it
    with serving_copy(index_dir, root, {t: SCOPES[who] for who, t in TOKENS.items()}, "--max-upload-mb", "1",
                      "--fps", "2", "--media-root", str(media)) as srv:
        yield srv


def _client(server: dict[str, object], who: str = "admin") -> httpx.Client:
    return httpx.Client(base_url=str(server["base"]), headers={"Authorization": f"Bearer {TOKENS[who]}"}, timeout=300)


def _decision(path: Path, decision: str, **kw: str) -> dict[str, str]:
    return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "character": "akane",
            "decision": decision, "reviewer": "kim", **kw}


def test_refusals(server: dict[str, object], clips: dict[str, Path]) -> None:
    body = {"decisions": [_decision(clips["positive"], "infringing")]}
    with _client(server, "score") as c:
        assert c.post("/v1/admin/decisions", json=body).status_code == 403
    with _client(server) as c:
        r = c.post("/v1/admin/decisions", content=b"{}", headers={"content-type": "text/plain"})
        assert r.status_code == 415 and r.json()["error"] == "UnsupportedMediaType"
        r = c.post("/v1/admin/decisions", json={"decisions": [{**body["decisions"][0], "decision": "maybe"}]})
        assert r.status_code == 422 and "decisions[0]" in r.json()["message"], r.text
        r = c.post("/v1/admin/decisions", json={"decisions": [{**body["decisions"][0], "box": [0, 0, 9, 9]}]})
        assert r.status_code == 422 and "decisions[0]: box needs a time" in r.json()["message"], r.text
        assert c.post("/v1/admin/decisions", json={"decisions": []}).status_code == 422
        assert c.post("/v1/admin/decisions", json={"decision": []}).status_code == 422
        r = c.post("/v1/admin/decisions", content=b"{" + b" " * 2**20 + b"}", headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["limit"] == "max_upload_mb"


def test_decisions_change_the_served_index(server: dict[str, object], clips: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other.mp4"  # akane in another pose: a licensed use
    make_clip(other, "clip-other-http", reference_art("akane", 1), duration=3.0, appear=(0.5, 2.5),
              height_frac=0.6, x_frac=0.3)
    body = {"decisions": [_decision(clips["positive"], "infringing", note="fan edit"),
                          _decision(other, "not_infringing", note="licensed"),
                          {**_decision(other, "not_infringing"), "sha256": "0" * 64, "reviewer": "lee"}]}
    with _client(server) as c:
        gen0 = c.get("/v1/index").json()["generation"]
        r = c.post("/v1/admin/decisions", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert [d["status"] for d in out["decisions"]] == ["applied", "applied", "skipped"], out
        assert out["applied"] == 2 and out["skipped"] == 1 and out["generation"] != gen0
        info = c.get("/v1/index").json()
        assert info["generation"] == out["generation"]
        added = info["characters"]["akane"]["from_review"]
        assert added == out["decisions"][0]["regions"] >= 1
        assert info["allowlist"]["counts"]["akane"]["decisions"] == 1

        again = c.post("/v1/admin/decisions", json={"decisions": body["decisions"][:1]}).json()  # idempotent
        assert again["applied"] == 1 and "already in the index" in again["decisions"][0]["message"], again
        assert c.get("/v1/index").json()["characters"]["akane"]["from_review"] == added
    assert len(list((Path(str(server["index"])) / "confirmed").glob("d-*.png"))) == added


OUTSIDE = "decisions[0]: the path is not under the server's media root"


def test_paths_outside_the_media_root_are_refused_alike(server: dict[str, object], clips: dict[str, Path],
                                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Nothing outside the root is opened: a file that exists, one that does not, a `..` walk and a
    symbolic link that leads out all get the same 403, with no sha256 in it."""
    base = tmp_path_factory.getbasetemp()
    link = base / "escape.mp4"
    if not link.is_symlink():
        link.symlink_to("/etc/passwd")
    decision = _decision(clips["positive"], "not_infringing")
    with _client(server) as c:
        gen0 = c.get("/v1/index").json()["generation"]
        for path in ("/etc/passwd", "/etc/no-such-file", f"{base}/../../etc/passwd", "../../../../../etc/passwd",
                     str(link), "escape.mp4"):
            r = c.post("/v1/admin/decisions", json={"decisions": [{**decision, "path": path}]})
            assert r.status_code == 403, (path, r.text)
            assert r.json() == {"error": "PathRefused", "message": OUTSIDE}, (path, r.text)
        # inside the root, relative to it: opened and checked (a wrong sha256 is skipped, named as sent)
        rel = str(clips["positive"].relative_to(base))
        r = c.post("/v1/admin/decisions", json={"decisions": [{**decision, "path": rel, "sha256": "0" * 64}]})
        assert r.status_code == 200, r.text
        out = r.json()["decisions"][0]
        assert out["status"] == "skipped" and out["path"] == rel and out["message"].startswith(rel + " has sha256 ")
        assert c.get("/v1/index").json()["generation"] == gen0


SEGMENT = {"start": 1.0, "end": 2.0, "peak_time": 1.5, "peak_score": 0.9, "reference": "a.png",
           "reference_id": "r1", "similarity": 0.8, "box": [0, 0, 100, 100], "frames": 3}


@pytest.mark.parametrize(("characters", "where"), [
    ({"akane": [SEGMENT]}, "results[0]: `characters` must be a list"),
    (["akane"], "results[0].characters[0]: must be an object with a string `character`"),
    ([{"character": "akane", "segments": "1-2 s"}], "results[0].characters[0]: `segments` must be a list"),
    ([{"character": "akane", "segments": [[1.0, 2.0]]}], "results[0].characters[0].segments[0]: a segment must be"),
    ([{"character": "akane", "segments": [{"start": 1.0}]}], "results[0].characters[0].segments[0]: missing `end`"),
    ([{"character": "akane", "segments": [{**SEGMENT, "box": [0, 0, 100]}]}], "segments[0]: `box` must be"),
    ([{"character": "akane", "segments": [{**SEGMENT, "box": "0,0,9,9"}]}], "segments[0]: `box` must be"),
    ([{"character": "akane", "segments": [{**SEGMENT, "start": "1.0"}]}], "segments[0]: `start` must be a finite"),
    ([{"character": "akane", "segments": [{**SEGMENT, "frames": -1}]}], "segments[0]: `frames` must be a whole"),
    ([{"character": "akane", "segments": [{**SEGMENT, "reference_id": None}]}], "`reference_id` must be a string"),
])
def test_malformed_result_segments_are_422(server: dict[str, object], clips: dict[str, Path],
                                           characters: object, where: str) -> None:
    """The result line of the decision's own file (same sha256), its segments malformed: a 422
    naming where, never a 500, and the index untouched."""
    decision = _decision(clips["positive"], "not_infringing")
    line = {"path": decision["path"], "sha256": decision["sha256"], "verdict": "flag", "characters": characters}
    with _client(server) as c:
        gen0 = c.get("/v1/index").json()["generation"]
        r = c.post("/v1/admin/decisions", json={"decisions": [decision], "results": [line]})
        assert r.status_code == 422 and r.json()["error"] == "InvalidParameter", r.text
        assert where in r.json()["message"], r.text
        assert c.get("/v1/index").json()["generation"] == gen0
