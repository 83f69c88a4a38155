"""Flood alerts on the real CLI and server: a reference matching most inputs is reported by `scan`,
listed by `GET /v1/index` to admin tokens, quarantined by score traffic only with the opt-in
`--flood-action quarantine`, once per reference and until its expiry, and by an admin by hand."""

from __future__ import annotations

import io
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import reference_art, run_cli, serving
from PIL import Image

from detector.media.synth import composite, draw_scene


def _scene(seed: str, character: str | None = "akane") -> Image.Image:
    scene = draw_scene(seed)
    if character is not None:
        scene, _ = composite(scene, reference_art(character).convert("RGBA"), height_frac=0.6, x_frac=0.6)
    return scene


def _refs(result: dict[str, Any]) -> set[str]:
    return {s["reference_id"] for c in result["characters"] for s in c["segments"]}


def test_scan_prints_references_that_flood_the_batch(index_dir: Path, tmp_path: Path) -> None:
    for i in range(3):
        _scene(f"flood-{i}").save(tmp_path / f"pos-{i}.png")
    _scene("flood-neg", None).save(tmp_path / "neg.png")
    out = tmp_path / "out.jsonl"
    args = ["scan", "--index", index_dir, "--out", out, "--fps", "1", "--flood-share", "0.3", "--flood-min", "4", "-q"]
    proc = run_cli(*args, *sorted(tmp_path.glob("*.png")))
    assert proc.returncode == 1, proc.stderr  # flagged
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("flood: reference")]
    assert lines and all("(akane, " in ln and "of 4 inputs" in ln for ln in lines), proc.stderr
    assert f"mamori index quarantine {index_dir} ID" in proc.stderr
    # --resume counts over the whole results file: 3 of the 4 earlier results and 1 new one (this run
    # alone, 0 of 1, is under --flood-min); the threshold itself: tests/detector/test_flood.py
    _scene("flood-neg2", None).save(tmp_path / "neg2.png")
    proc = run_cli(*args, "--flood-share", "0.5", "--resume", *sorted(tmp_path.glob("*.png")))
    assert any("of 5 inputs" in ln for ln in proc.stderr.splitlines() if ln.startswith("flood: reference")), proc.stderr


def test_index_quarantine_and_enable_cli(index_dir: Path, refs_dir: Path, tmp_path: Path) -> None:
    idx = tmp_path / "index"
    shutil.copytree(index_dir, idx)
    art = refs_dir / "benkei" / "0.png"  # by source path, like `index remove --reference`
    proc = run_cli("index", "quarantine", idx, art, "--reason", "floods scans", check=True)
    assert proc.stderr.startswith("quarantined: ")
    quarantined = json.loads(run_cli("index", "info", idx, "--json", check=True).stdout)["quarantined"]
    assert [(q["character"], q["reason"]) for q in quarantined] == [("benkei", "floods scans")]
    proc = run_cli("index", "enable", idx, quarantined[0]["id"], check=True)
    assert proc.stderr.startswith("enabled (was quarantined: floods scans)")
    assert json.loads(run_cli("index", "info", idx, "--json", check=True).stdout)["quarantined"] == []
    proc = run_cli("index", "enable", idx, "no-such-reference")
    assert proc.returncode == 2 and "ReferenceNotFoundError" in proc.stderr


ADMIN, SCORE = "tok-flood-admin", "tok-flood-score"
TTL = 12  # seconds an automatic quarantine lasts (--flood-quarantine-ttl)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, index_dir: Path) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("flood-serve")
    index = root / "index"
    shutil.copytree(index_dir, index)
    tokens = root / "tokens.txt"
    tokens.write_text(f"{ADMIN} score,admin\n{SCORE} score\n")
    with serving(index, root, "--tokens", str(tokens), "--fps", "1", "--flood-window", "4", "--flood-min", "2",
                 "--flood-share", "0.5", "--flood-action", "quarantine", "--flood-quarantine-ttl", str(TTL)) as srv:
        yield {**srv, "index": index}


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_score_traffic_quarantines_only_under_the_cap_and_until_expiry(server: dict[str, Any]) -> None:
    """Issue 27.1: an uploader with the score scope floods a reference. With the opt-in it is
    quarantined once (the cap), for TTL seconds; then it is matched again, and flooding it again
    only alerts. Neither the score token nor the open /metrics learn which reference it was."""
    png = _png(_scene("flood-serve"))
    score = httpx.Client(base_url=server["base"], headers={"Authorization": f"Bearer {SCORE}"}, timeout=120)
    admin = httpx.Client(base_url=server["base"], headers={"Authorization": f"Bearer {ADMIN}"}, timeout=120)
    post = lambda: score.post("/v1/score", content=png, headers={"content-type": "image/png"}).json()
    with score, admin:
        first = post()
        assert first["verdict"] == "flag"
        ref = first["characters"][0]["segments"][0]["reference_id"]
        seen = score.get("/v1/index").json()
        assert "flood" not in seen and "quarantined" not in seen  # admin only
        flood = admin.get("/v1/index").json()["flood"]
        assert (flood["window"], flood["requests"], flood["action"]) == (4, 1, "quarantine")
        assert flood["quarantine"] == {"max_per_reference": 1, "ttl_seconds": TTL, "expires": {}}
        assert flood["top"][0]["reference_id"] == ref and not flood["top"][0]["quarantined"]  # 1 request < min 2
        assert ref in _refs(post())  # 2 of 2: floods, quarantined before this reply
        t_quarantined = time.monotonic()
        info = admin.get("/v1/index").json()
        top = {f["reference_id"]: f for f in info["flood"]["top"]}
        assert top[ref]["quarantined"] and top[ref]["flooding"] and top[ref]["share"] == 1.0
        assert [q["id"] for q in info["quarantined"]] == [ref]
        assert info["quarantined"][0]["reason"].startswith("flood (automatic, expires ")
        assert list(info["flood"]["quarantine"]["expires"]) == [ref]
        assert ref not in _refs(post())  # never matched while quarantined
        assert time.monotonic() < t_quarantined + TTL, "the test machine is too slow for this TTL"
        metrics = httpx.get(f"{server['base']}/metrics").text  # no token: counts, no reference id
        assert "mamori_flood_quarantined_total 1.0" in metrics and "mamori_flood_window_requests 3.0" in metrics
        assert "mamori_flood_auto_quarantined 1.0" in metrics
        assert ref not in metrics and "reference=" not in metrics
        assert "flood: reference " + ref in server["log"].read_text()

        time.sleep(max(0.0, t_quarantined + TTL + 1.5 - time.monotonic()))
        assert ref in _refs(post())  # expired before this request: matched again, its old matches forgotten
        info = admin.get("/v1/index").json()
        assert info["quarantined"] == [] and info["flood"]["quarantine"]["expires"] == {}
        assert f"automatic quarantine of reference {ref} expired" in server["log"].read_text()
        for _ in range(3):  # floods again (3 of 4 requests): the cap of 1 is spent, so an alert only
            assert ref in _refs(post())
        assert admin.get("/v1/index").json()["quarantined"] == []
        assert "not quarantined: automatically quarantined 1 time(s) already" in server["log"].read_text()


def test_only_an_admin_quarantines_and_enables_by_hand(server: dict[str, Any]) -> None:
    score = httpx.Client(base_url=server["base"], headers={"Authorization": f"Bearer {SCORE}"}, timeout=120)
    admin = httpx.Client(base_url=server["base"], headers={"Authorization": f"Bearer {ADMIN}"}, timeout=120)
    with score, admin:
        png = _png(_scene("flood-by-hand"))
        ref = _refs(score.post("/v1/score", content=png, headers={"content-type": "image/png"}).json()).pop()
        assert score.post(f"/v1/admin/references/{ref}/quarantine", params={"reason": "x"}).status_code == 403
        assert score.post(f"/v1/admin/references/{ref}/enable").status_code == 403
        r = admin.post(f"/v1/admin/references/{ref}/quarantine", params={"reason": "floods the queue"})
        assert r.status_code == 200 and r.json()["quarantined"] == ref and r.json()["changed"], r.text
        info = admin.get("/v1/index").json()
        assert [(q["id"], q["reason"]) for q in info["quarantined"]] == [(ref, "floods the queue")]
        assert info["flood"]["quarantine"]["expires"] == {}  # an admin's quarantine never expires by itself
        r = admin.post(f"/v1/admin/references/{ref}/enable")
        assert r.status_code == 200 and r.json()["enabled"] == ref and r.json()["was_quarantined"] == "floods the queue"
        assert admin.get("/v1/index").json()["quarantined"] == []
        assert admin.post("/v1/admin/references/nope/enable").status_code == 404
        assert admin.post("/v1/admin/references/nope/quarantine", params={"reason": "x"}).status_code == 404
        assert admin.post(f"/v1/admin/references/{ref}/quarantine").status_code == 422  # a reason is required
