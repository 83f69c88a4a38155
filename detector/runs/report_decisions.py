"""The review report's decision controls: per video and character, infringing / not infringing
and a note; a reviewer name once per page; "download decisions" writes the JSON-lines file that
`mamori review apply` reads (`detector.review.decisions`).

Plain script, no network: the decisions live in the page (and the browser's `localStorage` for
this report, when the browser allows it, so a reload keeps them) until downloaded through a
Blob link. `detector.runs.report` inserts CSS, CONTROLS and SCRIPT into its page; its row
drawing calls `decisionControls(row, character)` under each character.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["CONTROLS", "CSS", "SCRIPT", "SIDECAR", "sha256_script"]

#: the rows' sha256 (what a decision names the input by), beside the thumbnails
SIDECAR = "sha256.js"
_MISSING = "-" * 64


def sha256_script(data: dict[str, Any], files: Path | None, files_url: str) -> str:
    """Move the rows' sha256 (`"x"`) out of the page data, as one string of 64 characters per row
    (dashes: none). With a thumbnails folder it goes to `files/SIDECAR`, loaded by the returned
    `<script>` tag, so the 10,000-video page stays within its size budget (docs/cli.md); else it is
    the data's `"x"` and the tag is empty."""
    shas = "".join(x if re.fullmatch(r"[0-9a-f]{64}", x := row.pop("x")) else _MISSING for row in data["rows"])
    if files is None:
        data["x"] = shas
        return ""
    text, dest = f"var MAMORI_SHA256 = {json.dumps(shas)};\n", files / SIDECAR
    if not dest.is_file() or dest.read_text(encoding="utf-8", errors="replace") != text:  # as thumbnails: reused
        tmp = files / f".{SIDECAR}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, dest)
    return f'<script src="{html.escape(files_url + SIDECAR)}"></script>'

CSS = """
.dec{margin:2px 0 8px;font-size:12px}.dec button{margin-right:4px}.dec input{width:220px}
.dec button.on[data-d=infringing]{background:#c62828;color:#fff}
.dec button.on[data-d=not_infringing]{background:#2e7d32;color:#fff}
"""

CONTROLS = """
 <span id="decisions"> reviewer: <input id="reviewer" size="12" placeholder="your name">
 <button id="download">download decisions</button> <span id="decided">0 decisions</span></span>
"""

#: shown instead of decision buttons when the row's result line has no sha256 ...
NO_SHA_LINE = ("this result line has no sha256 (`mamori scan`, `score` and `demo` record it; the HTTP API, "
               "`Detector.score_video` and an older `mamori demo` do not): scan the file with `mamori scan` to "
               "decide it here, or decide in a decisions file")
#: ... or when the report's sha256 sidecar did not load
NO_SHA_FILE = (f"the report's {SIDECAR} did not load (moved without its _files folder?): "
               "decide in a decisions file")

SCRIPT = f"\nconst NO_SHA_LINE = {json.dumps(NO_SHA_LINE)}, NO_SHA_FILE = {json.dumps(NO_SHA_FILE)};" + """
const SHA_LOADED = typeof MAMORI_SHA256 === "string" || typeof D.x === "string";
const SHAS = (typeof MAMORI_SHA256 === "string" ? MAMORI_SHA256 : D.x) || "";
D.rows.forEach((r, i) => { const s = SHAS.slice(64 * i, 64 * i + 64); r.x = /^[0-9a-f]{64}$/.test(s) ? s : ""; });
const DEC = new Map(), DKEY = "mamori-decisions:" + D.generated + ":" + D.rows.length;
function decKey(r, name) { return JSON.stringify([r.p, r.x, name]); }
function decSave() {
  document.getElementById("decided").textContent = DEC.size + " decision" + (DEC.size === 1 ? "" : "s");
  try { localStorage.setItem(DKEY, JSON.stringify([...DEC.values()])); } catch (e) { /* file: pages may refuse */ }
}
try { for (const d of JSON.parse(localStorage.getItem(DKEY) || "[]")) DEC.set(JSON.stringify([d.path, d.sha256, d.character]), d); }
catch (e) { /* nothing kept */ }
function decisionControls(r, name) {
  const box = el("div", {class: "dec"});
  if (!r.x) { box.textContent = SHA_LOADED ? NO_SHA_LINE : NO_SHA_FILE; return box; }
  const key = decKey(r, name), note = el("input", {class: "note", placeholder: "note (optional)"});
  const buttons = [["infringing", "infringing"], ["not_infringing", "not infringing"], ["", "undecided"]].map(
    ([value, label]) => el("button", {"data-d": value, type: "button"}, label));
  const show = () => { const d = DEC.get(key); for (const b of buttons) b.classList.toggle("on", !!d && d.decision === b.dataset.d); };
  for (const b of buttons) b.onclick = () => {
    if (b.dataset.d) DEC.set(key, {path: r.p, sha256: r.x, character: name, decision: b.dataset.d, note: note.value});
    else DEC.delete(key);
    show(); decSave();
  };
  note.value = (DEC.get(key) || {}).note || "";
  note.oninput = () => { const d = DEC.get(key); if (d) { d.note = note.value; decSave(); } };
  box.append(...buttons, note); show();
  return box;
}
function decisionsJsonl() {
  const reviewer = document.getElementById("reviewer").value.trim();
  return [...DEC.values()].map(d => JSON.stringify({path: d.path, sha256: d.sha256, character: d.character,
    decision: d.decision, note: d.note.trim(), reviewer: reviewer}) + "\\n").join("");
}
document.getElementById("reviewer").value = (() => { try { return localStorage.getItem("mamori-reviewer") || ""; }
  catch (e) { return ""; } })();
document.getElementById("reviewer").oninput = e => { try { localStorage.setItem("mamori-reviewer", e.target.value); }
  catch (x) { /* not kept */ } };
document.getElementById("download").onclick = () => {
  const a = el("a", {href: URL.createObjectURL(new Blob([decisionsJsonl()], {type: "application/x-ndjson"})),
    download: "decisions.jsonl"});
  document.body.appendChild(a); a.click(); a.remove();
};
decSave();
"""
