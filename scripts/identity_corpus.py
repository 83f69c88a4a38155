"""Build the identity corpus: many drawings per character, cut from Debian's game-art packages.

    python scripts/identity_corpus.py --out ~/.cache/mamori/identity-corpus [--packages DIR]

Steps, in order (deterministic: same packages, same manifest):
1. fetch: `apt-get download` each package into `--packages` and unpack it with `dpkg -x` (skipped
   where the unpacked tree is already there);
2. cut: each source's sprite sheets, animation atlases and vector decks into single drawings, each
   with its provenance (package, tileset or deck = artist, animation, direction, licence);
3. clean: crop to the drawing's alpha box; drop blank, tiny and near-duplicate drawings (PDQ within
   an identity, Hamming distance <= NEAR_DUP) and exact copies across identities;
4. group and split: an identity is one character of one game (freeciv units, card faces and
   Cataclysm: DDA's monsters group across tilesets and decks: one character drawn by several
   artists). Identities are split train/val by a hash of their name; one whole source
   (HELD_OUT_SOURCE) is held out as an unseen domain;
5. write `images/`, `manifest.csv` (one row a drawing), `scenes/` (backgrounds for compositing, from
   the same packages) and print counts per source.

Wesnoth art is the evaluation domain and is never training data: every path is checked
(`refuse_wesnoth`) and the script stops on one.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pdqhash
from PIL import Image

#: package -> licence of its art (from each package's debian/copyright; the model card repeats it)
PACKAGES = {
    "freeciv-data": "GPL-2.0-or-later",
    "widelands-data": "GPL-2.0-or-later",
    "supertux-data": "GPL-3.0-or-later / CC-BY-SA-3.0",
    "flare-game": "CC-BY-SA-3.0",
    "kdegames-card-data-kf5": "LGPL-2.0-or-later / GPL-2.0-or-later / public domain (per deck)",
    "hedgewars-data": "GPL-2.0-only / CC-BY-SA",
    "freedroidrpg-data": "GPL-2.0-or-later",
    "cataclysm-dda-data": "CC-BY-SA-3.0",
}
HELD_OUT_SOURCE = "flare"
#: animations that are another medium than the sprite: a menu icon, a painted/rendered portrait
MEDIA = ("icon", "portrait")
VAL_SHARE = 0.12  # of the other sources' identities, by name hash
MIN_SIDE = 16  # px, after cropping to alpha
MIN_OPAQUE = 0.06  # share of opaque pixels
NEAR_DUP = 24  # PDQ Hamming distance (of 256 bits) under which two drawings of an identity are one
MAX_PER_IDENTITY = 24
OPAQUE_BLOCK = 0.95  # cataclysm: a tile this opaque is a glyph on a block
MAX_SIDE = 256  # longer side of a stored drawing (big art is shrunk, small sprites kept as drawn)


class WesnothRefused(ValueError):
    """A Wesnoth path reached the corpus: the evaluation domain is never training data."""


def refuse_wesnoth(path: str | Path) -> None:
    if "wesnoth" in str(path).lower():
        raise WesnothRefused(f"refusing Wesnoth art (the evaluation domain): {path}")


@dataclass
class Drawing:
    identity: str  # "source/name"
    source: str
    package: str
    artist: str  # tileset / deck / "-" where one artist drew the whole source
    animation: str
    direction: str
    origin: str  # file the drawing was cut from, relative to the package root
    image: Image.Image = field(repr=False)


# --- fetch ------------------------------------------------------------------------------------


def fetch(packages_dir: Path, names: list[str]) -> dict[str, Path]:
    packages_dir.mkdir(parents=True, exist_ok=True)
    roots = {}
    for name in names:
        refuse_wesnoth(name)
        root = packages_dir / name
        if not root.is_dir():
            debs = sorted(packages_dir.glob(f"{name}_*.deb"))
            if not debs:
                subprocess.run(["apt-get", "download", name], cwd=packages_dir, check=True,
                               stdout=subprocess.DEVNULL)
                debs = sorted(packages_dir.glob(f"{name}_*.deb"))
            subprocess.run(["dpkg", "-x", str(debs[-1]), str(root)], check=True)
        roots[name] = root
    return roots


def _files(root: Path, pattern: str) -> list[Path]:
    out = sorted(root.rglob(pattern))
    for p in out:
        refuse_wesnoth(p)
    return out


def _rgba(path: Path) -> Image.Image:
    im = Image.open(path)
    im.load()
    return im.convert("RGBA")


# --- sources ----------------------------------------------------------------------------------


def freeciv(root: Path) -> Iterator[Drawing]:
    """Units of the amplio2, trident and cimpletoon tilesets: one unit, three artists' tilesets."""
    base = root / "usr/share/games/freeciv"
    for spec in [base / "amplio2/units.spec", base / "trident/units.spec", base / "cimpletoon/orient_units.spec",
                 base / "amplio2/extra_units.spec", base / "trident/extra_units.spec"]:
        if not spec.exists():
            continue
        text = spec.read_text(encoding="utf-8", errors="replace")
        gfx = re.search(r'gfx\s*=\s*"([^"]+)"', text)
        if gfx is None:
            continue
        sheet = _rgba(base / f"{gfx.group(1)}.png")
        tileset = spec.parent.name
        for grid in re.split(r"\n\[grid_", text)[1:]:
            num = {k: int(v) for k, v in re.findall(r"^(x_top_left|y_top_left|dx|dy|pixel_border)\s*=\s*(\d+)", grid, re.MULTILINE)}
            if not {"dx", "dy"} <= set(num):
                continue
            x0, y0, b = num.get("x_top_left", 0), num.get("y_top_left", 0), num.get("pixel_border", 0)
            for row, col, tag in re.findall(r'^\s*(\d+)\s*,\s*(\d+)\s*,\s*"u\.([a-z_]+)"', grid, re.MULTILINE):
                name, direction = tag, "-"
                m = re.match(r"(.+)_(n|ne|e|se|s|sw|w|nw)$", tag)
                if m:
                    name, direction = m.groups()
                x, y = x0 + int(col) * (num["dx"] + b), y0 + int(row) * (num["dy"] + b)
                tile = sheet.crop((x, y, x + num["dx"], y + num["dy"]))
                yield Drawing(f"freeciv/{name}", "freeciv", "freeciv-data", tileset, "unit", direction,
                              str(spec.relative_to(root)), tile)


def lua_sheets(text: str) -> dict[str, tuple[int, int, int]]:
    """`name = { ... frames = F, rows = R, columns = C ... }` blocks of a Widelands init.lua (any key order)."""
    text = re.sub(r"--[^\n]*", "", text)
    out = {}
    for m in re.finditer(r"(\w+)\s*=\s*\{", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        body = text[m.end() : i]
        nums = {k: re.search(rf"\b{k}\s*=\s*(\d+)", body) for k in ("frames", "rows", "columns")}
        if all(nums.values()) and "spritesheets" not in m.group(1):
            out.setdefault(m.group(1), tuple(int(v.group(1)) for v in nums.values() if v))  # type: ignore[arg-type]
    return out  # type: ignore[return-value]


_DIRS = ("e", "ne", "se", "sw", "w", "nw")


def widelands(root: Path) -> Iterator[Drawing]:
    """Workers of each tribe and the world's critters: animations in six directions, plus the icon."""
    data = root / "usr/share/games/widelands/data"
    dirs = sorted({p.parent for p in _files(data / "tribes/workers", "init.lua")} |
                  {p.parent for p in _files(data / "world/critters", "init.lua")})
    for d in dirs:
        kind = "critter" if "critters" in d.parts else d.parent.name
        ident = f"widelands/{kind}/{d.name}"
        sheets = lua_sheets((d / "init.lua").read_text())
        if (d / "menu.png").exists():
            yield Drawing(ident, "widelands", "widelands-data", "-", "icon", "-", str((d / "menu.png").relative_to(root)),
                          _rgba(d / "menu.png"))
        for png in sorted(d.glob("*_1.png")):
            stem = png.name[: -len("_1.png")]
            anim, direction = stem, "-"
            m = re.match(r"(.+)_(" + "|".join(_DIRS) + r")$", stem)
            if m:
                anim, direction = m.groups()
            im = _rgba(png)
            if anim in sheets:
                frames, rows, cols = sheets[anim]
                w, h = im.width // cols, im.height // rows
                picks = sorted({0, frames // 2})
                crops = [im.crop(((i % cols) * w, (i // cols) * h, (i % cols + 1) * w, (i // cols + 1) * h)) for i in picks]
            else:
                crops = [im] if max(im.size) <= 80 else []  # an unparsed sheet is not one drawing
            for c in crops:
                yield Drawing(ident, "widelands", "widelands-data", "-", anim, direction, str(png.relative_to(root)), c)


def supertux(root: Path) -> Iterator[Drawing]:
    """Creatures: each `.sprite` file is one character, its actions' frames its drawings."""
    base = root / "usr/share/games/supertux2/images/creatures"
    for sprite in _files(base, "*.sprite"):
        names = sorted(set(re.findall(r'"([^"]+\.png)"', sprite.read_text(errors="replace"))))
        ident = f"supertux/{sprite.parent.name}/{sprite.stem}"
        for n in names:
            png = sprite.parent / n
            if png.exists():
                yield Drawing(ident, "supertux", "supertux-data", "-", png.stem, "-", str(png.relative_to(root)), _rgba(png))


def flare(root: Path) -> Iterator[Drawing]:
    """Enemies and NPCs: animation atlases, first frame of each animation in each of 8 directions."""
    base = root / "usr/share/games/flare/mods/fantasycore"
    seen: set[str] = set()
    for txt in _files(base / "animations/enemies", "*.txt") + _files(base / "animations/npcs", "*.txt"):
        text = txt.read_text(errors="replace")
        img = re.search(r"^image=(\S+)", text, re.MULTILINE)
        if img is None or img.group(1) in seen or not (base / img.group(1)).exists():
            continue
        seen.add(img.group(1))
        atlas = _rgba(base / img.group(1))
        ident = f"flare/{Path(img.group(1)).stem}"
        for section in re.split(r"^\[", text, flags=re.MULTILINE)[1:]:
            anim = section.split("]", 1)[0]
            for idx, direction, x, y, w, h in re.findall(r"^frame=(\d+),(\d+),(\d+),(\d+),(\d+),(\d+)", section, re.MULTILINE):
                if idx == "0":
                    x0, y0 = int(x), int(y)
                    yield Drawing(ident, "flare", "flare-game", "-", anim, direction, img.group(1),
                                  atlas.crop((x0, y0, x0 + int(w), y0 + int(h))))


def cards(root: Path) -> Iterator[Drawing]:
    """Face cards (jack, queen, king of each suit) in the 16 decks: one card, 16 artists."""
    rsvg = shutil.which("rsvg-convert")
    if rsvg is None:
        print("cards: rsvg-convert not found (apt-get install librsvg2-bin); skipped", file=sys.stderr)
        return
    for deck in _files(root / "usr/share/carddecks", "*.svgz"):
        svg = gzip.decompress(deck.read_bytes())
        for rank in ("jack", "queen", "king"):
            for suit in ("club", "diamond", "heart", "spade"):
                card = f"{rank}_{suit}"
                proc = subprocess.run([rsvg, "-i", card, "-h", "256", "-f", "png"], input=svg, capture_output=True,
                                      check=False)
                if proc.returncode == 0 and proc.stdout:
                    yield Drawing(f"cards/{card}", "cards", "kdegames-card-data-kf5", deck.parent.name, "face", "-",
                                  str(deck.relative_to(root)), Image.open(io.BytesIO(proc.stdout)).convert("RGBA"))


def freedroid(root: Path) -> Iterator[Drawing]:
    """Droids and people: a rendered portrait and the in-game sprite in 8 rotations (atlas)."""
    for atlas in _files(root / "usr/share/freedroidrpg/data/graphics/droids", "atlas.txt"):
        d = atlas.parent
        ident = f"freedroid/{d.name}"
        if (d / "portrait.png").exists():
            yield Drawing(ident, "freedroid", "freedroidrpg-data", "-", "portrait", "-",
                          str((d / "portrait.png").relative_to(root)), _rgba(d / "portrait.png"))
        sheet: Image.Image | None = None
        for line in atlas.read_text(errors="replace").splitlines():
            if line.startswith("*"):
                sheet = _rgba(d / line.split()[1])
                continue
            m = re.match(r"\S*rot_(\d+)_(\w+?)-(\d+)\.png (\d+) (\d+) (\d+) (\d+)", line)
            if sheet is not None and m and int(m.group(3)) == 1:
                x, y, w, h = (int(v) for v in m.group(4, 5, 6, 7))
                yield Drawing(ident, "freedroid", "freedroidrpg-data", "-", m.group(2), m.group(1), str(atlas.relative_to(root)),
                              sheet.crop((x, y, x + w, y + h)))


def hedgewars(root: Path) -> Iterator[Drawing]:
    """Hats: each a strip of 32x32 frames (the hat worn turning and bobbing)."""
    for png in _files(root / "usr/share/games/hedgewars/Data/Graphics/Hats", "*.png"):
        im = _rgba(png)
        if im.width != 32 or im.height % 32:
            continue
        for i in range(im.height // 32):
            yield Drawing(f"hedgewars/{png.stem}", "hedgewars", "hedgewars-data", "-", "hat", str(i),
                          str(png.relative_to(root)), im.crop((0, i * 32, 32, i * 32 + 32)))


def _sprite_ids(fg: object) -> list[int]:
    """A tile's `fg`: one sprite index, a list of them, or weighted variants ({"sprite": ...})."""
    if isinstance(fg, int):
        return [fg]
    if isinstance(fg, dict):
        return _sprite_ids(fg.get("sprite"))
    if isinstance(fg, list):
        return [i for v in fg for i in _sprite_ids(v)]
    return []


def cataclysm(root: Path) -> Iterator[Drawing]:
    """Monsters of Cataclysm: DDA's tilesets: one monster id, drawn in up to ten artists' tilesets.

    A tileset numbers its sprites across its sheets in order (each sheet's grid of sprite_width x
    sprite_height cells, left to right, top to bottom). A sprite that one tileset uses for two or
    more monsters (a generic zombie) belongs to none of them. Tiles are 10-32 px: each is blown up
    nearest-neighbour to at least 32 px a side before cleaning, as the game shows it.
    """
    gfx = root / "usr/share/games/cataclysm-dda/gfx"
    for config in _files(gfx, "tile_config.json"):
        if config.parent == gfx:  # the default tileset's copy of one of the others
            continue
        try:
            drawings = list(_tileset(config, root))  # all or nothing: a damaged tileset adds none
        except (OSError, ValueError, TypeError, KeyError, ZeroDivisionError) as exc:  # a damaged tileset
            print(f"cataclysm: skipped {config.parent.name} ({type(exc).__name__}: {exc})", file=sys.stderr)
            continue
        yield from drawings


def _tileset(config: Path, root: Path) -> Iterator[Drawing]:
    """One Cataclysm tileset's monster drawings (see `cataclysm`)."""
    cfg = json.loads(config.read_text(encoding="utf-8"))
    info = (cfg.get("tile_info") or [{}])[0]
    sheets, users = [], defaultdict(set)
    first = 0
    for sheet in cfg.get("tiles-new", []):
        path = config.parent / str(sheet.get("file", ""))
        if not path.is_file():
            continue
        w, h = int(sheet.get("sprite_width", info.get("width", 32))), int(sheet.get("sprite_height", info.get("height", 32)))
        with Image.open(path) as im:
            cols, rows = im.width // w, im.height // h
        sheets.append((first, first + cols * rows, path, w, h, cols))
        first += cols * rows
        for tile in sheet.get("tiles", []):
            ids = tile.get("id")
            for ident in ids if isinstance(ids, list) else [ids]:
                if isinstance(ident, str) and ident.startswith("mon_"):
                    for i in _sprite_ids(tile.get("fg"))[:2]:  # the drawing and one variant at most
                        users[i].add(ident)
    opened: dict[Path, Image.Image] = {}
    for index, idents in sorted(users.items()):
        if len(idents) != 1:
            continue
        for lo, hi, path, w, h, cols in sheets:
            if lo <= index < hi:
                sheet_im = opened.setdefault(path, _rgba(path))
                k = index - lo
                x, y = (k % cols) * w, (k // cols) * h
                factor = -(-32 // max(w, h))
                tile_im = sheet_im.crop((x, y, x + w, y + h)).resize((w * factor, h * factor), Image.Resampling.NEAREST)
                if (np.asarray(tile_im.getchannel("A")) > 127).mean() > OPAQUE_BLOCK:
                    break  # a glyph on a solid block (RetroDays, NeoDays), not a cut-out drawing
                yield Drawing(f"cataclysm/{next(iter(idents))[4:]}", "cataclysm", "cataclysm-dda-data",
                              config.parent.name, "tile", "-", str(path.relative_to(root)), tile_im)
                break


SOURCES = {"freeciv": ("freeciv-data", freeciv), "widelands": ("widelands-data", widelands),
           "supertux": ("supertux-data", supertux), "flare": ("flare-game", flare),
           "cards": ("kdegames-card-data-kf5", cards), "freedroid": ("freedroidrpg-data", freedroid),
           "hedgewars": ("hedgewars-data", hedgewars), "cataclysm": ("cataclysm-dda-data", cataclysm)}
#: backgrounds for compositing training views: (package, folder, glob)
SCENES = [("supertux-data", "usr/share/games/supertux2/images/background", "*.*g"),
          ("flare-game", "usr/share/games/flare/mods/fantasycore/images/menus/backgrounds", "*.png"),
          ("hedgewars-data", "usr/share/games/hedgewars/Data/Themes", "Sky.png")]


# --- clean ------------------------------------------------------------------------------------


def clean(im: Image.Image) -> Image.Image | None:
    """Crop to the alpha box; None for a blank or tiny drawing."""
    a = np.asarray(im.getchannel("A"))
    if (a > 127).mean() < MIN_OPAQUE:
        return None
    box = im.getchannel("A").point(lambda v: 255 if v > 16 else 0).getbbox()
    if box is None:
        return None
    im = im.crop(box)
    if min(im.size) < MIN_SIDE:
        return None
    rgb = np.asarray(im.convert("RGB"), np.float32)[a[box[1]:box[3], box[0]:box[2]] > 127]
    if rgb.size == 0 or rgb.std() < 4.0:
        return None
    if max(im.size) > MAX_SIDE:
        im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return im


def pdq(im: Image.Image) -> np.ndarray:
    """PDQ hash (256 bools) of the drawing flattened on grey, at 128 x 128."""
    flat = Image.new("RGB", im.size, (128, 128, 128))
    flat.paste(im, mask=im.getchannel("A"))
    # one fixed size: a drawing and its rescaled copy hash alike (PDQ itself works at 64 x 64)
    flat = flat.resize((128, 128), Image.Resampling.BILINEAR)
    bits, _ = pdqhash.compute(np.ascontiguousarray(np.asarray(flat)))
    return bits.astype(bool)


def _split(identity: str, source: str) -> str:
    if source == HELD_OUT_SOURCE:
        return "heldout"
    h = int(hashlib.sha256(identity.encode()).hexdigest()[:8], 16) / 2**32
    return "val" if h < VAL_SHARE else "train"


def build(roots: dict[str, Path], out: Path, sources: list[str]) -> list[dict[str, str]]:
    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    rows: list[dict[str, str]] = []
    exact: set[str] = set()
    for source in sources:
        package, cut = SOURCES[source]
        groups: dict[str, list[tuple[Drawing, Image.Image, np.ndarray]]] = defaultdict(list)
        for d in cut(roots[package]):
            im = clean(d.image)
            if im is None:
                continue
            digest = hashlib.sha256(im.tobytes()).hexdigest()
            if digest in exact:
                continue
            h = pdq(im)
            kept = groups[d.identity]
            if any(np.count_nonzero(h != k[2]) <= NEAR_DUP for k in kept):
                continue
            exact.add(digest)
            kept.append((d, im, h))
        for ident, kept in sorted(groups.items()):
            if len(kept) > MAX_PER_IDENTITY:  # evenly through the cut order
                kept = [kept[i] for i in np.linspace(0, len(kept) - 1, MAX_PER_IDENTITY).round().astype(int)]
            folder = out / "images" / ident
            folder.mkdir(parents=True, exist_ok=True)
            for n, (d, im, h) in enumerate(kept):
                rel = f"images/{ident}/{n:03d}.png"
                im.save(out / rel)
                rows.append({"path": rel, "identity": ident, "source": source, "package": package, "artist": d.artist,
                             "animation": d.animation, "direction": d.direction, "origin": d.origin,
                             "licence": PACKAGES[package], "split": _split(ident, source),
                             "pdq": np.packbits(h).tobytes().hex(), "width": str(im.width), "height": str(im.height)})
    return rows


def write_scenes(roots: dict[str, Path], out: Path) -> int:
    (out / "scenes").mkdir(parents=True, exist_ok=True)
    n = 0
    for package, folder, pattern in SCENES:
        if package not in roots:
            continue
        for p in _files(roots[package] / folder, pattern):
            try:
                im = Image.open(p).convert("RGB")
            except OSError:
                continue
            if min(im.size) >= 128:
                im.thumbnail((640, 640))
                im.save(out / "scenes" / f"{n:04d}.jpg", quality=90)
                n += 1
    return n


def report(rows: list[dict[str, str]]) -> None:
    by_source: dict[str, Counter[str]] = defaultdict(Counter)
    artists: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        by_source[r["source"]][r["identity"]] += 1
        artists[r["identity"]].add(f'{r["artist"]}|{r["animation"] in MEDIA}')
    print(f'{"source":<11} {"identities":>10} {"drawings":>9} {"per id":>7} {">=2 artists/media":>18}  split')
    for source, ids in sorted(by_source.items()):
        multi = sum(len(artists[i]) >= 2 for i in ids)
        splits = Counter(r["split"] for r in rows if r["source"] == source)
        print(f"{source:<11} {len(ids):>10} {sum(ids.values()):>9} {sum(ids.values()) / len(ids):>7.1f} {multi:>18}  "
              + ", ".join(f"{k} {v}" for k, v in sorted(splits.items())))
    ids = {r["identity"] for r in rows}
    multi = sum(len(artists[i]) >= 2 for i in ids)
    print(f"{'all':<11} {len(ids):>10} {len(rows):>9} {len(rows) / max(1, len(ids)):>7.1f} {multi:>18}  "
          f"({len(by_source)} packages)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path.home() / ".cache/mamori/identity-corpus")
    ap.add_argument("--packages", type=Path, default=Path.home() / ".cache/mamori/identity-debs")
    ap.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    args = ap.parse_args(argv)
    refuse_wesnoth(args.out)
    roots = fetch(args.packages, sorted({SOURCES[s][0] for s in args.sources} | {p for p, _, _ in SCENES}))
    rows = build(roots, args.out, args.sources)
    with open(args.out / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    scenes = write_scenes(roots, args.out)
    report(rows)
    print(f"scenes: {scenes}; manifest: {args.out / 'manifest.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
