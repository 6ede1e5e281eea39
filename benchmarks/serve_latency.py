"""Request latency of `resnetlab serve` for one image, against calling the model directly in the same run.

For each checkpoint: starts `resnetlab serve` in its own process on a free loopback port, sends --requests
sequential POST /predict requests (one PNG image of the model's input size as the body, one keep-alive
connection, after --warmup unmeasured ones), and prints a markdown table: the round trip seen by the client, the
server's own "milliseconds" field, and the baseline: TorchPredictor.probabilities on the same image in this
process (no HTTP, no PNG decoding), one call after each request so both see the same load on the machine, and
in a worker thread as the server runs it (back-to-back calls from the main thread measured up to 10x slower on a
busy 2-core machine, where OpenMP's threads wait on each other).

    .venv/bin/python benchmarks/serve_latency.py /tmp/runs/fm-r20-base/best.pt [more checkpoints] [--requests 200]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from machine import cpu_model
from PIL import Image

from resnetlab.imagefiles import decode
from resnetlab.inference import TorchPredictor


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_image(predictor: TorchPredictor) -> bytes:
    """A PNG of the model's input size: a bright block on a noisy dark background."""
    size, channels = predictor.card.image_size, predictor.card.in_channels
    rng = np.random.default_rng(0)
    array = rng.integers(0, 60, (size, size, channels), dtype=np.uint8)
    array[size // 4 : 3 * size // 4, size // 3 : 2 * size // 3] = 220
    buffer = io.BytesIO()
    Image.fromarray(array[:, :, 0] if channels == 1 else array).save(buffer, format="PNG")
    return buffer.getvalue()


def direct_call(predictor: TorchPredictor, image: torch.Tensor) -> float:
    start = time.perf_counter()
    predictor.top_classes(predictor.probabilities(image), 5)
    return (time.perf_counter() - start) * 1000


def measure(
    checkpoint: str, predictor: TorchPredictor, png: bytes, requests: int, warmup: int
) -> dict[str, list[float]]:
    """Milliseconds per request: HTTP round trip, the server's own time, and the direct call, interleaved."""
    card = predictor.card
    image = decode(io.BytesIO(png), card.in_channels, card.image_size)[None]
    worker = ThreadPoolExecutor(1)
    port = free_port()
    command = [sys.executable, "-m", "resnetlab", "serve", checkpoint, "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                connection.request("GET", "/health")
                connection.getresponse().read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start: {server.communicate()[1]}") from None
                time.sleep(0.2)
        # http.client sends the headers and the body in two writes: without TCP_NODELAY, Nagle's algorithm holds
        # the body until the server's delayed ACK of the headers, adding ~40 ms to every request.
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times: dict[str, list[float]] = {"round_trip": [], "server": [], "direct": []}
        for i in range(warmup + requests):
            start = time.perf_counter()
            connection.request("POST", "/predict", body=png, headers={"Content-Type": "image/png"})
            response = connection.getresponse()
            body = response.read()
            round_trip = (time.perf_counter() - start) * 1000
            if response.status != 200:
                raise RuntimeError(f"POST /predict answered {response.status}: {body[:200]!r}")
            direct = worker.submit(direct_call, predictor, image).result()
            if i >= warmup:
                times["round_trip"].append(round_trip)
                times["server"].append(json.loads(body)["milliseconds"])
                times["direct"].append(direct)
        connection.close()
        return times
    finally:
        worker.shutdown()
        server.terminate()
        server.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("checkpoints", nargs="+", help="best.pt files or run folders")
    parser.add_argument("--requests", type=int, default=200, help="measured requests per checkpoint")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured requests first")
    args = parser.parse_args()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"CPU: {cpu_model()}, {os.cpu_count()} cores, load average {load:.1f} at start; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); python {platform.python_version()}\n"
    )
    print(
        "| checkpoint | model | input | requests | HTTP round trip median / p95 (ms) "
        "| server time median / p95 (ms) | direct call median / p95 (ms) |"
    )
    print("|---|---|---|---|---|---|---|")
    for checkpoint in args.checkpoints:
        predictor = TorchPredictor.from_checkpoint(checkpoint, device="cpu")
        card = predictor.card
        png = test_image(predictor)
        times = measure(checkpoint, predictor, png, args.requests, args.warmup)
        accuracy = predictor.checkpoint.best_test_accuracy
        name = f"{card.architecture} on {card.dataset}" + (f" ({accuracy:.2%})" if accuracy else "")
        size = f"{card.in_channels}x{card.image_size}x{card.image_size} PNG, {len(png)} B"

        def pair(values: list[float]) -> str:
            return f"{statistics.median(values):.1f} / {percentile(values, 95):.1f}"

        print(
            f"| {checkpoint} | {name} | {size} | {args.requests} | {pair(times['round_trip'])} "
            f"| {pair(times['server'])} | {pair(times['direct'])} |"
        )


if __name__ == "__main__":
    main()
