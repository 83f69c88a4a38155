"""The review report: one self-contained HTML page for the people who check flagged videos.

    mamori scan ... --out results.jsonl --report report.html
    mamori report results.jsonl -o report.html [--index INDEX]

What a reviewer sees, per `flag` or `review` video (sorted by score, highest first; re-sortable
by score, duration or path; filterable by verdict; 50 per page): the path (a link to the file,
relative to the report), verdict, score, duration, a chart of the score over time (the result's
`timeline`, with the flag and review thresholds when the index is given), and per character
(franchise, rights holder, score) its segments: times, the matched frame with the matched region
boxed, side by side with the reference image it matched; and decision buttons that download the
decisions file `mamori review apply` reads (`detector.runs.report_decisions`).

How it stays small: the page holds the rows as JSON and draws one page of rows at a time;
thumbnails (at most THUMB_SIDE px, JPEG) are files in the sibling folder `<report>_files/` and
load lazily. At most MAX_CHARACTERS characters and MAX_SEGMENTS segments per character are shown.
A thumbnail is named by a hash of what it shows, so writing the report again reuses the ones
already made. A video that cannot be read any more gets a placeholder, not a failure.

Safety: file names and metadata are written into the page only as text (JSON data read by the
script, which sets `textContent` and attributes, never markup), so a hostile file name cannot
inject markup or script; links are percent-encoded relative paths.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from PIL import Image, ImageDraw

from detector.errors import MediaError
from detector.match.results import path_of
from detector.match.verify import MIN_INLIERS
from detector.runs import report_decisions as decisions
from index.errors import IndexStoreError

__all__ = ["MAX_CHARACTERS", "MAX_SEGMENTS", "PAGE_SIZE", "THUMB_SIDE", "report_data", "write_report"]

THUMB_SIDE = 200
MAX_CHARACTERS = 3
MAX_SEGMENTS = 3
PAGE_SIZE = 50
_BOX = (255, 32, 32)

Progress = Callable[[str, int, int], None]


def _link(target: str, base: Path) -> str:
    """A percent-encoded link to `target` relative to the report's folder (absolute if that fails);
    the bytes of a non-UTF-8 file name are percent-encoded as they are."""
    p = Path(target)
    try:
        rel = os.path.relpath(p.resolve(), base.resolve())
    except ValueError:
        rel = str(p.resolve())
    return quote(os.fsencode(Path(rel).as_posix()), safe="/")


def _thumb_name(kind: str, *parts: object) -> str:
    return f"{kind}-{hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:16]}.jpg"


def _save_thumb(img: Image.Image, dest: Path) -> None:
    img = img.convert("RGB")
    img.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BILINEAR)
    tmp = dest.with_suffix(".tmp")
    img.save(tmp, "JPEG", quality=75)
    os.replace(tmp, dest)


def _frame_thumb(video: str, peak_time: float, box: Sequence[int], dest: Path) -> str:
    """Write the frame at `peak_time` with `box` drawn; '' on success, else why it is missing."""
    from detector.media.frames import frame_at

    if dest.exists():
        return ""
    if not Path(video).is_file():
        return "video file not found"
    try:
        img = frame_at(video, peak_time).convert("RGB")
    except (MediaError, OSError, ValueError, MemoryError) as exc:
        return f"frame unavailable ({type(exc).__name__})"
    draw = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / THUMB_SIDE * 2))  # about 2 px once shrunk
    x0, y0, x1, y1 = (int(v) for v in box)
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=_BOX, width=width)
    _save_thumb(img, dest)
    return ""


def _reference_thumb(source: str, dest: Path) -> str:
    from index.images import open_image

    if dest.exists():
        return ""
    if not source or not Path(source).is_file():
        return "reference image not found"
    try:
        img = open_image(source)
    except (IndexStoreError, OSError, ValueError) as exc:
        return f"reference image unavailable ({type(exc).__name__})"
    _save_thumb(img, dest)
    return ""


def _times(ts: list[float]) -> list[float] | dict[str, float]:
    """Timeline times as given, or {"a": first, "d": step} when evenly spaced (the usual case)."""
    if len(ts) > 2:
        step = (ts[-1] - ts[0]) / (len(ts) - 1)
        if all(abs(t - (ts[0] + i * step)) <= 1e-3 for i, t in enumerate(ts)):
            return {"a": ts[0], "d": round(step, 6)}
    return ts


class _Table:
    """Distinct values, each stored once in the page and referred to by position."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._pos: dict[str, int] = {}

    def __call__(self, item: Any) -> int:
        key = json.dumps(item)
        if key not in self._pos:
            self._pos[key] = len(self.items)
            self.items.append(item)
        return self._pos[key]


def _rescan_note(info: dict[str, Any]) -> str:
    """A rescan line's marker in the report: scored from a scan store, not from a fresh scan."""
    how = "frames checked again" if info.get("exact") else "stored vectors only"
    return f"rescan ({how}) of the scan of {info.get('scanned_at') or '?'}"


def report_data(results: Sequence[dict[str, Any]], files: Path | None, base: Path,
                progress: Progress | None = None) -> dict[str, Any]:
    """The page's data: one row per `flag`/`review` result, highest score first, thumbnails
    written into `files` (None: no thumbnails).

    Encoding (compact, because a report may hold 10,000+ rows): `rows[i]` = {"p": path, "h": link,
    "v": verdict, "s": score, "d": duration, "n": frames sampled, "t": timeline times (a list, or
    {"a": first, "d": step} when evenly spaced), "y": timeline scores in percent, "c":
    [[character#, score, [[start, end, peak_time, peak_score, reference#, channel, frame thumbnail
    or "", why-missing# or -1], ...], inliers (only when checked)], ...], "x": sha256 or "", "r": how a
    `mamori rescan` line was scored (only on those: `_rescan_note`)}; `characters[#]` = [name,
    franchise, rights holder], `references[#]` = [path, thumbnail or "", why missing], `why[#]` = a
    reason text.
    """
    wanted = [r for r in results if r.get("verdict") in ("flag", "review")]
    wanted.sort(key=lambda r: -float(r.get("score") or 0.0))
    characters, references, why = _Table(), _Table(), _Table()
    ref_index: dict[str, int] = {}
    rows = []
    for i, r in enumerate(wanted, 1):
        chars = []
        for c in (r.get("characters") or [])[:MAX_CHARACTERS]:
            segs = sorted(c.get("segments") or [], key=lambda s: -float(s.get("peak_score") or 0.0))
            shown = []
            for s in segs[:MAX_SEGMENTS]:
                ref = str(s.get("reference") or "")
                if ref not in ref_index:
                    name, missing = "", "no thumbnails"
                    if str(s.get("reference_id") or "").startswith("text:"):  # `reference` is the prompt text
                        missing = "a text prompt (no reference image)"
                    elif files is not None:
                        name = _thumb_name("r", ref)
                        missing = _reference_thumb(ref, files / name)
                    ref_index[ref] = references([ref, "" if missing else name, missing])
                frame, missing = "", "no thumbnails"
                if files is not None:
                    box = s.get("box") or [0, 0, 0, 0]
                    frame = _thumb_name("f", r["path"], r.get("sha256"), s.get("peak_time"), box)
                    missing = _frame_thumb(path_of(r), float(s.get("peak_time") or 0.0), box, files / frame)
                shown.append([s.get("start"), s.get("end"), s.get("peak_time"), s.get("peak_score"), ref_index[ref],
                              s.get("channel") or "embedding", "" if missing else frame,
                              why(missing) if missing else -1])
            who = characters([c.get("character") or "", c.get("franchise") or "", c.get("rights_holder") or ""])
            chars.append([who, c.get("score"), shown] + ([c["inliers"]] if c.get("inliers") is not None else []))
        tl = r.get("timeline") or []
        rows.append({"p": r["path"], "h": _link(path_of(r), base), "v": r["verdict"], "s": r.get("score"),
                     "d": r.get("duration"), "n": r.get("frames"), "t": _times([t for t, _ in tl]),
                     "y": [round(100 * v) for _, v in tl], "c": chars, "x": r.get("sha256") or "",
                     **({"r": _rescan_note(r["rescan"])} if r.get("rescan") else {})})
        if progress is not None:
            progress("report", i, len(wanted))
    return {"rows": rows, "characters": characters.items, "references": references.items, "why": why.items}


def write_report(results: Sequence[dict[str, Any]], out: str | Path, *, index: str | Path | None = None,
                 thumbnails: bool = True, progress: Progress | None = None) -> int:
    """Write the review report for `results` (result dicts, e.g. `detector.runs.export.read_results`)
    to `out`, thumbnails into `<out stem>_files/`; returns the number of videos in it.

    `index` (optional) adds its flag and review thresholds to the score charts.
    """
    out = Path(out)
    base = out.parent
    base.mkdir(parents=True, exist_ok=True)
    files = None
    if thumbnails:
        files = base / f"{out.stem}_files"
        files.mkdir(exist_ok=True)
    data = report_data(results, files, base, progress)
    thresholds = None
    if index is not None:
        from index import IndexStore

        store = IndexStore.open(index)
        thresholds = {"flag": store.flag_score, "review": store.review_score}
    counts: dict[str, int] = {}
    for r in results:
        counts[str(r.get("verdict"))] = counts.get(str(r.get("verdict")), 0) + 1
    data.update({"thresholds": thresholds, "counts": counts, "page_size": PAGE_SIZE, "min_inliers": MIN_INLIERS,
                 "files": quote(files.name) + "/" if files is not None else "",
                 "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
    # JSON inside <script>: escape '<' so no string can close the element
    sha_tag = decisions.sha256_script(data, files, data["files"])
    payload = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    head, tail = _PAGE.split("__DATA__")
    head = head.replace("__DECISIONS_CSS__", decisions.CSS).replace("__DECISIONS__", decisions.CONTROLS)
    page = (head.replace("__TITLE__", html.escape(f"mamori review: {out.stem}")) + payload
            + tail.replace("__DECISIONS_JS__", decisions.SCRIPT).replace("__DECISIONS_SRC__", sha_tag))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return len(data["rows"])


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f4f6;color:#222}
header{background:#222;color:#fff;padding:10px 16px}header h1{font-size:18px;margin:0 0 4px}
#controls{padding:8px 16px;background:#fff;border-bottom:1px solid #ddd;position:sticky;top:0}
#controls button,#controls select{margin-right:6px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #e3e3e3;padding:6px 8px;vertical-align:top;text-align:left}
th.sort{cursor:pointer;text-decoration:underline}
.flag{color:#fff;background:#c62828;padding:1px 6px;border-radius:3px}
.review{color:#222;background:#ffb300;padding:1px 6px;border-radius:3px}
.seg{display:flex;gap:8px;align-items:flex-start;margin:4px 0 10px}
.seg img{max-width:200px;max-height:140px;border:1px solid #bbb;background:#eee}
.miss{width:200px;height:60px;border:1px dashed #bbb;font-size:11px;color:#777;overflow:hidden}
.meta{font-size:12px;color:#555}svg{background:#fafafa;border:1px solid #ddd}__DECISIONS_CSS__</style></head>
<body>
<header><h1>__TITLE__</h1><div id="summary"></div></header>
<div id="controls">
 sort: <select id="sort"><option value="score-desc">score, highest first</option>
 <option value="score-asc">score, lowest first</option><option value="duration-desc">duration, longest first</option>
 <option value="path-asc">path</option></select>
 show: <select id="filter"><option value="all">flag and review</option><option value="flag">flag</option>
 <option value="review">review</option></select>
 <button id="prev">&larr; previous</button><span id="pageinfo"></span><button id="next">next &rarr;</button>__DECISIONS__</div>
<table><thead><tr><th class="sort" data-key="path">video</th><th class="sort" data-key="score">score</th>
<th>score over time</th><th>evidence: matched frame (region boxed) | reference</th></tr></thead>
<tbody id="rows"></tbody></table>
<script type="application/json" id="data">__DATA__</script>__DECISIONS_SRC__
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
let view = D.rows.slice(), page = 0;
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function fmt(x, d) { return (x === null || x === undefined) ? "" : Number(x).toFixed(d); }
function chart(t, ys, dur) {
  const ts = Array.isArray(t) ? t : ys.map((_, i) => t.a + i * t.d);
  const W = 260, H = 60, NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("width", W); svg.setAttribute("height", H);
  const tmax = Math.max(dur || 0, ts.length ? ts[ts.length - 1] : 0, 1e-6);
  const x = t => 2 + (W - 4) * t / tmax, y = s => H - 2 - (H - 4) * Math.min(1, Math.max(0, s));
  if (D.thresholds) for (const [k, c] of [["flag", "#c62828"], ["review", "#ffb300"]]) {
    const l = document.createElementNS(NS, "line");
    l.setAttribute("x1", 0); l.setAttribute("x2", W); l.setAttribute("y1", y(D.thresholds[k]));
    l.setAttribute("y2", y(D.thresholds[k])); l.setAttribute("stroke", c); l.setAttribute("stroke-dasharray", "3 3");
    svg.appendChild(l);
  }
  const p = document.createElementNS(NS, "polyline");
  p.setAttribute("points", ts.map((t, i) => x(t).toFixed(1) + "," + y(ys[i] / 100).toFixed(1)).join(" "));
  p.setAttribute("fill", "none"); p.setAttribute("stroke", "#1565c0"); p.setAttribute("stroke-width", "1.5");
  svg.appendChild(p);
  const title = document.createElementNS(NS, "title");
  title.textContent = "best frame score over time (0 to 1)";
  svg.appendChild(title);
  return svg;
}
function image(src, missing, alt) {
  if (!src) return el("div", {class: "miss"}, missing || "no image");
  const img = el("img", {src: D.files + src, alt: alt, loading: "lazy", "data-ok": "pending"});
  img.onload = () => img.setAttribute("data-ok", "1");
  img.onerror = () => img.setAttribute("data-ok", "0");
  return img;
}
function row(r) {
  const tr = el("tr", {class: "row"});
  const td0 = el("td");
  td0.appendChild(el("a", {href: r.h}, r.p));
  td0.appendChild(el("div", {class: "meta"}, (r.d !== null ? fmt(r.d, 1) + " s, " : "") + r.n + " frames sampled"));
  if (r.r) td0.appendChild(el("div", {class: "meta rescan"}, r.r));
  tr.appendChild(td0);
  const td1 = el("td");
  td1.appendChild(el("span", {class: r.v}, r.v));
  td1.appendChild(el("div", {}, fmt(r.s, 3)));
  tr.appendChild(td1);
  const td2 = el("td"); td2.appendChild(chart(r.t, r.y, r.d)); tr.appendChild(td2);
  const td3 = el("td");
  for (const [who, score, segs, inliers] of r.c) {
    const [name, franchise, rights] = D.characters[who];
    td3.appendChild(el("div", {}, name + " (" + (franchise || "?") + "; rights: " + (rights || "?") + "): " +
      fmt(score, 3) + (inliers === undefined ? "" : "; geometric check: best frame " + inliers +
      " matching keypoints" + (inliers >= D.min_inliers ? " (frame verified)" : " (not verified)"))));
    td3.appendChild(decisionControls(r, name));
    for (const [start, end, peak, peakScore, ref, channel, frame, why] of segs) {
      const [refPath, refImg, refWhy] = D.references[ref];
      const d = el("div", {class: "seg"});
      d.appendChild(image(frame, why >= 0 ? D.why[why] : "", "frame at " + fmt(peak, 2) + " s"));
      d.appendChild(image(refImg, refWhy, "reference " + refPath));
      d.appendChild(el("div", {class: "meta"}, fmt(start, 2) + "-" + fmt(end, 2) + " s, peak " + fmt(peak, 2) +
        " s (" + fmt(peakScore, 3) + ", " + channel + "); reference " + refPath));
      td3.appendChild(d);
    }
  }
  tr.appendChild(td3);
  return tr;
}
function render() {
  const pages = Math.max(1, Math.ceil(view.length / D.page_size));
  page = Math.min(Math.max(page, 0), pages - 1);
  const body = document.getElementById("rows");
  body.replaceChildren(...view.slice(page * D.page_size, (page + 1) * D.page_size).map(row));
  document.getElementById("pageinfo").textContent = " page " + (page + 1) + " of " + pages + " (" +
    view.length + " videos) ";
  document.body.setAttribute("data-rendered", body.children.length);
}
function apply() {
  const f = document.getElementById("filter").value, [key, dir] = document.getElementById("sort").value.split("-");
  view = D.rows.filter(r => f === "all" || r.v === f);
  const sign = dir === "asc" ? 1 : -1;
  const k = {score: "s", duration: "d", path: "p"}[key];
  view.sort((a, b) => key === "path" ? sign * (a.p < b.p ? -1 : a.p > b.p ? 1 : 0) : sign * ((a[k] || 0) - (b[k] || 0)));
  page = 0; render();
}
document.getElementById("summary").textContent = Object.entries(D.counts).map(([k, v]) => v + " " + k).join(", ") +
  " in the results; generated " + D.generated;
document.getElementById("sort").onchange = apply;
document.getElementById("filter").onchange = apply;
document.getElementById("prev").onclick = () => { page--; render(); };
document.getElementById("next").onclick = () => { page++; render(); };
for (const th of document.querySelectorAll("th.sort")) th.onclick = () => {
  const s = document.getElementById("sort");
  s.value = th.dataset.key === "path" ? "path-asc" : (s.value === "score-desc" ? "score-asc" : "score-desc");
  apply();
};
__DECISIONS_JS__
apply();
</script></body></html>
"""
