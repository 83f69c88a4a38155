from __future__ import annotations

import detector
import index


def test_detector_exports() -> None:
    assert set(detector.__all__) == {
        "DEFAULT_BACKBONE", "Backbone", "BackboneError", "BackboneUnavailableError", "CharacterResult",
        "ConfigError", "Detector", "DetectorError", "MediaError", "MediaLimitError", "Preprocess", "Result",
        "Segment", "UnreadableMediaError", "list_backbones", "load_backbone",
    }


def test_index_exports() -> None:
    assert set(index.__all__) == {
        "SCORE_FLAG", "SCORE_REVIEW", "BuildReport", "CharacterInfo", "CorruptIndexError", "Embedder",
        "IncompatibleIndexError", "IndexLockedError", "IndexNotFoundError", "IndexStore", "IndexStoreError",
        "ManifestError", "Reference", "ReferenceEntry", "ReferenceImageError", "ReferenceNotFoundError", "ScanStoreError",
        "add_references", "build_index",
        "calibrated_score", "open_image", "read_folder", "read_manifest", "read_references", "remove_references",
        "set_thresholds",
    }


def test_error_roots() -> None:
    assert issubclass(detector.UnreadableMediaError, detector.MediaError)
    assert issubclass(detector.MediaError, detector.DetectorError)
    assert issubclass(index.IncompatibleIndexError, index.IndexStoreError)
    assert not issubclass(index.IndexStoreError, IndexError)
