"""The scan store: what `mamori scan --store STORE` keeps of each video, for `mamori rescan`.

Layout of a store folder:

    STORE/store.json           format, backbone identity, region scales and grid, code size, created
                               (written last when a store is created: a store without it is not one)
    STORE/codec.npz            the `index.scancodec.StoreCodec` (centre + product quantiser)
    STORE/catalogue.sqlite     one row per video (path, sha256, where its record is, frames,
                               duration, sampling, the index generation it was scanned with) and
                               one per index generation seen (its reference ids)
    STORE/shards/<id>.bin      append-only records (`index.scancodec.VideoRecord`), one shard
                               per writer, a new one past SHARD_BYTES
    STORE/.lock                writers (`scan --store`) and readers (`rescan`) hold it shared,
                               `compact` exclusive: each is refused while the other holds it

Crash safety, like `scan --resume`: a writer appends a video's record to its own shard, fsyncs
it, and only then commits the video's catalogue row (one SQLite transaction). A scan killed at
any moment leaves a store that opens, with whole videos only: a half-written record at the end
of a shard is never referenced (every record is checked against its CRC-32 when read), and the
next writer starts a shard of its own. `compact` copies the live records into new shards, switches
the catalogue in one transaction, then deletes the old shards, so it can be killed too. The same
(path, sha256) scanned again replaces its row; the old record becomes garbage for `compact`.
A record that fails its CRC (a bit flip on disk) is not copied by `compact`: its row is dropped
(scan that video again to store it) and the compaction reports it (`Compaction.damaged`).

Why shards: each is independent, so `rescan --engine ray` hands whole shards to workers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Self

from index.clock import now
from index.errors import ScanStoreError
from index.generation import fsync_path
from index.scancodec import StoreCodec, VideoRecord, checksum

__all__ = ["FORMAT_VERSION", "SHARD_BYTES", "Compaction", "ScanStore", "StoreEntry", "StoreWriter"]

FORMAT_VERSION = 1
#: a writer starts a new shard past this size. Not measured: chosen by hand (commit fd6f52c)
SHARD_BYTES = 256 << 20
#: the region grid of stores whose header does not record one (all written before it was recorded
#: used it: `detector.media.regions` OVERLAP and MAX_STEPS have not changed since scan stores exist)
LEGACY_GRID = {"overlap": 0.5, "max_steps": 8}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS videos (
    path BLOB NOT NULL, sha256 TEXT NOT NULL, shard TEXT NOT NULL, offset INTEGER NOT NULL,
    length INTEGER NOT NULL, crc INTEGER NOT NULL, frames INTEGER NOT NULL, regions INTEGER NOT NULL,
    duration REAL, kind TEXT NOT NULL, fps REAL NOT NULL, max_frames INTEGER NOT NULL,
    generation TEXT NOT NULL, scanned_at TEXT NOT NULL, PRIMARY KEY (path, sha256));
CREATE TABLE IF NOT EXISTS generations (name TEXT PRIMARY KEY, updated TEXT NOT NULL, refs TEXT NOT NULL);
"""
_COLUMNS = ("path", "sha256", "shard", "offset", "length", "crc", "frames", "regions", "duration", "kind", "fps",
            "max_frames", "generation", "scanned_at")


@dataclass(frozen=True)
class StoreEntry:
    """One stored video's catalogue row. `path` as Python names the file (surrogate escapes)."""

    path: str
    sha256: str
    shard: str
    offset: int
    length: int
    crc: int
    frames: int
    regions: int
    duration: float | None
    kind: str
    fps: float
    max_frames: int
    generation: str
    scanned_at: str

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> StoreEntry:
        values = dict(zip(_COLUMNS, row, strict=True))
        values["path"] = os.fsdecode(bytes(values["path"]))
        return cls(**values)


@dataclass(frozen=True)
class Compaction:
    """What `ScanStore.compact` did: shard bytes before and after, and the (path, sha256, why) of
    each damaged record it skipped (its catalogue row is dropped: scan that video again)."""

    before: int
    after: int
    damaged: tuple[tuple[str, str, str], ...] = ()


class ScanStore:
    """An opened scan store (read side; `writer()` appends, `compact()` rewrites).

    >>> store = ScanStore.open("scans.store")                      # doctest: +SKIP
    >>> for entry in store.entries(): record = store.read(entry)   # doctest: +SKIP
    """

    def __init__(self, path: Path, header: dict[str, Any], codec: StoreCodec):
        self.path = path
        self.header = header
        self.codec = codec

    @property
    def backbone(self) -> dict[str, Any]:
        backbone: dict[str, Any] = self.header["backbone"]
        return backbone

    @property
    def scales(self) -> tuple[float, ...]:
        return tuple(float(s) for s in self.header["scales"])

    @property
    def grid(self) -> dict[str, Any]:
        """How each scale's windows were laid out ({"overlap", "max_steps"}: `detector.media.regions`)."""
        grid: dict[str, Any] = self.header.get("grid") or LEGACY_GRID
        return grid

    def check_grid(self, scales: Sequence[float], grid: dict[str, Any], what: str) -> None:
        """Refuse `what` when it cuts frames into other regions than the store's (the stored
        region ids would name other boxes)."""
        if self.scales != tuple(float(s) for s in scales):
            raise ScanStoreError(f"{self.path}: the store's regions were cut at scales {self.scales}, "
                                 f"but {what} cuts them at {tuple(scales)}")
        if {k: self.grid.get(k) for k in grid} != grid:
            raise ScanStoreError(f"{self.path}: the store's regions were laid out on the grid {self.grid}, "
                                 f"but {what} uses {grid}; rescan needs the same grid (scan the videos again)")

    @classmethod
    def create(cls, path: str | Path, backbone: dict[str, Any], codec: StoreCodec, scales: Sequence[float],
               grid: dict[str, Any] | None = None) -> ScanStore:
        """A new, empty store at `path` (a new or empty folder); `grid`: the region grid (default
        LEGACY_GRID)."""
        path = Path(path)
        if (path / "store.json").exists():
            raise ScanStoreError(f"{path}: a scan store already exists here")
        if path.exists() and (not path.is_dir() or any(p.name != ".lock" for p in path.iterdir())):
            raise ScanStoreError(f"{path}: not an empty folder; give a new path for the scan store")
        (path / "shards").mkdir(parents=True, exist_ok=True)
        _write_atomic(path / "codec.npz", codec.to_bytes())
        with _connect(path):
            pass
        header = {"format": "mamori-scan-store", "format_version": FORMAT_VERSION, "backbone": backbone,
                  "scales": list(scales), "grid": dict(grid or LEGACY_GRID), "code_bytes": codec.code_bytes,
                  "created": now()}
        _write_atomic(path / "store.json", json.dumps(header, indent=1, sort_keys=True).encode())
        return cls(path, header, codec)

    @classmethod
    def open(cls, path: str | Path) -> ScanStore:
        """Raises ScanStoreError: no store at `path`, or its files are unreadable."""
        path = Path(path)
        if not (path / "store.json").is_file():
            raise ScanStoreError(f"{path}: no scan store here (make one with `mamori scan --store {path}`)")
        try:
            header = json.loads((path / "store.json").read_text())
            if header.get("format") != "mamori-scan-store":
                raise ValueError("not a mamori scan store")
            if int(header["format_version"]) > FORMAT_VERSION:
                raise ValueError(f"format version {header['format_version']} is newer than this mamori reads")
            codec = StoreCodec.from_bytes((path / "codec.npz").read_bytes())
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ScanStoreError(f"{path}: scan store files are unreadable ({exc})") from exc
        return cls(path, header, codec)

    def check_backbone(self, identity: dict[str, Any], what: str) -> None:
        """Refuse `what` (an index, a detector) made with another backbone than the store's."""
        mine = {k: self.backbone.get(k) for k in ("name", "dim", "weights_sha256")}
        theirs = {k: identity.get(k) for k in ("name", "dim", "weights_sha256")}
        if mine != theirs:
            raise ScanStoreError(
                f"{self.path}: the scan store holds embeddings of backbone {mine['name']!r} "
                f"(weights {str(mine['weights_sha256'])[:12]}), but {what} uses {theirs['name']!r} "
                f"(weights {str(theirs['weights_sha256'])[:12]}); rescan needs the same backbone")

    # --- catalogue ------------------------------------------------------------------------------

    def entries(self, shard: str | None = None) -> list[StoreEntry]:
        """Catalogue rows (of one shard), in shard order."""
        where, args = ("WHERE shard = ?", (shard,)) if shard is not None else ("", ())
        with _connect(self.path) as db:
            rows = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM videos {where} ORDER BY shard, offset", args)
            return [StoreEntry.from_row(r) for r in rows]

    def shards(self) -> list[str]:
        with _connect(self.path) as db:
            return [r[0] for r in db.execute("SELECT DISTINCT shard FROM videos ORDER BY shard")]

    def generation_refs(self, name: str) -> set[str] | None:
        """The reference ids of index generation `name` as recorded by a scan (None: never seen)."""
        with _connect(self.path) as db:
            row = db.execute("SELECT refs FROM generations WHERE name = ?", (name,)).fetchone()
        return None if row is None else set(json.loads(row[0]))

    def generations(self) -> list[tuple[str, str, int]]:
        """(name, updated, videos scanned with it) per index generation seen, oldest first."""
        with _connect(self.path) as db:
            rows = db.execute("SELECT g.name, g.updated, (SELECT COUNT(*) FROM videos v WHERE v.generation = g.name) "
                              "FROM generations g ORDER BY g.updated, g.name")
            return [(str(a), str(b), int(c)) for a, b, c in rows]

    def read(self, entry: StoreEntry) -> VideoRecord:
        """The video's record. Raises ScanStoreError when its bytes are missing or damaged."""
        try:
            with open(self.path / "shards" / entry.shard, "rb") as f:
                f.seek(entry.offset)
                blob = f.read(entry.length)
            if len(blob) != entry.length or checksum(blob) != entry.crc:
                raise ValueError("checksum mismatch")
            return VideoRecord.from_bytes(blob)
        except (OSError, ValueError, KeyError) as exc:
            raise ScanStoreError(f"{self.path}: the stored record of {entry.path} is damaged ({exc})") from exc

    def writer(self) -> StoreWriter:
        return StoreWriter(self)
    def reading(self) -> contextlib.AbstractContextManager[None]:
        """Hold the store's lock shared while reading it (`mamori rescan`): `compact` is refused
        meanwhile, so every catalogue row read stays valid. Raises ScanStoreError while a
        compaction runs."""
        return _lock(self.path, exclusive=False)

    def info(self) -> dict[str, Any]:
        """What `mamori store info` prints."""
        with _connect(self.path) as db:
            n, frames, regions, live, minutes = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(frames), 0), COALESCE(SUM(regions), 0), COALESCE(SUM(length), 0), "
                "COALESCE(SUM(duration), 0) / 60.0 FROM videos").fetchone()
        files = sorted((self.path / "shards").glob("*.bin"))
        on_disk = sum(f.stat().st_size for f in files)
        return {
            "path": str(self.path), **self.header, "videos": n, "frames": frames, "regions": regions,
            "video_minutes": round(minutes, 3), "shards": len(files), "bytes": on_disk, "live_bytes": live,
            "garbage_bytes": on_disk - live,
            "bytes_per_video_minute": round(live / minutes) if minutes else None,
            "generations": [{"name": g, "updated": u, "videos": v} for g, u, v in self.generations()],
        }

    def compact(self) -> Compaction:
        """Rewrite the live records into new shards and delete the old ones (exclusive: refused
        while a scan writes or a rescan reads). A damaged record is skipped, its row dropped and
        reported (`Compaction.damaged`); the other records are copied."""
        with _lock(self.path, exclusive=True):
            before = sum(f.stat().st_size for f in (self.path / "shards").glob("*"))
            moves: list[tuple[str, int, int, int, str, str, bytes]] = []
            damaged: list[tuple[StoreEntry, str]] = []
            out = _ShardFile(self.path)
            try:
                for e in self.entries():
                    try:
                        blob = self.read(e).to_bytes()  # checks the CRC: a damaged record is not copied
                    except ScanStoreError as exc:
                        damaged.append((e, str(exc.__cause__ or exc)))
                        continue
                    shard, offset = out.append(blob)
                    moves.append((shard, offset, len(blob), checksum(blob), e.shard, e.sha256, os.fsencode(e.path)))
                out.sync()
            finally:
                out.close()
            with _connect(self.path) as db:  # one transaction: the new places and the dropped rows
                db.executemany("UPDATE videos SET shard = ?, offset = ?, length = ?, crc = ? "
                               "WHERE shard = ? AND sha256 = ? AND path = ?", moves)
                db.executemany("DELETE FROM videos WHERE shard = ? AND sha256 = ? AND path = ?",
                               [(e.shard, e.sha256, os.fsencode(e.path)) for e, _ in damaged])
            live = {m[0] for m in moves}
            for f in (self.path / "shards").glob("*"):
                if f.name not in live:
                    f.unlink(missing_ok=True)
            fsync_path(self.path / "shards")
            after = sum(f.stat().st_size for f in (self.path / "shards").glob("*"))
        return Compaction(before, after, tuple((e.path, e.sha256, why) for e, why in damaged))


class StoreWriter:
    """Appends videos to a store: one shard of its own, rotated at SHARD_BYTES; holds the
    store's lock shared while open. Thread-safe (one lock around each append)."""

    def __init__(self, store: ScanStore):
        self.store = store
        self._lock_cm = _lock(store.path, exclusive=False)
        self._lock_cm.__enter__()
        self._shard = _ShardFile(store.path)
        self._mutex = threading.Lock()
        self._generations: set[str] = set()

    def add_generation(self, name: str, updated: str, ref_ids: Sequence[str]) -> None:
        """Record which references index generation `name` holds (once per generation)."""
        if name in self._generations:
            return
        with _connect(self.store.path) as db:
            db.execute("INSERT OR IGNORE INTO generations VALUES (?, ?, ?)", (name, updated, json.dumps(sorted(ref_ids))))
        self._generations.add(name)

    def append(self, path: str, sha256: str, record: VideoRecord, *, duration: float | None, kind: str, fps: float,
               max_frames: int, generation: str) -> None:
        """Store one video: its record is on disk (fsynced) before its catalogue row commits."""
        blob = record.to_bytes()
        with self._mutex:
            if self._shard.size >= SHARD_BYTES:
                self._shard.close()
                self._shard = _ShardFile(self.store.path)
            shard, offset = self._shard.append(blob)
            self._shard.sync()
            row = (os.fsencode(path), sha256, shard, offset, len(blob), checksum(blob), record.frames,
                   len(record.codes), duration, kind, fps, max_frames, generation, now())
            with _connect(self.store.path) as db:
                db.execute(f"INSERT OR REPLACE INTO videos ({', '.join(_COLUMNS)}) VALUES "
                           f"({', '.join('?' * len(_COLUMNS))})", row)

    def close(self) -> None:
        self._shard.close()
        self._lock_cm.__exit__(None, None, None)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ShardFile:
    """A new shard, opened lazily on the first append (a writer that stores nothing leaves no file)."""

    def __init__(self, store: Path):
        self.name = f"{time.time_ns():x}-{uuid.uuid4().hex[:8]}.bin"
        self.path = store / "shards" / self.name
        self.file: BinaryIO | None = None
        self.size = 0

    def append(self, blob: bytes) -> tuple[str, int]:
        if self.file is None:
            self.file = open(self.path, "xb")  # noqa: SIM115 - closed by close()
            fsync_path(self.path.parent)
        offset = self.size
        self.file.write(blob)
        self.size += len(blob)
        return self.name, offset

    def sync(self) -> None:
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


@contextlib.contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(path / "catalogue.sqlite", timeout=60)
    try:
        with db:  # one transaction, committed on success
            db.executescript(_SCHEMA)
            yield db
    except sqlite3.DatabaseError as exc:
        raise ScanStoreError(f"{path}: the scan store's catalogue is unreadable ({exc})") from exc
    finally:
        db.close()


@contextlib.contextmanager
def _lock(path: Path, *, exclusive: bool) -> Iterator[None]:
    with open(path / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            what = "a scan is writing it or a rescan is reading it" if exclusive else "it is being compacted"
            raise ScanStoreError(f"{path}: {what}; try again when it is done") from exc
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_atomic(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".tmp-{uuid.uuid4().hex}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    fsync_path(target.parent)
