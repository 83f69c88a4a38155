"""`POST /v1/admin/decisions` on the real `mamori serve` without a media root (every decision
refused, nothing opened) and with `/v1/score`'s limits: max_upload_mb and request_timeout (issue 27.2)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import reference_art, serving_copy

from detector.media.synth import make_clip

ADMIN = "tok-limits-admin"


def _decision(path: Path, decision: str = "not_infringing") -> dict[str, str]:
    return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "character": "akane",
            "decision": decision, "reviewer": "kim"}


@pytest.fixture(scope="module")
def no_root(tmp_path_factory: pytest.TempPathFactory, index_dir: Path) -> Iterator[dict[str, object]]:
    with serving_copy(index_dir, tmp_path_factory.mktemp("no-root"), {ADMIN: "score,admin"}) as srv:
        yield srv


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, index_dir: Path) -> Iterator[dict[str, object]]:
    root = tmp_path_factory.mktemp("strict")
    media = root / "media"
    media.mkdir()
    with serving_copy(index_dir, root, {ADMIN: "score,admin"}, "--media-root", str(media), "--fps", "2",
                      "--request-timeout", "1", "--max-upload-mb", "1") as srv:
        yield {**srv, "media": media}


def _post(srv: dict[str, object], body: object) -> httpx.Response:
    with httpx.Client(base_url=str(srv["base"]), headers={"Authorization": f"Bearer {ADMIN}"}, timeout=120) as c:
        return c.post("/v1/admin/decisions", json=body)


def test_without_a_media_root_decisions_are_refused(no_root: dict[str, object], clips: dict[str, Path]) -> None:
    for path in (clips["positive"], Path("/etc/passwd"), Path("/no/such/file")):
        decision = _decision(clips["positive"]) | {"path": str(path)}
        r = _post(no_root, {"decisions": [decision]})
        assert r.status_code == 403 and r.json()["error"] == "PathRefused", r.text
        assert "no --media-root" in r.json()["message"] and str(path) not in r.json()["message"]


def test_a_file_over_max_upload_mb_is_413(strict: dict[str, object]) -> None:
    big = Path(str(strict["media"])) / "big.mp4"
    big.write_bytes(os.urandom(2 * 2**20))
    r = _post(strict, {"decisions": [_decision(big)]})
    assert r.status_code == 413 and r.json()["limit"] == "max_upload_mb", r.text


def test_rescoring_past_request_timeout_is_408_and_changes_nothing(strict: dict[str, object]) -> None:
    """30 s of video at 2 fps cannot be scored again within the 1 s request_timeout."""
    clip = Path(str(strict["media"])) / "long.mp4"
    make_clip(clip, "clip-long", reference_art("akane", 0), duration=30.0, appear=(1.0, 29.0), fps=4)
    with httpx.Client(base_url=str(strict["base"]), headers={"Authorization": f"Bearer {ADMIN}"}) as c:
        gen0 = c.get("/v1/index").json()["generation"]
    r = _post(strict, {"decisions": [_decision(clip) | {"path": "long.mp4"}]})
    assert r.status_code == 408 and r.json()["limit"] == "request_timeout", r.text
    with httpx.Client(base_url=str(strict["base"]), headers={"Authorization": f"Bearer {ADMIN}"}) as c:
        info = c.get("/v1/index").json()
    assert info["generation"] == gen0 and info["allowlist"]["counts"] == {}
