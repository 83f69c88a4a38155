"""The text channel (CLIP backbones): prompts embedded by the text tower, matched against the same
region vectors as the reference art, calibrated on the background set on their own scale.

Prompts as given and as stored are `index.prompts`; the text tower is `detector.embed.text` (`index`
never imports `detector`: an `Embedder` with `embed_texts` is handed in). The rule, decided here
(docs/text-prompts.md says it for users):

1. Similarity: t_c(q) is the best cosine between character c's prompt vectors (raw text
   embeddings, L2-normalised) and region q *projected as for the image channel* (centred on the
   background mean, re-normalised: `index.records.project`). The prompt itself is not centred: the
   centre is a mean of image embeddings, and CLIP's text embeddings lie apart from its image
   embeddings (the "modality gap"), so subtracting it from a text vector would mostly add one
   fixed image direction. Against a centred region, t·(q − μ)/|q − μ|: the prompt's similarity to
   the region beyond its similarity to the average background image, so a prompt that is close to
   every image (its own bias) gains nothing, as centring does for reference art.
2. Normalisation: n_c(q) = t_c(q) − OTHER_WEIGHT · o_c(q), with o_c(q) the best t of any *other*
   character's prompts: the image channel's step 2 (`index.calibrate`) without the background term
   b(q). Why not b(q): it is an image-to-image cosine (how ordinary q looks among background
   regions); text-to-image cosines are several times smaller and spread less, so subtracting an
   image-scale term would drown the text signal, and step 1 already removes the prompt's bias.
   The other-character term compares like with like (text-to-image) and applies unchanged.
3. Calibration: the image channel's step 3, unchanged but separate: each background image is
   scored as a frame (best n over its regions); the text threshold is the highest n any background
   image reaches for any character's prompts + `margin`, shared by the characters; sigma = std of
   those n (at least `sigma_floor`). With fewer than MIN_BACKGROUND background images: the
   backbone's `text_default` (`index.tuning`: all three on its embedding scale).
4. Score: `calibrated_score(n, threshold, sigma)`: 0.5 at the text threshold, the units of the
   image channel's calibrated score, so the channels compete per character and frame (the higher
   score wins; `detector.embed.text` puts a winning text hit on the image channel's scale).

A character's prompts live as long as it has references (`update_text`): removing its last
reference removes them. Prompts are numbered per character from 1 in the order they were added;
a text hit's reference is `text:<character>:<n>`, its `source_path` the prompt text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from index.calibrate import MIN_BACKGROUND, Calibration, calibrate, calibrated_score, normalise
from index.errors import IndexStoreError, ManifestError
from index.manifest import ReferenceEntry
from index.prompts import PromptEntry, collect_prompts
from index.records import IndexData, Reference, TextPrompts, project
from index.tuning import tuning_for

__all__ = ["NewPrompts", "PromptEntry", "TextMatch", "TextMatcher", "calibrate_text", "embed_prompts",
           "prompt_reference", "text_normalised", "text_summary", "update_text"]

#: prompts as given and their (P, D) text embeddings, ready for `update_text`
NewPrompts = tuple[list[PromptEntry], np.ndarray]


def embed_prompts(entries: Sequence[ReferenceEntry], extra: Sequence[PromptEntry], embedder: Any,
                  known: set[str]) -> NewPrompts | None:
    """Collect the prompts (`index.prompts.collect_prompts`) and embed them with the embedder's
    `embed_texts`; None when there are none. Called before any image is read, so a backbone without
    a text tower fails at once.

    Raises:
        ManifestError: a prompt for an unknown character, or an embedder without `embed_texts`.
        (The detector's `RegionEmbedder.embed_texts` raises its `ConfigError` for a backbone
        without a text tower: effnet, timm:, onnx:.)
    """
    prompts = collect_prompts(entries, extra, known)
    if not prompts:
        return None
    embed = getattr(embedder, "embed_texts", None)
    if embed is None:
        raise ManifestError("text prompts need a backbone with a text tower (CLIP); this embedder has none")
    vectors = np.asarray(embed([p.prompt for p in prompts]), np.float32)
    if vectors.shape != (len(prompts), int(embedder.identity["dim"])):
        raise IndexStoreError(f"text tower returned shape {vectors.shape} for {len(prompts)} prompt(s)")
    return prompts, vectors


def text_normalised(sims: np.ndarray, owner: np.ndarray, n_chars: int) -> np.ndarray:
    """Rule step 2 on (R, P) cosines of regions to prompts (`owner[p]`: prompt p's character
    column): (R, n_chars) normalised similarities.

    >>> text_normalised(np.array([[0.3, 0.1, 0.2]]), np.array([0, 0, 1]), 2).round(3).tolist()
    [[0.2, 0.05]]
    """
    per_char = np.full((len(sims), n_chars), -np.inf, np.float32)
    for j in range(n_chars):
        per_char[:, j] = np.asarray(sims, np.float32)[:, owner == j].max(axis=1)
    return normalise(per_char, np.zeros(len(sims), np.float32))


def _owners(characters: Sequence[str]) -> tuple[list[str], np.ndarray]:
    chars = sorted(set(characters))
    return chars, np.array([chars.index(c) for c in characters], np.int64)


def calibrate_text(text: TextPrompts, background: np.ndarray, groups: np.ndarray,
                   backbone: str) -> dict[str, Calibration]:
    """Rule step 3: per character with prompts, its text calibration (one shared threshold).

    Args:
        background: (M, D) *projected* region embeddings of the background images.
        groups: (M,) background image of each row.
    """
    chars, owner = _owners(text.characters)
    images, inverse = np.unique(groups, return_inverse=True)
    if len(images) < MIN_BACKGROUND:
        t0, s0 = tuning_for(backbone).text_default
        return {c: Calibration(t0, s0, t0, len(images), "default", t0) for c in chars}
    n = text_normalised(background @ np.asarray(text.vectors, np.float32).T, owner, len(chars))
    per_image = np.full((len(images), len(chars)), -np.inf, np.float32)
    np.maximum.at(per_image, inverse, n)
    return calibrate(chars, per_image, backbone)


def update_text(data: IndexData, new: NewPrompts | None = None, skipped: list[tuple[str, str]] | None = None) -> None:
    """After any change to `data`'s references: add `new` prompts (a pair already stored is kept
    once), drop the prompts of characters left without references, and calibrate the text channel
    again (rule step 3). A new prompt whose character has no reference (all its images were
    unreadable) is not added and is listed in `skipped`."""
    have = {r.character for r in data.references.values()}
    old = data.text
    chars, prompts = (list(old.characters), list(old.prompts)) if old is not None else ([], [])
    rows = [old.vectors] if old is not None else []
    seen = set(zip(chars, prompts, strict=True))
    for p, v in zip(*(new or ([], [])), strict=True):
        if (p.character, p.prompt) in seen:
            continue
        if p.character not in have:
            if skipped is not None:
                skipped.append((f"prompt {p.prompt!r}", f"character {p.character!r} has no reference in the index"))
            continue
        seen.add((p.character, p.prompt))
        chars.append(p.character)
        prompts.append(p.prompt)
        rows.append(np.asarray(v, np.float32)[None])
    keep = [i for i, c in enumerate(chars) if c in have]
    if not keep:
        data.text = None
        return
    text = TextPrompts([chars[i] for i in keep], [prompts[i] for i in keep], np.concatenate(rows)[keep])
    text.calibration = calibrate_text(text, project(data.background, data.centre), data.background_groups,
                                      str(data.backbone["name"]))
    data.text = text


def prompt_reference(character: str, prompt: str, n: int, like: Reference | None) -> Reference:
    """The `Reference` a text hit reports: id `text:<character>:<n>`, `source_path` the prompt,
    rights metadata from one of the character's references (`like`)."""
    return Reference(id=f"text:{character}:{n}", sha256=hashlib.sha256(prompt.encode()).hexdigest(),
                     character=character, franchise=like.franchise if like else "",
                     rights_holder=like.rights_holder if like else "", source_path=prompt, extra={"prompt": prompt})


def _numbered(text: TextPrompts, references: dict[str, Reference]) -> list[Reference]:
    first: dict[str, Reference] = {}
    for r in references.values():
        first.setdefault(r.character, r)
    count: dict[str, int] = {}
    out = []
    for c, p in zip(text.characters, text.prompts, strict=True):
        count[c] = count.get(c, 0) + 1
        out.append(prompt_reference(c, p, count[c], first.get(c)))
    return out


@dataclass(frozen=True)
class TextMatch:
    """A character's best text evidence in one frame (rule steps 1, 2 and 4)."""

    character: str
    region: int  # row of the query vectors
    similarity: float  # cosine of the prompt to the projected region
    normalised: float  # n on the text scale
    score: float  # calibrated with the text calibration
    reference: Reference  # the prompt (`prompt_reference`)
    calibration: Calibration


class TextMatcher:
    """The query side of the text channel, built once per loaded index (`IndexStore.text`)."""

    def __init__(self, data: IndexData, text: TextPrompts):
        self.characters, self.owner = _owners(text.characters)
        self.vectors = np.ascontiguousarray(text.vectors, np.float32)
        self.centre = data.centre
        self.calibration = [text.calibration[c] for c in self.characters]
        self.references = _numbered(text, data.references)

    def match(self, queries: np.ndarray) -> list[TextMatch]:
        """Each character's best region and prompt for (R, D) raw region embeddings."""
        if len(queries) == 0:
            return []
        sims = project(queries, self.centre) @ self.vectors.T
        norm = text_normalised(sims, self.owner, len(self.characters))
        out = []
        for j, c in enumerate(self.characters):
            r = int(np.argmax(norm[:, j]))
            cols = np.flatnonzero(self.owner == j)
            p = int(cols[np.argmax(sims[r, cols])])
            cal, n = self.calibration[j], float(norm[r, j])
            out.append(TextMatch(c, r, float(sims[r, p]), n, float(calibrated_score(n, cal.flag_sim, cal.sigma)),
                                 self.references[p], cal))
        return out


def text_summary(summary: dict[str, Any], data: IndexData) -> None:
    """Add the prompts to an `IndexStore.summary()` (what `mamori index info` prints): per character
    `prompts` ([{"id", "prompt"}]), and `text` (the channel's calibration; None without prompts)."""
    for c in summary["characters"].values():
        c["prompts"] = []
    text = data.text
    if text is None:
        summary["text"] = None
        return
    for ref in _numbered(text, data.references):
        if ref.character in summary["characters"]:
            summary["characters"][ref.character]["prompts"].append({"id": ref.id, "prompt": ref.source_path})
    cal = next(iter(text.calibration.values()), None)
    summary["text"] = {
        "prompts": len(text.prompts),
        "flag_sim": cal.flag_sim if cal else None, "review_sim": cal.review_sim if cal else None,
        "sigma": cal.sigma if cal else None, "source": cal.source if cal else None,
        "n_background": cal.n_background if cal else None,
        "characters": {c: {"mu": k.mu, "bg_max": k.bg_max} for c, k in sorted(text.calibration.items())},
        "rule": "n = cos(prompt, centred region) - other_weight*best_other_character_prompt; "
                "flag_sim = max over background images of n + margin (shared); score = sigmoid(slope*(n - flag_sim)/sigma)",
    }
