"""Measure a backbone's default calibration (T, sigma), used when an index has no background set.

It embeds drawn, unrelated scenes (detector.media.synth) exactly as video frames are embedded, and
drawn characters as references, without centring and without a background term (as an index
without a background set scores), and prints the distribution of each scene's frame-level
normalised similarity (`index.calibrate.normalise`) to each character: T = max + margin.

    python scripts/measure_defaults.py [--backbone effnet-lite0-imagenet] [--scenes 40] [--characters 12]
"""

from __future__ import annotations

import argparse

import numpy as np

from detector.embed.backbones import load_backbone
from detector.embed.embedding import RegionEmbedder
from detector.media.synth import draw_character, draw_scene
from index.calibrate import normalise
from index.images import to_rgb
from index.tuning import tuning_for


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="effnet-lite0-imagenet")
    ap.add_argument("--scenes", type=int, default=40)
    ap.add_argument("--characters", type=int, default=12)
    a = ap.parse_args()
    emb = RegionEmbedder(load_backbone(a.backbone))
    refs = [to_rgb(draw_character(f"measure-{i}", 256)) for i in range(a.characters)]
    ref_vecs = np.concatenate([v for v, _ in emb.embed_references(refs)])
    scenes = [draw_scene(f"measure-scene-{i}") for i in range(a.scenes)]
    q = emb.embed_queries(scenes)
    views = len(ref_vecs) // a.characters
    per_image = []
    for v in q:
        sims = (v @ ref_vecs.T).reshape(len(v), a.characters, views).max(axis=2)  # (R, C)
        per_image.append(normalise(sims, np.zeros(len(v), np.float32)).max(axis=0))
    allv = np.concatenate(per_image)
    print(f"{a.backbone}: T = max + margin = {allv.max() + tuning_for(a.backbone).margin:.3f}, sigma={allv.std():.3f} "
          f"(mean {allv.mean():.3f}) over {a.scenes} scenes x {a.characters} characters")


if __name__ == "__main__":
    main()
