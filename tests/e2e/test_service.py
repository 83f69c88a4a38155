"""The real `mamori serve` process on a loopback port: every endpoint, auth, limits, hostile uploads."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import MAMORI, reference_art, serving
from PIL import Image

from detector.client import MamoriClient, ServiceError
from detector.media.synth import composite, draw_scene, write_video

TOKENS = {"score": "tok-score", "admin": "tok-admin", "both": "tok-both"}
TIMEOUT = 12  # the server's --request-timeout


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, index_dir: Path) -> Iterator[dict[str, object]]:
    root = tmp_path_factory.mktemp("serve")
    index = root / "index"
    shutil.copytree(index_dir, index)  # admin tests change it
    tokens = root / "tokens.txt"
    tokens.write_text(f"# test tokens\n{TOKENS['score']} score\n{TOKENS['admin']} admin\n{TOKENS['both']} score,admin\n")
    args = ["--tokens", str(tokens), "--max-upload-mb", "2", "--max-duration", "30", "--max-frames-total", "1500",
            "--max-pixels", "4000000", "--max-frames", "40", "--request-timeout", str(TIMEOUT), "--workers", "2",
            "--queue", "1", "--fps", "1",
            "--batching", "on"]  # the merged path (what auto picks), named so the test does not depend on it
    with serving(index, root, *args) as srv:
        yield {**srv, "root": root}


def _client(server: dict[str, object], who: str | None = "score") -> httpx.Client:
    headers = {"Authorization": f"Bearer {TOKENS[who]}"} if who else {}
    return httpx.Client(base_url=str(server["base"]), headers=headers, timeout=120)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def positive_png() -> bytes:
    scene, _ = composite(draw_scene("serve"), reference_art("akane").convert("RGBA"), height_frac=0.6, x_frac=0.6)
    return _png(scene)


def _assert_error(resp: httpx.Response, status: int, limit: str | None = None) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) >= {"error", "message"}
    if limit is not None:
        assert body["limit"] == limit
    return body


def _still_answers(server: dict[str, object], png: bytes) -> None:
    with _client(server) as c:
        assert c.get("/v1/health").json() == {"status": "ok"}
        r = c.post("/v1/score", content=png, headers={"content-type": "image/png"})
        assert r.status_code == 200 and r.json()["verdict"] == "flag"


def test_health_ready_docs_and_index(server: dict[str, object]) -> None:
    with _client(server, None) as c:
        assert c.get("/v1/health").status_code == 200
        ready = c.get("/v1/ready").json()
        assert ready["ready"] and ready["backbone"] == "effnet-lite0-imagenet" and ready["batching"]
        spec = c.get("/openapi.json").json()
        assert {"/v1/score", "/v1/index", "/v1/health", "/v1/ready", "/v1/admin/reload"} <= set(spec["paths"])
        assert c.get("/docs").status_code == 200
    with _client(server) as c:
        info = c.get("/v1/index").json()
        assert {"akane", "benkei", "chiyo"} <= set(info["characters"]) and info["backbone"]["name"]
        assert info["generation"] and 0 < info["review_score"] < info["flag_score"] <= 1
        assert info["limits"]["max_upload_mb"] == 2


def test_score_multipart_raw_and_client(server: dict[str, object], positive_png: bytes, clips: dict[str, Path]) -> None:
    with _client(server) as c:
        r = c.post("/v1/score", files={"file": ("scene.png", positive_png, "image/png")})
        assert r.status_code == 200 and r.headers["x-mamori-index-generation"]
        body = r.json()
        assert body["verdict"] == "flag" and body["characters"][0]["character"] == "akane"
        assert body["path"] == "scene.png" and body["error"] is None
        with open(clips["positive"], "rb") as fh:
            r = c.post("/v1/score", params={"fps": 2, "max_frames": 6}, content=fh,
                       headers={"content-type": "video/mp4", "x-filename": "clip.mp4"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["frames"] == 6 and body["path"] == "clip.mp4"
        assert body["verdict"] == "flag" and body["characters"][0]["character"] == "akane"
    with MamoriClient(str(server["base"]), token=TOKENS["score"]) as mc:
        assert mc.health() == {"status": "ok"} and mc.ready()
        assert mc.score(clips["negative"])["verdict"] in ("pass", "review")
        with pytest.raises(ServiceError) as err:
            MamoriClient(str(server["base"]), token="nope").score(positive_png)
        assert err.value.status == 401


def test_auth(server: dict[str, object], positive_png: bytes) -> None:
    with _client(server, None) as c:
        _assert_error(c.post("/v1/score", content=positive_png, headers={"content-type": "image/png"}), 401)
        _assert_error(c.get("/v1/index", headers={"Authorization": "Bearer wrong"}), 401)
        _assert_error(c.get("/v1/index", headers={"Authorization": "Basic dG9rLXNjb3Jl"}), 401)
    with _client(server, "admin") as c:  # admin-only token cannot score
        _assert_error(c.post("/v1/score", content=positive_png, headers={"content-type": "image/png"}), 403)
    with _client(server, "score") as c:  # score-only token cannot administer
        _assert_error(c.post("/v1/admin/reload"), 403)
        _assert_error(c.delete("/v1/admin/characters/akane"), 403)


def test_limits(server: dict[str, object], positive_png: bytes, tmp_path: Path) -> None:
    with _client(server) as c:
        big = os.urandom(3 * 2**20)
        _assert_error(c.post("/v1/score", content=big, headers={"content-type": "video/mp4"}), 413, "max_upload_mb")

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while streaming
            for _ in range(6):
                yield os.urandom(2**19)

        _assert_error(c.post("/v1/score", content=chunks(), headers={"content-type": "video/mp4"}), 413,
                      "max_upload_mb")
        bomb = io.BytesIO()
        Image.new("1", (12000, 12000)).save(bomb, "PNG")  # 144 MP, a few KB on the wire
        _assert_error(c.post("/v1/score", content=bomb.getvalue(), headers={"content-type": "image/png"}), 413,
                      "max_pixels")
        long = tmp_path / "long.mp4"
        write_video(long, [Image.new("RGB", (64, 64), (i * 7 % 255, 90, 30)) for i in range(40)], fps=1)  # 40 s
        _assert_error(c.post("/v1/score", content=long.read_bytes(), headers={"content-type": "video/mp4"}), 413,
                      "max_duration")
        many = tmp_path / "many.mp4"
        write_video(many, [Image.new("RGB", (64, 64), (i % 255, 90, 30)) for i in range(1600)], fps=100)  # 16 s
        _assert_error(c.post("/v1/score", content=many.read_bytes(), headers={"content-type": "video/mp4"}), 413,
                      "max_frames_total")
        _assert_error(c.post("/v1/score", params={"max_frames": 41}, content=positive_png,
                             headers={"content-type": "image/png"}), 422, "max_frames")
        body = _assert_error(c.post("/v1/score", params={"fps": -1}, content=positive_png,
                                    headers={"content-type": "image/png"}), 422)
        assert body["error"] == "InvalidParameter" and "fps" in str(body["message"])
    _still_answers(server, positive_png)


def test_hostile_uploads(server: dict[str, object], positive_png: bytes, clips: dict[str, Path]) -> None:
    with _client(server) as c:
        body = _assert_error(c.post("/v1/score", content=os.urandom(5000), headers={"content-type": "video/mp4"}), 422)
        assert body["error"] == "UnreadableMediaError"
        half = clips["positive"].read_bytes()[:1500]
        r = c.post("/v1/score", content=half, headers={"content-type": "video/mp4"})
        assert r.status_code == 422 or (r.status_code == 200 and r.json()["warnings"])  # truncated file
        _assert_error(c.post("/v1/score", content=b"hello", headers={"content-type": "text/plain"}), 415)
        _assert_error(c.post("/v1/score", content=b"{}", headers={"content-type": "application/json"}), 415)
        _assert_error(c.post("/v1/score", content=b"", headers={"content-type": "image/png"}), 422)
        _assert_error(c.post("/v1/score", files={"other": ("x.png", positive_png)}), 422)
        _assert_error(c.post("/v1/score", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data"}), 400)
    # a truncated upload: Content-Length promises more than is sent, then the client goes away
    with socket.create_connection(("127.0.0.1", int(server["port"]))) as s:  # type: ignore[call-overload]
        s.sendall(b"POST /v1/score HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + TOKENS["score"].encode()
                  + b"\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n" + positive_png[:1000])
    _still_answers(server, positive_png)
    left = list((Path(str(server["root"])) / "tmp").glob("mamori-*"))
    assert not left, left  # every upload's temporary folder was removed, refused or not


def _slow_client(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/score HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + TOKENS["score"].encode()
              + b"\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n" + b"\x89PNG")
    return s


def test_slow_clients_time_out_and_a_full_queue_answers_503(server: dict[str, object], positive_png: bytes) -> None:
    port = int(server["port"])  # type: ignore[call-overload]
    slow = [_slow_client(port) for _ in range(3)]  # workers 2 + queue 1: every slot held
    try:
        time.sleep(0.5)
        with _client(server) as c:
            r = c.post("/v1/score", content=positive_png, headers={"content-type": "image/png"})
            _assert_error(r, 503)
            assert int(r.headers["retry-after"]) > 0
        t0 = time.monotonic()
        slow[0].settimeout(TIMEOUT + 30)
        reply = slow[0].recv(4096).decode("latin-1")
        slow[0].settimeout(5)
        while "request_timeout" not in reply and (more := slow[0].recv(4096)):  # the body may come apart
            reply += more.decode("latin-1")
        assert reply.startswith("HTTP/1.1 408") and '"limit":"request_timeout"' in reply
        assert time.monotonic() - t0 < TIMEOUT + 5
    finally:
        for s in slow:
            s.close()
    time.sleep(0.5)
    _still_answers(server, positive_png)


def test_metrics_and_structured_logs(server: dict[str, object], positive_png: bytes) -> None:
    _still_answers(server, positive_png)
    text = httpx.get(f"{server['base']}/metrics").text
    assert 'mamori_requests_total{endpoint="/v1/score",status="200"}' in text
    assert 'mamori_verdicts_total{verdict="flag"}' in text
    assert "mamori_request_seconds_bucket" in text and "mamori_errors_total" in text
    records = []
    for line in Path(str(server["log"])).read_text().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))  # every request line is one bare JSON object
    assert any(r["path"] == "/v1/score" and r["status"] == 200 and r["verdict"] == "flag" for r in records)
    assert all({"ts", "id", "method", "path", "status", "bytes", "seconds", "verdict"} <= set(r) for r in records)


def test_admin_add_remove_reload(server: dict[str, object], tmp_path: Path) -> None:
    art = tmp_path / "daichi.png"
    reference_art("daichi").save(art)
    with MamoriClient(str(server["base"]), token=TOKENS["both"]) as mc:
        gen0 = mc.index()["generation"]
        added = mc.add_reference(art, "daichi", franchise="Test", rights_holder="Studio", license="test")
        assert len(added["added"]) == 1 and added["generation"] != gen0
        info = mc.index()
        assert info["generation"] == added["generation"] and info["characters"]["daichi"]["references"] == 1
        removed = mc.remove_character("daichi")
        assert removed["removed"] == added["added"]
        assert "daichi" not in mc.index()["characters"]
        again = mc.add_reference(art, "daichi")  # and once more, removed by reference id this time
        assert mc.remove_reference(again["added"][0])["removed"] == again["added"]
        assert "daichi" not in mc.index()["characters"]
        with pytest.raises(ServiceError) as err:
            mc.remove_reference("0123456789abcdef")
        assert err.value.status == 404
        with pytest.raises(ServiceError) as err:
            mc.remove_character("daichi")
        assert err.value.status == 404
        with pytest.raises(ServiceError) as err:
            mc.add_reference(tmp_path / "daichi.png", "")
        assert err.value.status == 422
        assert mc.reload()["generation"] == mc.index()["generation"]


def test_index_update_under_load_loses_nothing(server: dict[str, object], positive_png: bytes, tmp_path: Path) -> None:
    art = tmp_path / "eiji.png"
    reference_art("eiji").save(art)
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def client_loop() -> None:
        with _client(server) as c:
            while not stop.is_set():
                r = c.post("/v1/score", content=positive_png, headers={"content-type": "image/png"})
                seen.append((r.status_code, r.headers.get("x-mamori-index-generation", "")))

    gens: list[str] = []
    with MamoriClient(str(server["base"]), token=TOKENS["admin"]) as admin:
        gens.append(httpx.get(f"{server['base']}/v1/ready").json()["generation"])
        threads = [threading.Thread(target=client_loop) for _ in range(2)]  # 2 clients: within workers + queue
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            for _ in range(2):
                gens.append(admin.add_reference(art, "eiji")["generation"])
                time.sleep(0.5)
                gens.append(admin.remove_character("eiji")["generation"])
                time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
    assert len(seen) >= 4
    assert all(status == 200 for status, _ in seen), seen
    assert {g for _, g in seen} <= set(gens)  # every reply came from an index that existed


def test_serve_refuses_public_bind_without_tokens_and_reads_the_tokens_variable(index_dir: Path,
                                                                               tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MAMORI_TOKENS_FILE"}
    proc = subprocess.run([*MAMORI, "serve", "--index", str(index_dir), "--host", "0.0.0.0"],
                          check=False, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and "without authentication" in proc.stderr
    bad = tmp_path / "tokens.txt"
    bad.write_text("tok-x score,superuser\n")
    proc = subprocess.run([*MAMORI, "serve", "--index", str(index_dir)], check=False, capture_output=True,
                          text=True, timeout=120, env={**env, "MAMORI_TOKENS_FILE": str(bad)})
    assert proc.returncode == 2 and "ConfigError" in proc.stderr and str(bad) in proc.stderr


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-x", "-q"]))
