from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from index import ManifestError, ReferenceImageError, read_folder, read_manifest, read_references
from index.errors import ImageTooLargeError
from index.images import open_image


def bomb_png(path: Path, side: int = 60_000) -> Path:
    """A tiny PNG whose header claims side x side pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    raw = zlib.compress(b"\x00" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    return path


def test_open_image_rgb_and_alpha_matte(tmp_path: Path) -> None:
    im = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    im.save(tmp_path / "a.png")
    out = open_image(tmp_path / "a.png")
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (128, 128, 128)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"hello, I am text", "not an image"), (b"\x89PNG\r\n\x1a\n\x00\x00garbage", "")],
)
def test_open_image_bad_bytes(tmp_path: Path, content: bytes, message: str) -> None:
    p = tmp_path / "x.png"
    p.write_bytes(content)
    with pytest.raises(ReferenceImageError, match=message):
        open_image(p)


def test_open_image_truncated(tmp_path: Path) -> None:
    Image.effect_noise((200, 200), 50).convert("RGB").save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ReferenceImageError):
        open_image(tmp_path / "cut.png")


@pytest.mark.parametrize("side", [60_000, 8_000])  # Pillow's own guard, then mamori's 40 MP limit
def test_decompression_bomb_refused_before_decoding(tmp_path: Path, side: int) -> None:
    with pytest.raises(ImageTooLargeError, match="decompression.bomb"):
        open_image(bomb_png(tmp_path / "bomb.png", side))


def test_read_folder(tmp_path: Path) -> None:
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / c / "1.png")
    (tmp_path / "a" / "notes.txt").write_text("ignored")
    entries = read_folder(tmp_path)
    assert [(e.character, e.path.name) for e in entries] == [("a", "1.png"), ("b", "1.png")]


def test_read_folder_empty(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no images"):
        read_folder(tmp_path)


def test_read_manifest(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "img" / "x.png")
    (tmp_path / "m.csv").write_text(
        "path,character,franchise,rights_holder,license,notes\nimg/x.png,sukuna,Jujutsu Kaisen,Shueisha,licensed,hi\n"
    )
    [e] = read_manifest(tmp_path / "m.csv")
    assert e.path == (tmp_path / "img" / "x.png").resolve()
    assert (e.character, e.franchise, e.rights_holder, e.license, e.extra) == (
        "sukuna", "Jujutsu Kaisen", "Shueisha", "licensed", {"notes": "hi"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,character\nx.png,a\n", "missing column"),
        ("path,character,franchise,rights_holder,license\n", "no rows"),
        ("path,character,franchise,rights_holder,license\nx.png,,f,r,l\n", "must not be empty"),
    ],
)
def test_read_manifest_errors(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(ManifestError, match=message):
        read_manifest(tmp_path / "m.csv")


def test_read_references_needs_exactly_one(tmp_path: Path) -> None:
    with pytest.raises(ManifestError):
        read_references(None, None)
    with pytest.raises(ManifestError):
        read_references(tmp_path, tmp_path / "m.csv")
