"""`mamori demo`: a self-contained run on drawn, licence-free data, offline.

Steps: draw reference art for three "protected" characters and background scenes; render four
short clips (two show a protected character in a scene, one shows an unindexed character, one
shows none); build an index with the background set; scan the clips as `mamori scan` does (each result line
with the sha256 of the file scored, so `mamori report` on the results offers decision buttons);
print the verdicts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from detector.media.synth import composite, draw_character, draw_scene, make_clip

__all__ = ["choose_backbone", "run_demo"]

PROTECTED = {"kitsune-ko": "Demo Franchise A", "ryuu-hime": "Demo Franchise A", "tanuki-taro": "Demo Franchise B"}
CLIPS = [  # (file, character shown or None, expected verdict)
    ("kitsune-in-park.mp4", "kitsune-ko", "flag"),
    ("tanuki-in-town.mp4", "tanuki-taro", "flag"),
    ("unknown-character.mp4", "bakeneko", "no flag"),  # unindexed, unlike the protected three
    ("empty-landscape.mp4", None, "no flag"),
]


def choose_backbone(requested: str | None) -> tuple[str, str]:
    """(name, why): clip-vit-b32 when its weights load, else the offline EfficientNet backbone."""
    from detector.embed.backbones import load_backbone
    from detector.errors import BackboneUnavailableError

    if requested:
        return requested, "requested with --backbone"
    try:
        load_backbone("clip-vit-b32")
        return "clip-vit-b32", "its weights are available"
    except BackboneUnavailableError as exc:
        return "effnet-lite0-imagenet", f"clip-vit-b32 weights are not available here ({str(exc).split(';')[0]})"


def make_data(out: Path) -> None:
    refs, bg, videos = out / "refs", out / "background", out / "videos"
    for folder in (refs, bg, videos):
        folder.mkdir(parents=True, exist_ok=True)
    rows = ["path,character,franchise,rights_holder,license"]
    for name, franchise in PROTECTED.items():
        (refs / name).mkdir(exist_ok=True)
        for pose in range(2):
            rel = f"refs/{name}/{pose}.png"
            draw_character(name, 256, pose=pose).save(out / rel)
            rows.append(f"{rel},{name},{franchise},Demo Rights Holder,demo-only")
    (out / "manifest.csv").write_text("\n".join(rows) + "\n")
    for i in range(16):
        draw_scene(f"bg-{i}").save(bg / f"scene-{i}.png")
    for i in range(8):  # unprotected characters, in scenes, are part of the background too
        scene, _ = composite(draw_scene(f"bg-extra-{i}"), draw_character(f"extra-{i}", 256),
                             height_frac=0.7, x_frac=0.3 + 0.05 * i)
        scene.save(bg / f"extra-{i}.png")
    for k, (fname, who, _) in enumerate(CLIPS):
        figure = draw_character(who, 256, pose=k % 2) if who else None
        make_clip(videos / fname, f"clip-{k}", figure, duration=4.0, appear=(1.0, 3.0), height_frac=0.7,
                  x_frac=0.35 + 0.1 * k)


def run_demo(out: Path, backbone: str | None = None) -> int:
    from detector.api import Detector
    from detector.embed.backbones import load_backbone
    from detector.embed.embedding import RegionEmbedder
    from detector.runs.engines import score_one
    from index import build_index, read_manifest

    name, why = choose_backbone(backbone)
    print(f"demo: backbone {name}: {why}", file=sys.stderr)
    print(f"demo: drawing reference art, background scenes and {len(CLIPS)} clips in {out}/", file=sys.stderr)
    make_data(out)
    index = out / "index"
    report = build_index(read_manifest(out / "manifest.csv"), index, RegionEmbedder(load_backbone(name)),
                         background=out / "background", force=True)
    print(f"demo: indexed {len(report.added)} references of {report.characters} characters "
          f"({report.background_images} background images) -> {index}", file=sys.stderr)
    det = Detector.open(index)
    results_path = out / "results.jsonl"
    ok = True
    with open(results_path, "w") as f:
        print(f"\n{'clip':26} {'verdict':7} {'score':>5}  character (segment)          expected", file=sys.stderr)
        for fname, _, expected in CLIPS:
            r = score_one(det, out / "videos" / fname)  # as `scan` does: with the sha256 a decision names
            f.write(json.dumps(r) + "\n")
            top = r["characters"][0] if r["characters"] else None
            seg = top["segments"][0] if top else None
            where = f"{top['character']} ({seg['start']:.1f}-{seg['end']:.1f}s)" if top and seg else "-"
            print(f"{fname:26} {r['verdict']:7} {r['score']:5.2f}  {where:28} {expected}", file=sys.stderr)
            ok &= (r["verdict"] == "flag") == (expected == "flag")
    print(f"\ndemo: results written to {results_path}; index at {index}", file=sys.stderr)
    print(f"demo: try `mamori scan {out / 'videos'} --index {index}` or `mamori index info {index}`", file=sys.stderr)
    if not ok:
        print("demo: some verdicts differ from the expected ones (see above)", file=sys.stderr)
    return 0
