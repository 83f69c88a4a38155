"""Load test of `mamori serve` on loopback: latency and throughput for N concurrent clients,
with cross-request batching on and off, side by side in one run.

For each setting it starts a real server process (127.0.0.1, a free port, no tokens), waits for
/v1/ready, then runs `--clients` threads that each POST the same payload (a drawn 640x360 scene
with a character, PNG; or `--video`, a 4 s clip) until `--requests` replies in total or
`--seconds` have passed, and prints p50/p99 latency, requests/s and the error count (any non-200).

    python scripts/load_service.py [--clients 1 4] [--requests 40] [--seconds 120] [--video] [--work DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _index(work: Path) -> Path:
    from detector.embed.backbones import load_backbone
    from detector.embed.embedding import RegionEmbedder
    from detector.media.synth import draw_character
    from index import build_index
    from index.manifest import ReferenceEntry

    out = work / "index"
    if not (out / "index.json").exists():
        entries = []
        for c in range(6):
            p = work / "refs" / f"char-{c}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            draw_character(f"load-{c}", 256).save(p)
            entries.append(ReferenceEntry(p, f"char-{c}"))
        build_index(entries, out, RegionEmbedder(load_backbone("effnet-lite0-imagenet")), force=True)
    return out


def _payload(work: Path, video: bool) -> tuple[bytes, str]:
    from detector.media.synth import composite, draw_character, draw_scene, make_clip

    if video:
        path = work / "load.mp4"
        if not path.exists():
            make_clip(path, "load", draw_character("load-0", 256), duration=4.0, appear=(1.0, 3.0))
        return path.read_bytes(), "video/mp4"
    img, _ = composite(draw_scene("load"), draw_character("load-0", 256), height_frac=0.6, x_frac=0.5)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue(), "image/png"


def _serve(index: Path, batching: bool, clients: int) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "detector.cli", "serve", "--index", str(index), "--port", str(port), "-q",
           "--workers", str(max(2, clients)), "--queue", str(4 * clients)]
    cmd += ["--batching", "on" if batching else "off"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/v1/ready", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    proc.kill()
    sys.exit("server did not start")


def _run(base: str, clients: int, payload: bytes, ctype: str, requests: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker() -> None:
        with httpx.Client(base_url=base, timeout=300) as c:
            while time.monotonic() < stop_at:
                with lock:
                    if len(latencies) + errors[0] >= requests:
                        return
                t = time.perf_counter()
                try:
                    ok = c.post("/v1/score", content=payload, headers={"content-type": ctype}).status_code == 200
                except httpx.HTTPError:
                    ok = False
                dt = time.perf_counter() - t
                with lock:
                    if ok:
                        latencies.append(dt)
                    else:
                        errors[0] += 1

    with httpx.Client(base_url=base, timeout=300) as c:  # warm-up: first-request allocations
        c.post("/v1/score", content=payload, headers={"content-type": ctype})
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {"n": len(latencies), "errors": errors[0], "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)), "rps": len(latencies) / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--requests", type=int, default=40, help="replies per setting (bound)")
    ap.add_argument("--seconds", type=float, default=120, help="time per setting (bound)")
    ap.add_argument("--video", action="store_true", help="POST a 4 s clip instead of a still image")
    ap.add_argument("--work", type=Path, default=ROOT / ".bench" / "load")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    index = _index(a.work)
    payload, ctype = _payload(a.work, a.video)
    print(f"payload {ctype} {len(payload):,} bytes; {os.cpu_count()} CPUs; effnet-lite0-imagenet; loopback")
    print(f"{'clients':>8s} {'batching':>9s} {'replies':>8s} {'errors':>7s} {'p50 s':>7s} {'p99 s':>7s} {'req/s':>7s}")
    for clients in a.clients:
        for batching in (True, False):
            proc, base = _serve(index, batching, clients)
            try:
                r = _run(base, clients, payload, ctype, a.requests, a.seconds)
            finally:
                proc.terminate()
                proc.wait(30)
            print(f"{clients:>8d} {'on' if batching else 'off':>9s} {r['n']:>8d} {r['errors']:>7d} {r['p50']:>7.2f} "
                  f"{r['p99']:>7.2f} {r['rps']:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
