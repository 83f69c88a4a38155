"""The `Detector`: one scoring path behind the CLI, the Python API and the services.

    det = Detector.open("INDEX")               # loads the index and its backbone once
    det.score_image("still.png")               # path, bytes or PIL image -> Result
    det.score_video("clip.mp4", fps=2.0)       # -> Result
    det.score_file("anything")                 # never raises for a bad file: verdict "error"
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from detector.embed.backbones import Backbone, load_backbone
from detector.embed.embedding import RegionEmbedder
from detector.errors import MediaError, MediaLimitError, UnreadableMediaError
from detector.match.evidence import FrameEvidence, frame_evidence
from detector.match.results import Result
from detector.match.scoring import aggregate
from detector.match.verify import verify_frame
from detector.media.files import FileChangedError
from detector.media.frames import DEFAULT_FPS, DEFAULT_MAX_FRAMES, Frame, MediaReader
from detector.pipeline import EvidenceReuse, FrameObserver, PreparedFrame, RegionCache, prefetch, prepare_frames
from detector.recording import StoreRecorder
from detector.shortlist import RegionSearch
from index.build import check_identity
from index.errors import ImageTooLargeError, IncompatibleIndexError, ReferenceImageError
from index.images import DEFAULT_MAX_PIXELS, open_image
from index.precision import check_precision
from index.scancodec import StoreCodec
from index.scanstore import StoreWriter
from index.store import IndexStore

__all__ = ["Detector"]


class Detector:
    """Scores images and videos against a reference index.

    Why one object: the backbone and the index are loaded once and reused for every input, by
    every front door (CLI, Python, HTTP, distributed workers).
    """

    def __init__(self, store: IndexStore, backbone: Backbone, *, fps: float = DEFAULT_FPS,
                 max_frames: int = DEFAULT_MAX_FRAMES, max_pixels: int = DEFAULT_MAX_PIXELS,
                 skip_repeats: bool = True, max_duration: float | None = None,
                 max_frames_total: int | None = None, verify: bool = True, shortlist: bool = True):
        self.embedder = RegionEmbedder(backbone)
        check_identity(store.backbone, self.embedder, str(store.path))
        self.store = store
        self.backbone = backbone
        self.fps = fps
        self.max_frames = max_frames
        self.max_pixels = max_pixels
        #: skip blank frames and reuse the evidence of repeated ones (`detector.pipeline`)
        self.skip_repeats = skip_repeats
        #: refuse videos longer than this (seconds) or with more frames than this (None: no limit)
        self.max_duration = max_duration
        self.max_frames_total = max_frames_total
        #: how region pixels become vectors; the HTTP service swaps in a cross-request `Batcher`
        self.embed_pixels = backbone.embed_pixels
        #: PDQ-hash every region for the near-copy channel (~0.5 ms per region); off when the
        #: index has no usable reference hash
        self.nearcopy = store.has_pdq
        #: `scan --store`: the store's codec; batch scans then record each input (`detector.runs.engines`)
        self.recording: StoreCodec | None = None
        #: geometric verification of each frame's strongest candidates (`detector.match.verify.verify_frame`)
        self.verify = verify
        #: embed only the regions a cheap pass shortlists (`detector.shortlist`); False: every region
        self.shortlist = shortlist
        #: the index's precision probe re-embedded here when the precisions differ (`index.precision`);
        #: a drift past the calibration margin becomes a warning in every result
        self.precision_check = check_precision(store, self.embedder)
        check = self.precision_check
        self.warnings = [check.warning] if check is not None and not check.ok else []

    @classmethod
    def open(cls, index: str | Path, *, backbone: str | None = None, precision: str = "auto",
             device: str | None = None, **options: Any) -> Detector:
        """Load an index and the backbone it was built with.

        Args:
            index: the index folder.
            backbone: expected backbone name; an index built with another one is refused.
            precision, device: how the backbone runs (`detector.embed.inference`: auto, fp32, bf16).
            options: `fps`, `max_frames`, `max_pixels`, `skip_repeats`, `verify`, `shortlist`,
                `max_duration`, `max_frames_total` for this detector (see `__init__`).

        Raises:
            index.IndexNotFoundError, index.IncompatibleIndexError, detector.BackboneError

        >>> det = Detector.open("my-index")                 # doctest: +SKIP
        >>> det.score_video("clip.mp4").verdict             # doctest: +SKIP
        'flag'
        """
        store = IndexStore.open(index)
        name = store.backbone["name"]
        if backbone is not None and backbone != name:
            raise IncompatibleIndexError(
                f"{index}: index was built with backbone {name!r}, not {backbone!r}; "
                "drop --backbone or rebuild the index with it"
            )
        return cls(store, load_backbone(name, precision=precision, device=device), **options)

    def _evidence(self, frames: Iterator[Frame], deadline: float | None = None,
                  observer: FrameObserver | None = None) -> list[FrameEvidence]:
        """Per sampled frame, its evidence (`detector.pipeline`: decoding and cropping run in a
        background thread while this one runs the model and the search). Past `deadline`
        (`time.monotonic()`), stops with MediaLimitError(limit="request_timeout"). `observer`
        sees every frame (`detector.pipeline.FrameObserver`: every region's vectors)."""
        evidence: list[FrameEvidence] = []
        reuse = EvidenceReuse()  # repeats and known flat frames reuse evidence (pipeline step 2)
        regions = RegionCache(self.embed_pixels, self.backbone.dim)  # keeps unchanged regions' vectors
        # an observer sees every region's vector (`FrameObserver`): one turns the shortlist off
        search = (RegionSearch(self.store, self.backbone, self.embed_pixels)
                  if self.shortlist and observer is None else None)
        prepared = prefetch(lambda: prepare_frames(frames, self.embedder, nearcopy=self.nearcopy,
                                                   skip=self.skip_repeats, all_regions=search is not None))

        def compute(p: PreparedFrame) -> FrameEvidence:
            if search is None:
                vectors, boxes, hashes = regions.vectors_for(p), p.boxes, p.hashes
                if observer is not None:
                    observer.embedded(p, vectors)
            else:
                vectors, boxes, hashes = search.regions(p)
            ev = frame_evidence(self.store, p.frame.time, vectors, boxes, hashes)
            if self.verify:
                ev = verify_frame(self.store, p.frame.image, ev)
            return ev.scaled(p.frame.scale)  # boxes in the source's pixels

        for p in prepared:
            if deadline is not None and time.monotonic() > deadline:
                prepared.close()
                raise MediaLimitError(f"scoring did not finish within request_timeout ({p.frame.index} frames done)",
                                      limit="request_timeout")
            if observer is not None and p.pixels is None:
                observer.reused(p)
            evidence.append(reuse.evidence_for(p, compute))
        return evidence

    def score_image(self, image: str | Path | bytes | Image.Image, *, path: str | None = None,
                    deadline: float | None = None) -> Result:
        """Score one still image (path, encoded bytes, or a PIL image).

        Raises:
            UnreadableMediaError, MediaLimitError: the image cannot be used.
        """
        try:
            img = open_image(image, max_pixels=self.max_pixels)
        except ImageTooLargeError as exc:
            raise MediaLimitError(str(exc)) from exc
        except ReferenceImageError as exc:
            raise UnreadableMediaError(str(exc)) from exc
        name = path or (str(image) if isinstance(image, (str, Path)) else "<image>")
        evidence = self._evidence(iter([Frame(0, 0.0, img)]), deadline)
        return aggregate(self.store, name, evidence, kind="image", duration=0.0, warnings=self.warnings)

    def score_video(self, path: str | Path, *, fps: float | None = None, max_frames: int | None = None,
                    deadline: float | None = None, name: str | None = None, store: StoreWriter | None = None,
                    observer: FrameObserver | None = None) -> Result:
        """Score a video, animated GIF or still image file, sampling at `fps`.

        Args:
            deadline: `time.monotonic()` value after which scoring stops with MediaLimitError.
            name: the `path` reported in the result (default: `path`).
            store: also keep the video's region embeddings in this scan store, for `mamori rescan`
                (the observer `detector.recording.StoreRecorder`, built here: the file is hashed
                for the store's catalogue and stamped before and after scoring, as `scan` does:
                FileChangedError, and nothing stored, if it changed meanwhile).
            observer: sees every frame and the result (`detector.pipeline.FrameObserver`; batch
                scans collect the region embeddings with a `detector.recording.FrameRecorder`).
                Not with `store`, which brings its own.

        Raises:
            UnreadableMediaError, MediaLimitError: the file cannot be used (or, with `store`, it
                changed while it was scored: FileChangedError).
        """
        fps, max_frames = fps or self.fps, max_frames or self.max_frames
        if store is not None:
            if observer is not None:
                raise TypeError("score_video: pass store or observer, not both")
            observer = StoreRecorder(store, self.store, path, fps, max_frames)
        reader = MediaReader(path, fps=fps, max_frames=max_frames, max_pixels=self.max_pixels,
                             max_duration=self.max_duration, max_stream_frames=self.max_frames_total, deadline=deadline)
        evidence = self._evidence(iter(reader), deadline, observer)
        result = aggregate(self.store, name or str(path), evidence, kind=reader.kind, duration=reader.duration,
                           warnings=[*self.warnings, *reader.warnings])
        if observer is not None:
            observer.finished(result)
        return result

    def score_file(self, path: str | Path, **kw: Any) -> Result:
        """Like `score_video`, but an unusable file gives a Result with verdict `error`."""
        try:
            return self.score_video(path, **kw)
        except MediaError as exc:
            return Result.failed(str(path), exc, kind="changed" if isinstance(exc, FileChangedError) else None)

    def __repr__(self) -> str:
        return f"Detector(index={str(self.store.path)!r}, backbone={self.backbone.name!r})"

