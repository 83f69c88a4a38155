"""The records an index holds in memory: references, per-character calibration, text prompts, and
the whole `IndexData` of one generation, plus the projection every vector goes through (`project`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from index.calibrate import Calibration, CalibrationStats
from index.local import LocalFeatures
from index.nearcopy import PDQ_BYTES

if TYPE_CHECKING:
    from index.policy import Policy

__all__ = ["AllowList", "CharacterInfo", "IndexData", "Reference", "TextPrompts", "project"]

@dataclass(frozen=True)
class Reference:
    """One indexed reference image. `id` is the first 16 hex digits of its sha256 (stable)."""

    id: str
    sha256: str
    character: str
    franchise: str = ""
    rights_holder: str = ""
    license: str = ""
    source_path: str = ""
    width: int = 0
    height: int = 0
    added_at: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    quarantine: str = ""  # why this reference is left out of matching ("" = in use)


@dataclass(frozen=True)
class _Rights:
    name: str
    franchise: str
    rights_holder: str


@dataclass(frozen=True)
class CharacterInfo(CalibrationStats, _Rights):
    """A character's rights metadata and its calibration (see `index.calibrate`), in this order (the
    `characters` table's columns): name, franchise, rights_holder, the `CalibrationStats` fields,
    review_sim (as stored when the index was written: `Calibration.review_sim` then)."""

    review_sim: float


@dataclass
class TextPrompts:
    """The text prompts of a CLIP index (`index.text`): row i is `characters[i]`'s prompt
    `prompts[i]`, embedded by the text tower as `vectors[i]` (raw, L2-normalised, not centred).

    `calibration`: per character with prompts, its text-channel calibration (its own scale, one
    threshold shared by the characters: `index.text`).
    """

    characters: list[str]
    prompts: list[str]
    vectors: np.ndarray
    calibration: dict[str, Calibration] = field(default_factory=dict)


@dataclass
class AllowList:
    """Regions a reviewer decided are not infringing (`index.allowlist`): row i of `vectors` (raw
    region embedding) was allowed for `characters[i]` by decision `decisions[i]`; `info` holds each
    decision's path, sha256, reviewer, note and time."""

    characters: list[str] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    info: dict[str, dict[str, str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.decisions)

    @property
    def stored(self) -> bool:
        """Whether the index stores an allow-list: a region, or an entry (a revoked one has none)."""
        return bool(self.decisions or self.info)


@dataclass
class IndexData:
    """Everything an index holds, in memory: what `write_index` writes and `IndexStore` reads.

    `vectors` rows line up with `vector_refs` (the reference id of each row) and `vector_views`.
    """

    backbone: dict[str, Any]
    references: dict[str, Reference]
    vectors: np.ndarray
    vector_refs: list[str]
    vector_views: list[str]
    characters: dict[str, CharacterInfo]
    background: np.ndarray  # (M, D) query-region embeddings of the background images
    background_groups: np.ndarray  # (M,) which background image each row came from
    thresholds: dict[str, Any]
    #: (D,) mean background embedding (see `project`); empty means zero
    centre: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    created: str = ""
    pdq_hashes: np.ndarray = field(default_factory=lambda: np.zeros((0, PDQ_BYTES), np.uint8))  # (H, 32) uint8 PDQ
    pdq_quality: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # (H,) their quality
    pdq_refs: list[str] = field(default_factory=list)  # reference id of each hash
    pdq_views: list[str] = field(default_factory=list)
    #: reference id -> view name -> SIFT features (geometric verification, `index.local`)
    local: dict[str, dict[str, LocalFeatures]] = field(default_factory=dict)
    #: reference id -> self-check inliers (`index.local.self_check`)
    local_check: dict[str, int] = field(default_factory=dict)
    #: precision the vectors were embedded in ("" = unknown: an index from before it was recorded)
    precision: str = ""
    #: (R, D) raw embeddings of the precision probe at that precision (`index.precision`), or None
    probe: np.ndarray | None = None
    #: text prompts and their calibration (CLIP backbones, `index.text`); None: no prompts
    text: TextPrompts | None = None
    #: regions allowed by reviewers' not-infringing decisions (`index.allowlist`; format 6)
    allow: AllowList = field(default_factory=AllowList)
    #: the match policy (`index.policy`; stored in `index.json`, format 5); None: the default, no policy
    policy: Policy | None = None

    def __post_init__(self) -> None:
        if self.centre.size == 0:
            self.centre = np.zeros(int(self.backbone["dim"]), np.float32)


def project(x: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Centre raw backbone embeddings on the background mean and L2-normalise them again.

    Why: ImageNet/CLIP features of unrelated images share a large common component, which
    squeezes all cosines into a narrow high band; removing the background mean (as copy-detection
    systems do) spreads them out, so a real match stands clear of generic similarity. With no
    background set the centre is zero and this is the identity on normalised vectors.
    """
    y = np.asarray(x, np.float32) - centre
    out: np.ndarray = y / np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), 1e-12)
    return out
