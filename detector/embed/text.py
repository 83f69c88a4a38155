"""The text channel on the detector side: CLIP's text tower (prompts → vectors, at index build
time) and the per-frame text hits (at scan time). Storage, the rule and its calibration are
`index.text`; docs/text-prompts.md is the user's guide.

A text hit competes with the embedding and near-copy hits of the same character in the same frame
(`detector.match.evidence`): the higher calibrated score wins. A winning text hit carries, as its
`normalised` similarity, its text-scale n moved onto the character's image-channel scale,

    n_image = flag_sim + sigma · (n_text − flag_sim_text) / sigma_text,

which has the same calibrated score under the character's image calibration. So the video score
(`detector.match.scoring`: the calibrated mean of the character's best frames, moved by geometric
verification) treats text frames and image frames alike without knowing about the text channel.
It is never below N_FLOOR, the n that `detector.match.scoring` gives a frame with no evidence at all
(every prompted character gets a text hit in every frame, however weak: a far-off one must not
count for less than none). The hit's `similarity` is the prompt's cosine to the centred region
(`index.text`, rule step 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from detector.embed.hub import hub_offline_if_unreachable
from detector.errors import BackboneError, BackboneUnavailableError, ConfigError
from index.store import IndexStore, Reference

if TYPE_CHECKING:
    import torch

__all__ = ["N_FLOOR", "TextHit", "TextTower", "no_text_tower", "text_hits"]

#: the least `normalised` a text hit carries: `detector.match.scoring.MISSING_N` (a test checks they agree)
N_FLOOR = -1.0


def no_text_tower(backbone: str) -> ConfigError:
    """The error for text prompts with a backbone that cannot embed text."""
    return ConfigError(
        f"backbone {backbone!r} has no text tower: text prompts (--prompts, a manifest `prompt` column) need a "
        "CLIP backbone (clip-vit-b32 or openclip:ARCH:TAG_OR_PATH; from Python, loaded with "
        "load_backbone(name, text=True))"
    )


class TextTower:
    """A CLIP model's text encoder with its tokenizer: prompts → (N, D) float32, L2-normalised, in
    the space of the same model's image embeddings (open_clip `encode_text`).

    Why on the CPU in fp32: only index building embeds prompts, a handful at a time; the image tower
    keeps the device and precision the backbone was moved to (`Backbone.to`).
    """

    def __init__(self, model: Any, arch: str, name: str, dim: int):
        self.model = model  # the whole open_clip model; only its text parts run here
        self.arch = arch
        self.name = name
        self.dim = dim
        self._tokenizer: Any = None

    def _tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        import open_clip

        if self._tokenizer is None:
            try:
                with hub_offline_if_unreachable():  # a Hugging Face tokenizer may have to be fetched
                    self._tokenizer = open_clip.get_tokenizer(self.arch, context_length=self.model.context_length)
            except Exception as exc:  # an HF tokenizer that is not cached and cannot be downloaded, ...
                raise BackboneUnavailableError(f"backbone {self.name!r}: cannot load its tokenizer ({exc})") from exc
        tokens: torch.Tensor = self._tokenizer(list(texts))
        vocab = getattr(self.model, "vocab_size", None)
        if vocab is not None and int(tokens.max()) >= int(vocab):
            raise BackboneError(f"backbone {self.name!r}: its tokenizer yields token ids up to {int(tokens.max())}, "
                                f"beyond the text tower's vocabulary ({vocab}); tokenizer and weights do not fit")
        return tokens

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float32 text embeddings, L2-normalised; prompts longer than the model's context
        (77 tokens for CLIP) are cut."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        import torch  # here: scoring uses this module's `text_hits` and runs no text tower

        tokens = self._tokenize(texts)
        with torch.inference_mode():
            feats = self.model.encode_text(tokens, normalize=True)
        out: np.ndarray = feats.float().cpu().numpy().astype(np.float32, copy=False)
        return out


@dataclass(frozen=True)
class TextHit:
    """A character's best text evidence in a frame, ready to become a `CharacterHit`."""

    similarity: float  # cosine of the prompt to the (projected) region
    normalised: float  # on the character's image-channel scale (module docstring)
    score: float  # calibrated with the text channel's calibration
    reference: Reference  # the prompt: id `text:<character>:<n>`, source_path = the prompt text
    region: int


def text_hits(store: IndexStore, vectors: np.ndarray) -> dict[str, TextHit]:
    """Each character's best text hit over a frame's (R, D) raw region embeddings ({} without prompts)."""
    if store.text is None:
        return {}
    out = {}
    for m in store.text.match(vectors):
        info = store.characters.get(m.character)
        if info is None:
            continue
        n = info.flag_sim + info.sigma * (m.normalised - m.calibration.flag_sim) / m.calibration.sigma
        out[m.character] = TextHit(m.similarity, max(n, N_FLOOR), m.score, m.reference, m.region)
    return out
