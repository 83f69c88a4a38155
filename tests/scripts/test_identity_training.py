"""The identity corpus and training scripts on a tiny synthetic corpus (CI never trains the real model)."""

from __future__ import annotations

import csv
import importlib.util
import json
import random
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _script(name: str) -> ModuleType:
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


corpus_mod = _script("identity_corpus")
train_mod = _script("train_identity")

SHAPES = ["ellipse", "rectangle", "triangle"]
COLOURS = [(220, 40, 40), (40, 200, 60), (50, 80, 230), (230, 200, 40), (160, 60, 200), (40, 200, 200)]


def _drawing(identity: int, pose: int) -> Image.Image:
    """A character: its own shape and colour, drawn in another pose (rotation, limb) per drawing."""
    im = Image.new("RGBA", (48, 64), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    colour, shape = COLOURS[identity], SHAPES[identity % 3]
    box = (8, 8 + pose * 2, 40, 56 - pose * 2)
    if shape == "triangle":
        d.polygon([(24, box[1]), (box[0], box[3]), (box[2], box[3])], fill=colour + (255,))
    else:
        getattr(d, shape)(box, fill=colour + (255,))
    d.line((24, 30, 24 + 12 * (pose - 1), 4), fill=(20, 20, 20, 255), width=3)
    return im.rotate(pose * 12 - 12, expand=False)


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    rows = []
    for i in range(6):
        split = "train" if i < 4 else "val"
        for pose in range(3):
            rel = f"images/src/{i}/{pose:03d}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            _drawing(i, pose).save(root / rel)
            rows.append({"path": rel, "identity": f"src/{i}", "source": "src", "split": split})
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (root / "scenes").mkdir()
    for k in range(2):
        Image.effect_noise((160, 120), 40 + k * 20).convert("RGB").save(root / "scenes" / f"{k:04d}.jpg")
    return root


def test_corpus_refuses_wesnoth(tmp_path: Path) -> None:
    with pytest.raises(corpus_mod.WesnothRefused):
        corpus_mod.refuse_wesnoth("/x/wesnoth-1.16-data/usr/share/games/wesnoth/images/units/elves.png")
    with pytest.raises(corpus_mod.WesnothRefused):  # refused before anything is downloaded
        corpus_mod.fetch(tmp_path, ["wesnoth-1.16-data"])
    art = tmp_path / "Wesnoth" / "usr/share/games/supertux2/images/creatures/x"
    art.mkdir(parents=True)
    (art / "x.sprite").write_text('(images "a.png")')
    with pytest.raises(corpus_mod.WesnothRefused):  # a path met while walking a package
        list(corpus_mod.supertux(tmp_path / "Wesnoth"))
    assert list(corpus_mod.supertux(tmp_path / "none")) == []


def test_corpus_cleaning() -> None:
    blank = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    assert corpus_mod.clean(blank) is None
    tiny = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    tiny.paste((200, 10, 10, 255), (0, 0, 8, 8))
    assert corpus_mod.clean(tiny) is None  # 8 px after the alpha crop
    art = _drawing(0, 1)
    kept = corpus_mod.clean(art)
    assert kept is not None and kept.size[0] < art.size[0]  # cropped to the alpha box
    h0, h1 = corpus_mod.pdq(kept), corpus_mod.pdq(kept.resize((kept.width * 2, kept.height * 2)))
    assert np.count_nonzero(h0 != h1) <= corpus_mod.NEAR_DUP  # a rescaled copy is a near-duplicate
    assert corpus_mod.lua_sheets("walk = { columns = 3, hotspot = {1, 2}, frames = 10, rows = 4 }") == {"walk": (10, 4, 3)}


def _tileset(root: Path, name: str, sheets: list[tuple[str, int, list[dict[str, object]]]]) -> None:
    """A Cataclysm: DDA tileset: sheets of 16 x 16 sprites (sprite k drawn in colour k), a tile_config.json."""
    folder = root / "usr/share/games/cataclysm-dda/gfx" / name
    folder.mkdir(parents=True)
    entries, first = [], 0
    for file, count, tiles in sheets:
        sheet = Image.new("RGBA", (16 * count, 16), (0, 0, 0, 0))
        draw = ImageDraw.Draw(sheet)
        for k in range(count):
            draw.ellipse((16 * k + 2, 2, 16 * k + 13, 13), fill=(10 * (first + k), 250 - 10 * (first + k), 90, 255))
        if file == "solid.png":
            sheet = Image.new("RGBA", (16 * count, 16), (0, 0, 0, 255))  # glyph blocks, fully opaque
        sheet.save(folder / file)
        entries.append({"file": file, "tiles": tiles})
        first += count
    (folder / "tile_config.json").write_text(json.dumps({"tile_info": [{"width": 16, "height": 16}], "tiles-new": entries}))


def test_cataclysm_tiles_are_cut_by_their_global_sprite_index(tmp_path: Path) -> None:
    _tileset(tmp_path, "ArtistA", [
        ("a.png", 3, [{"id": "mon_zombie", "fg": 0}, {"id": ["mon_dog", "mon_wolf"], "fg": 1}]),
        ("b.png", 2, [{"id": "mon_bat", "fg": [{"weight": 1, "sprite": 4}]}, {"id": "t_floor", "fg": 3}]),
    ])
    _tileset(tmp_path, "ArtistB", [("solid.png", 2, [{"id": "mon_zombie", "fg": 0}, {"id": "mon_bat", "fg": 1}])])
    broken = tmp_path / "usr/share/games/cataclysm-dda/gfx/Broken"
    broken.mkdir()
    (broken / "tile_config.json").write_text('{"tiles-new": [{"file": "x.png", "sprite_width": 0')  # truncated
    got = list(corpus_mod.cataclysm(tmp_path))  # the damaged tileset is skipped with a message
    # sprite 1 is shared by two monsters (nobody's), t_floor is no monster, ArtistB's tiles are solid blocks
    assert [(d.identity, d.artist) for d in got] == [("cataclysm/zombie", "ArtistA"), ("cataclysm/bat", "ArtistA")]
    bat = got[1].image
    assert bat.size == (32, 32)  # blown up nearest-neighbour from 16 px
    assert bat.getpixel((16, 16))[:3] == (40, 210, 90)  # sprite 4 = the second sheet's second cell
    assert got[1].origin.endswith("ArtistA/b.png")


def test_views_are_seeded_and_composited() -> None:
    art = _drawing(2, 0)
    scene = Image.effect_noise((200, 150), 50).convert("RGB")
    a = train_mod.compose(art, scene, random.Random("s/0"))
    b = train_mod.compose(art, scene, random.Random("s/0"))
    assert a.size == (train_mod.SIZE, train_mod.SIZE) and a.mode == "RGB"
    assert a.tobytes() == b.tobytes()
    x = train_mod.to_input([a])
    assert x.shape == (1, 3, 224, 224) and -1.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_a_training_step_lowers_the_loss(tiny_corpus: Path) -> None:
    torch.manual_seed(0)
    model = train_mod.build_model()
    images = [train_mod.compose(_drawing(i, p), None, random.Random(f"{i}/{p}")) for i in range(4) for p in range(3)]
    labels = torch.tensor([i for i in range(4) for _ in range(3)])
    feats = train_mod.cache_features(model, images, torch.device("cpu")).float()
    params = train_mod.trainable(model)
    opt = torch.optim.AdamW(params, lr=1e-3)
    model.train()
    losses = []
    with torch.enable_grad():  # another test's load_backbone may have turned autograd off process-wide
        for _ in range(8):
            loss = train_mod.supcon(torch.nn.functional.normalize(train_mod.trained_part(model, feats), dim=-1), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses


def test_supcon_orders_embeddings() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    good = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1], [0.1, 1.0], [-0.1, 1.0]]), dim=-1)
    bad = good[[0, 2, 1, 3]]
    assert train_mod.supcon(good, labels) < train_mod.supcon(bad, labels)


def test_train_checkpoints_resumes_and_exports(tiny_corpus: Path, tmp_path: Path) -> None:
    from detector.embed.backbone_identity import load_identity

    work, out = tmp_path / "work", tmp_path / "w.safetensors"
    args = ["--corpus", str(tiny_corpus), "--work", str(work), "--steps", "3", "--views", "2", "--p", "3",
            "--k", "2", "--device", "cpu", "--export", str(out)]
    with torch.enable_grad():  # main turns autograd on (load_backbone turns it off); restored after
        assert train_mod.main(args) == 0
    metrics = json.loads((work / "metrics.json").read_text())
    assert {"imagenet", "trained"} <= set(metrics) and 0.0 <= metrics["trained"]["val_pair_f1_oof"] <= 1.0
    state = torch.load(work / "checkpoint.pt", weights_only=True)
    assert int(state["step"]) == 3
    model = load_identity(out)  # the exported file loads into the shipped architecture
    x = torch.zeros(1, 3, 224, 224)
    first = model(x)
    with torch.enable_grad():
        assert train_mod.main(args) == 0  # resumes at step 3 of 3: trains nothing more, same weights
    np.testing.assert_allclose(load_identity(out)(x).detach().numpy(), first.detach().numpy(), atol=1e-6)
