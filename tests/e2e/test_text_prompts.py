"""End to end through the real `mamori` command (subprocesses): `index build --prompts`, `index info`,
`scan` reporting a text hit, `index remove`.

No real CLIP weights can be had here, so the tiny test model is made to "understand" one prompt:
its text projection is changed so that the prompt embeds onto the direction of one image (a
checkerboard), centred on the background mean as the index will centre it. The image tower is unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from helpers import run_cli
from PIL import Image

from detector.embed.backbones import load_backbone
from detector.embed.embedding import RegionEmbedder
from index.images import IMAGE_SUFFIXES, open_image

PROMPT = "a black and white checkerboard"


def _tied_model(tiny: dict[str, Any], background: Path, target: Path, out: Path) -> str:
    """The tiny CLIP with a text projection that maps PROMPT onto `target`'s centred whole-image vector."""
    import open_clip
    import torch
    from safetensors.torch import load_file, save_file

    embedder = RegionEmbedder(load_backbone(tiny["name"], precision="fp32"))
    files = sorted(p for p in background.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    centre = np.concatenate(embedder.embed_queries([open_image(p) for p in files])).mean(axis=0)
    v = embedder.embed_queries([open_image(target)])[0][0] - centre
    arch = tiny["config"].stem
    model = open_clip.create_model(arch, pretrained=str(tiny["weights"])).eval()
    state = load_file(str(tiny["weights"]))
    eye = torch.eye(state["text_projection"].shape[0])
    with torch.no_grad():
        model.text_projection.copy_(eye)
        h = model.encode_text(open_clip.get_tokenizer(arch)([PROMPT]))[0]
    d = torch.from_numpy(v / np.linalg.norm(v)) * h.norm()
    state["text_projection"] = (eye + torch.outer(h, d - h) / h.dot(h)).contiguous()  # h @ P = d
    save_file(state, str(out))
    return f"openclip:{tiny['config']}:{out}"


def test_cli_text_prompts_end_to_end(tiny_clip_text: dict[str, Any], refs_dir: Path, small_background: Path,
                                     tmp_path: Path) -> None:
    target = tmp_path / "checkerboard.png"
    Image.fromarray((np.indices((160, 160)).sum(axis=0) // 10 % 2 * 255).astype(np.uint8)).convert("RGB").save(target)
    backbone = _tied_model(tiny_clip_text, small_background, target, tmp_path / "tied.safetensors")
    prompts = tmp_path / "prompts.csv"
    prompts.write_text(f"character,prompt\nakane,{PROMPT}\nbenkei,a monk with a halberd\nakane,a red scarf\n")
    idx = tmp_path / "idx"

    run_cli("index", "build", str(refs_dir), "--out", str(idx), "--backbone", backbone, "--background",
            str(small_background), "--prompts", str(prompts), "--precision", "fp32", "-q", check=True)
    text = run_cli("index", "info", str(idx), check=True).stdout
    assert "(format 4," in text and "3 text prompt(s)" in text and "calibration background (n=12)" in text
    assert f"text:akane:1{' ' * 13}{PROMPT}" in text and "text:akane:2" in text and "text:benkei:1" in text

    out = tmp_path / "r.jsonl"
    code = run_cli("scan", str(target), "--index", str(idx), "--out", str(out), "--csv", str(tmp_path / "r.csv"),
                   "--precision", "fp32", "-q").returncode
    record = json.loads(out.read_text())
    top = record["characters"][0]
    seg = top["segments"][0]
    assert code == 1 and record["verdict"] == "flag" and top["character"] == "akane", record
    assert (seg["channel"], seg["reference_id"], seg["reference"]) == ("text", "text:akane:1", PROMPT)
    assert f",{PROMPT},text," in (tmp_path / "r.csv").read_text()

    # a character's prompts go with its last reference
    run_cli("index", "remove", str(idx), "--character", "akane", check=True)
    info = json.loads(run_cli("index", "info", str(idx), "--json", check=True).stdout)
    assert info["text"]["prompts"] == 1 and info["characters"]["benkei"]["prompts"][0]["id"] == "text:benkei:1"
    assert "akane" not in info["characters"]
