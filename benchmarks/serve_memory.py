"""Peak memory of `resnetlab serve` under a burst of concurrent large uploads, and /health latency meanwhile.

Starts `resnetlab serve CKPT` in its own process on a free loopback port, builds one PNG of --side x --side pixels
that compresses to little (a gradient: a few hundred kilobytes that decode to about 100 MB as RGB), sends it
--uploads times at once (one thread and connection each), and asks GET /health every --health-every seconds
until the burst is answered. Prints the answers' status codes, the burst's wall time, the /health latency
(median and max) during the burst, and the server's memory from /proc/PID/status: VmRSS before the burst and
VmHWM (peak resident set) after it, as one markdown table row. Linux only (/proc).

    .venv/bin/python benchmarks/serve_memory.py /tmp/serve-ckpt/best.pt --uploads 50
"""

from __future__ import annotations

import argparse
import collections
import http.client
import io
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from machine import cpu_model
from PIL import Image


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory_mb(pid: int, field: str) -> float:
    """A field of /proc/PID/status (VmRSS, VmHWM, ...) in megabytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def gradient_png(side: int) -> bytes:
    """An RGB PNG of side x side pixels: smooth gradients, so it compresses to a few hundred kilobytes."""
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    array = np.empty((side, side, 3), dtype=np.uint8)
    array[..., 0] = ramp[None, :]
    array[..., 1] = ramp[:, None]
    array[..., 2] = 128
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "image/png"} if body else {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("checkpoint", help="a best.pt or a run folder")
    parser.add_argument("--uploads", type=int, default=50, help="concurrent POST /predict requests")
    parser.add_argument("--side", type=int, default=6000, help="the PNG is side x side pixels")
    parser.add_argument("--health-every", type=float, default=0.1, help="seconds between /health requests")
    args = parser.parse_args()

    png = gradient_png(args.side)
    port = free_port()
    command = [sys.executable, "-m", "resnetlab", "serve", args.checkpoint, "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                request(port, "GET", "/health")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start: {server.communicate()[1]}") from None
                time.sleep(0.2)
        rss_before = memory_mb(server.pid, "VmRSS")

        done = threading.Event()
        health: list[float] = []

        def ask_health() -> None:
            while not done.is_set():
                start = time.perf_counter()
                status, _ = request(port, "GET", "/health")
                health.append(time.perf_counter() - start)
                if status != 200:
                    raise RuntimeError(f"GET /health answered {status} during the burst")
                done.wait(args.health_every)

        def upload(_: int) -> int | str:
            try:
                return request(port, "POST", "/predict", png)[0]
            except OSError as e:  # a connection the server dropped or refused counts as an answer too
                return f"{type(e).__name__}"

        watcher = threading.Thread(target=ask_health)
        start = time.perf_counter()
        watcher.start()
        with ThreadPoolExecutor(max_workers=args.uploads) as pool:
            statuses = collections.Counter(pool.map(upload, range(args.uploads)))
        burst = time.perf_counter() - start
        done.set()
        watcher.join()
        peak = memory_mb(server.pid, "VmHWM")
    finally:
        server.terminate()
        server.wait(20)

    load = os.getloadavg()[0]
    print(
        f"CPU: {cpu_model()}, {os.cpu_count()} cores, load average {load:.1f} after the burst; "
        f"python {platform.python_version()}\n"
    )
    print(
        "| uploads at once | image | answers | burst wall time | /health during the burst: median / max "
        "| server VmRSS before | server peak (VmHWM) |"
    )
    print("|---|---|---|---|---|---|---|")
    answers = ", ".join(f"{count} x {status}" for status, count in sorted(statuses.items(), key=str))
    print(
        f"| {args.uploads} | {args.side}x{args.side} RGB PNG, {len(png) / 1024:.0f} KB | {answers} | {burst:.1f} s "
        f"| {statistics.median(health) * 1000:.0f} ms / {max(health) * 1000:.0f} ms ({len(health)} requests) "
        f"| {rss_before:.0f} MB | {peak:.0f} MB |"
    )


if __name__ == "__main__":
    main()
