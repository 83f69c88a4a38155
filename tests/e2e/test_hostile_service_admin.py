"""Issue 16 on the real `mamori serve`: the admin API with duplicate uploads, takedowns that delete
unused uploaded art, capped form fields, names that need URL encoding, and an index in a folder
whose name breaks naive URIs (`?`, `#`, `%`, spaces, non-ASCII)."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import reference_art, run_cli, serving
from PIL import Image

from detector.client import MamoriClient, ServiceError
from detector.media.synth import composite, draw_scene
from detector.runs.report import report_data

ADMIN, SCORE = "tok-hostile-admin", "tok-hostile-score"
WEIRD = "we?ird #%20 index ü"
WEIRD_CHARACTER = "Fuyu / 冬 ?#%20"


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _weird_reference(root: Path, index: Path) -> Path:
    """Add one reference whose file and character names need URL encoding (CLI, as a user would)."""
    art = root / "art ?#%41 ü"
    art.mkdir()
    image = art / "fuyu ?#%20 ü.png"
    reference_art("fuyu").save(image)
    with open(art / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "character", "franchise", "rights_holder", "license"])
        w.writerow([image.name, WEIRD_CHARACTER, "Test", "Studio", "test"])
    run_cli("index", "add", index, "--manifest", art / "manifest.csv", check=True)
    return image.resolve()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, index_dir: Path) -> Iterator[dict[str, object]]:
    root = tmp_path_factory.mktemp("hostile-serve")
    index = root / WEIRD
    shutil.copytree(index_dir, index)
    weird_image = _weird_reference(root, index)
    tokens = root / "tokens.txt"
    tokens.write_text(f"{ADMIN} score,admin\n{SCORE} score\n")
    with serving(index, root, "--tokens", str(tokens), "--max-upload-mb", "2", "--workers", "2", "--queue", "2",
                 "--fps", "1") as srv:
        yield {"base": srv["base"], "root": root, "index": index, "weird_image": weird_image}


def _admin(server: dict[str, object]) -> MamoriClient:
    return MamoriClient(str(server["base"]), token=ADMIN)


def _http(server: dict[str, object]) -> httpx.Client:
    return httpx.Client(base_url=str(server["base"]), headers={"Authorization": f"Bearer {ADMIN}"}, timeout=120)


def _uploads(server: dict[str, object]) -> Path:
    return Path(str(server["index"])) / "uploads"


def _error(resp: httpx.Response, status: int, error: str, limit: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json() == {"error": error, "message": resp.json()["message"], "limit": limit}


def test_index_in_a_uri_hostile_folder_serves_with_its_precision(server: dict[str, object]) -> None:
    with _admin(server) as mc:
        info = mc.index()
    assert WEIRD_CHARACTER in info["characters"] and "akane" in info["characters"]
    assert info["index_precision"] in ("fp32", "bf16", "fp16")  # recorded at build
    if info["index_precision"] == info["precision"]:
        assert info["precision_check"] is None  # same precision: nothing to measure
    else:
        assert info["precision_check"]["index"] == info["index_precision"]
    out = run_cli("index", "info", server["index"], check=True).stdout
    assert f"precision {info['index_precision']}" in out


def test_names_and_paths_reach_the_server_intact(server: dict[str, object], tmp_path: Path) -> None:
    weird_image = Path(str(server["weird_image"]))
    with _admin(server) as mc:
        fuyu = hashlib.sha256(weird_image.read_bytes()).hexdigest()[:16]  # a reference's id
        gone = mc.remove_reference(str(weird_image))  # by source path: `/`, `?`, `#`, `%`, space, ü
        assert gone["removed"] == [fuyu] and gone["deleted_files"] == []
        assert WEIRD_CHARACTER not in mc.index()["characters"]
        assert weird_image.is_file()  # the user's own art is never deleted
        art = tmp_path / "gin.png"
        reference_art("gin").save(art)
        for name in (WEIRD_CHARACTER, "..", ".", "a%2Fb?c=d#e", "two  spaces"):
            added = mc.add_reference(art, name)
            assert added["added"] and name in mc.index()["characters"], name
            removed = mc.remove_character(name)
            assert removed["removed"] == added["added"], name
            assert removed["deleted_files"] == [f"uploads/{added['added'][0]}.png"], name
            assert not (_uploads(server) / f"{added['added'][0]}.png").exists()
        with pytest.raises(ServiceError) as err:
            mc.remove_character("a/b")  # encoded, so a 404 for the name, not a route miss
        assert err.value.status == 404 and err.value.error == "ReferenceNotFoundError"


def test_duplicate_upload_is_a_no_op_that_keeps_the_art(server: dict[str, object], tmp_path: Path) -> None:
    art = tmp_path / "hana.png"
    reference_art("hana").save(art)
    sha = hashlib.sha256(art.read_bytes()).hexdigest()
    with _admin(server) as mc:
        first = mc.add_reference(art, "hana", franchise="Test")
        kept = _uploads(server) / f"{sha[:16]}.png"
        assert first["added"] == [sha[:16]] and first["duplicate_of"] is None and kept.is_file()
        copy = tmp_path / "same image, other name.PNG"
        shutil.copy(art, copy)
        again = mc.add_reference(copy, "someone-else")
        assert again["added"] == [] and again["generation"] == first["generation"]
        assert again["duplicate_of"] == {"id": sha[:16], "sha256": sha, "character": "hana"}
        assert kept.is_file() and hashlib.sha256(kept.read_bytes()).hexdigest() == sha
        assert "someone-else" not in mc.index()["characters"]
        scene, _ = composite(draw_scene("dup"), reference_art("hana").convert("RGBA"), height_frac=0.6, x_frac=0.6)
        result = mc.score(_png(scene), filename="scene.png")
        assert result["verdict"] == "flag" and result["characters"][0]["character"] == "hana"
        seg = result["characters"][0]["segments"][0]
        assert seg["reference_id"] == sha[:16] and Path(seg["reference"]) == kept
        result["path"] = str(tmp_path / "scene.png")
        scene.save(result["path"])
        (tmp_path / "files").mkdir()
        refs = report_data([result], tmp_path / "files", tmp_path)["references"]
        assert [r[2] for r in refs] == [""] and (tmp_path / "files" / refs[0][1]).is_file()  # thumbnail made
        gone = mc.remove_character("hana")
        assert gone["removed"] == [sha[:16]] and gone["deleted_files"] == [f"uploads/{kept.name}"]
        assert not kept.exists()


def test_cli_takedown_deletes_uploaded_art_too(server: dict[str, object], tmp_path: Path) -> None:
    art = tmp_path / "iori.webp"
    reference_art("iori").save(art, "WEBP", lossless=True)
    with _admin(server) as mc:
        ref = mc.add_reference(art, "iori")["added"][0]
        kept = _uploads(server) / f"{ref}.webp"
        assert kept.is_file()
        out = run_cli("index", "remove", server["index"], "--character", "iori", check=True)
        assert f"deleted {kept}" in out.stderr and not kept.exists()
        mc.reload()
        assert "iori" not in mc.index()["characters"]


def test_form_fields_are_capped(server: dict[str, object], tmp_path: Path) -> None:
    png = _png(reference_art("jun"))
    limit = 64 * 1024
    before = set(_uploads(server).glob("*")) if _uploads(server).exists() else set()
    with _http(server) as c:
        ok = c.post("/v1/score", data={"note": "x" * limit}, files={"file": ("a.png", png, "image/png")})
        assert ok.status_code == 200, ok.text
        _error(c.post("/v1/score", data={"note": "x" * (limit + 1)}, files={"file": ("a.png", png, "image/png")}),
               413, "FormFieldTooLarge", "max_field_bytes")
        fields = {f"f{i}": "v" for i in range(31)}  # + the file part: 32 parts
        assert c.post("/v1/score", data=fields, files={"file": ("a.png", png)}).status_code == 200
        _error(c.post("/v1/score", data={**fields, "f31": "v"}, files={"file": ("a.png", png)}),
               413, "TooManyFormFields", "max_form_fields")
        big = {"character": "jun", "license": "y" * (1024 * 1024)}  # a 1 MiB field, inside the upload limit
        _error(c.post("/v1/admin/references", data=big, files={"file": ("jun.png", png)}),
               413, "FormFieldTooLarge", "max_field_bytes")
        many = {"character": "jun", **{f"x{i}": "" for i in range(40)}}
        _error(c.post("/v1/admin/references", data=many, files={"file": ("jun.png", png)}),
               413, "TooManyFormFields", "max_form_fields")
        assert "jun" not in c.get("/v1/index").json()["characters"]
    after = set(_uploads(server).glob("*")) if _uploads(server).exists() else set()
    assert after == before  # nothing kept for refused uploads
    assert not list((Path(str(server["root"])) / "tmp").glob("mamori-*"))  # temporary folders removed


def _part(headers: str, body: bytes) -> bytes:
    return b"--XyZ\r\n" + headers.encode() + b"\r\n\r\n" + body + b"\r\n"


def test_multipart_parts_are_decoded_and_checked(server: dict[str, object]) -> None:
    png = _png(reference_art("kei"))
    ctype = {"content-type": "multipart/form-data; boundary=XyZ"}
    file_b64 = _part('Content-Disposition: form-data; name="file"; filename="k.png"\r\n'
                     "Content-Transfer-Encoding: base64", base64.b64encode(png))
    with _http(server) as c:
        r = c.post("/v1/score", content=file_b64 + b"--XyZ--\r\n", headers=ctype)
        assert r.status_code == 200 and r.json()["path"] == "k.png" and r.json()["frames"] == 1, r.text
        nameless = _part("Content-Disposition: form-data", b"x")
        r = c.post("/v1/score", content=nameless + file_b64 + b"--XyZ--\r\n", headers=ctype)
        assert r.status_code == 400 and r.json()["error"] == "BadMultipart"
        other = _part('Content-Disposition: form-data; name="other"; filename="o.png"', png)
        r = c.post("/v1/score", content=other + b"--XyZ--\r\n", headers=ctype)  # a file part, not `file`
        assert r.status_code == 422 and r.json()["error"] == "MissingFile"
