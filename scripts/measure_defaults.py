"""Measure a backbone's default calibration (mu, sigma), used when an index has no background set.

It embeds drawn, unrelated scenes (detector.synth) exactly as video frames are embedded, and
drawn characters as references, without centring (as an index without a background set does), and
prints the mean and standard deviation of each character's best similarity to each scene.

    python scripts/measure_defaults.py [--backbone effnet-lite0-imagenet] [--scenes 40] [--characters 12]
"""

from __future__ import annotations

import argparse

import numpy as np

from detector.backbones import load_backbone
from detector.embedding import RegionEmbedder
from detector.synth import draw_character, draw_scene
from index.calibrate import background_similarities
from index.images import to_rgb


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
    groups = np.concatenate([[i] * len(v) for i, v in enumerate(q)])
    sims = background_similarities(ref_vecs, [str(i) for i in range(a.characters)], np.concatenate(q), groups)
    allv = np.concatenate(list(sims.values()))
    per_char_std = np.mean([s.std() for s in sims.values()])
    print(f"{a.backbone}: mu={allv.mean():.3f} sigma(within character)={per_char_std:.3f} "
          f"sigma(all)={allv.std():.3f} max={allv.max():.3f} over {a.scenes} scenes x {a.characters} characters")


if __name__ == "__main__":
    main()
