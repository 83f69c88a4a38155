"""Soak test of `mamori serve` on loopback: concurrent scoring for `--minutes`, an admin
reference add or remove every `--admin-every` seconds, and hostile uploads mixed in.

Starts a real server (127.0.0.1, a free port, no tokens, the effnet index of
`scripts/load_service.py`), then `--clients` threads POST, each time at random: a still image, a
short clip, or one of the hostile payloads below. Counted per reply status; any 5xx reply or a
dropped connection is a failure. The server's RSS is sampled every second; growth is the last
minute's mean over the mean of the minute after warm-up (the first minute). Exit status 0 when
there were no 5xx replies, no transport errors on well-formed requests and RSS grew ≤ 10%.

Hostile payloads: a truncated clip, a raw .h264 stream, random bytes as video/mp4, an empty body,
a 20000x20000 PNG bomb, a text file as image/png, a wrong content type, a multipart body with an
oversize form field and one with too many fields, a malformed multipart body, a declared
Content-Length over the upload limit, a client that disconnects mid-upload.

    python scripts/soak_service.py [--minutes 10] [--clients 3] [--admin-every 30] [--work DIR] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from load_service import _index, _payload, _serve

from detector.media.hostile import remux


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def payloads(work: Path) -> dict[str, dict]:
    """name -> request keyword arguments for httpx (`content` + headers, or `files`/`data`)."""
    image, _ = _payload(work, video=False)
    clip, _ = _payload(work, video=True)
    raw = remux(work / "load.mp4", work / "load.h264").read_bytes()
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, "PNG")
    rng = random.Random(0)

    def body(data: bytes, ctype: str) -> dict:
        return {"content": data, "headers": {"content-type": ctype}}

    return {
        "image": body(image, "image/png"),
        "clip": body(clip, "video/mp4"),
        "truncated-clip": body(clip[: len(clip) // 3], "video/mp4"),
        "raw-h264": {**body(raw, "application/octet-stream"), "headers": {"content-type": "application/octet-stream",
                                                                          "x-filename": "load.h264"}},
        "random-bytes": body(rng.randbytes(50_000), "video/mp4"),
        "empty": body(b"", "video/mp4"),
        "png-bomb": body(bomb.getvalue(), "image/png"),
        "text-as-png": body(b"hello " * 1000, "image/png"),
        "wrong-type": body(image, "text/html"),
        "oversize-field": {"files": {"file": ("a.png", image, "image/png")}, "data": {"note": "x" * 200_000}},
        "many-fields": {"files": {"file": ("a.png", image, "image/png")},
                        "data": {f"f{i}": "v" for i in range(100)}},
        "malformed-multipart": body(b"--xyz\r\nnot a part\r\n", "multipart/form-data; boundary=xyz"),
    }


def _raw(base: str, declared: int, sent: int) -> str:
    """A raw request that declares `declared` body bytes and sends `sent`: a huge declared upload
    (the reply's status), or a client that disconnects mid-upload ("sent")."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: video/mp4\r\n"
                  b"Content-Length: %d\r\n\r\n" % declared + b"\0" * sent)
        if sent < declared < 10**9:
            return "sent"
        reply = s.recv(64).split(b" ")
        return reply[1].decode() if len(reply) > 1 else "transport"


class Soak:
    def __init__(self, base: str, pid: int, work: Path, minutes: float, admin_every: float):
        self.base, self.pid, self.work = base, pid, work
        self.stop_at = time.monotonic() + minutes * 60
        self.admin_every = admin_every
        self.status: Counter[str] = Counter()
        self.failures: list[str] = []
        self.rss: list[tuple[float, float]] = []
        self.admin: Counter[str] = Counter()
        self.lock = threading.Lock()

    def record(self, name: str, status: str) -> None:
        with self.lock:
            self.status[f"{name} {status}"] += 1
            if status.startswith("5") or status == "transport":
                self.failures.append(f"{name}: {status}")

    def client(self, seed: int, reqs: dict[str, dict]) -> None:
        rng = random.Random(seed)
        names = list(reqs)
        weights = [6 if n == "image" else 2 if n == "clip" else 1 for n in names] + [1, 1]
        with httpx.Client(base_url=self.base, timeout=300) as c:
            while time.monotonic() < self.stop_at:
                name = rng.choices([*names, "disconnect", "huge-length"], weights)[0]
                try:
                    if name in ("disconnect", "huge-length"):
                        status = _raw(self.base, *((1_000_000, 50_000) if name == "disconnect" else (10**12, 10)))
                    else:
                        status = str(c.post("/v1/score", **reqs[name]).status_code)
                except (httpx.HTTPError, OSError):
                    status = "transport"
                self.record(name, status)

    def admin_loop(self) -> None:
        from detector.media.synth import draw_character

        art = self.work / "soak-ref.png"
        draw_character("soak-extra", 256).save(art)
        added: str | None = None
        with httpx.Client(base_url=self.base, timeout=300) as c:
            while time.monotonic() + self.admin_every < self.stop_at:
                time.sleep(self.admin_every)
                if added is None:
                    r = c.post("/v1/admin/references", files={"file": ("soak.png", art.read_bytes(), "image/png")},
                               data={"character": "soak-extra"})
                    added = "soak-extra" if r.status_code == 200 else None
                    self.admin[f"add {r.status_code}"] += 1
                else:
                    r = c.delete(f"/v1/admin/characters/{added}")
                    self.admin[f"remove {r.status_code}"] += 1
                    added = None
                if r.status_code >= 500:
                    self.failures.append(f"admin: {r.status_code} {r.text[:200]}")

    def sample_rss(self) -> None:
        t0 = time.monotonic()
        while time.monotonic() < self.stop_at:
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
                kb = next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:"))
                self.rss.append((time.monotonic() - t0, kb / 1024))
            except (OSError, StopIteration):
                pass
            time.sleep(1.0)

    def rss_growth(self) -> tuple[float, float, float]:
        """(mean MB in minute 2, mean MB in the last minute, growth ratio)."""
        end = self.rss[-1][0] if self.rss else 0.0
        early = [m for t, m in self.rss if 60 <= t < 120] or [m for _, m in self.rss]
        late = [m for t, m in self.rss if t >= end - 60] or early
        a, b = sum(early) / max(1, len(early)), sum(late) / max(1, len(late))
        return a, b, b / a if a else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--admin-every", type=float, default=30.0, help="seconds between admin changes")
    ap.add_argument("--work", type=Path, default=ROOT / ".bench" / "soak")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    index = _index(a.work)
    reqs = payloads(a.work)
    proc, base = _serve(index, True, a.clients)
    soak = Soak(base, proc.pid, a.work, a.minutes, a.admin_every)
    threads = [threading.Thread(target=soak.client, args=(i, reqs)) for i in range(a.clients)]
    threads += [threading.Thread(target=soak.admin_loop), threading.Thread(target=soak.sample_rss)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        proc.terminate()
        proc.wait(30)
    early, late, growth = soak.rss_growth()
    n5xx = sum(v for k, v in soak.status.items() if k.split()[-1].startswith("5"))
    summary = {"minutes": a.minutes, "clients": a.clients, "replies": sum(soak.status.values()),
               "status": dict(sorted(soak.status.items())), "admin": dict(soak.admin), "5xx": n5xx,
               "failures": soak.failures[:20], "rss_mb_minute2": round(early, 1), "rss_mb_last_minute": round(late, 1),
               "rss_growth": round(growth, 3)}
    if a.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['replies']} requests in {a.minutes:g} min, {a.clients} clients; admin {summary['admin']}")
        for k, v in summary["status"].items():
            print(f"  {k}: {v}")
        print(f"5xx replies {n5xx}; failures {len(soak.failures)}; RSS {early:.0f} MB (minute 2) -> {late:.0f} MB "
              f"(last minute): x{growth:.3f}")
        for f in soak.failures[:20]:
            print(f"  failure: {f}")
    return 0 if not soak.failures and growth <= 1.10 else 1


if __name__ == "__main__":
    sys.exit(main())
