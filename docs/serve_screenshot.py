"""docs/images/serve.png: the page of `resnetlab serve` with a real model, after uploading one of its test images.

    .venv/bin/python docs/serve_screenshot.py RUN_OR_CHECKPOINT [--data-dir data] [--out docs/images/serve.png]

Needs Debian's chromium (/usr/bin/chromium) and the dev extra (Playwright). Starts `resnetlab serve` on
127.0.0.1:8000 (the address the page's curl example then shows), uploads the first test image that the model
gets right with 60-85% confidence (so the bars show some doubt), and saves a full-page screenshot at 2x.
"""

from __future__ import annotations

import argparse
import http.client
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from playwright.sync_api import expect, sync_playwright

from resnetlab.inference import TorchPredictor

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def pick_test_image(predictor: TorchPredictor, data_dir: str, folder: Path) -> Path:
    data = predictor.load_test_data(data_dir, limit=1000)
    probabilities, labels = predictor.probabilities(data.images), data.labels
    confidence, predicted = probabilities.max(1)
    for i in range(len(labels)):
        if predicted[i] == labels[i] and 0.6 < confidence[i] < 0.85:
            path = folder / f"test-image-{i}.png"
            Image.fromarray(data.images[i].permute(1, 2, 0).squeeze(2).numpy()).save(path)
            print(f"test image {i}: {predictor.classes[labels[i]]}, predicted with {float(confidence[i]):.1%}")
            return path
    raise SystemExit("no test image among the first 1000 is right with 60-85% confidence")


def wait_for_server(port: int, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a best.pt or a run folder")
    parser.add_argument("--data-dir", default="data", help="where the checkpoint's test images are")
    parser.add_argument("--out", default="docs/images/serve.png")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()

    predictor = TorchPredictor.from_checkpoint(args.checkpoint, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        image = pick_test_image(predictor, args.data_dir, Path(tmp))
        command = [sys.executable, "-m", "resnetlab", "serve", args.checkpoint, "--port", str(args.port)]
        server = subprocess.Popen(command)
        try:
            wait_for_server(args.port)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1180, "height": 820}, device_scale_factor=2)
                page.goto(f"http://127.0.0.1:{args.port}/")
                page.wait_for_selector("#facts dd")
                for _ in range(3):  # the last upload shows a warm server's time
                    page.set_input_files("#file", str(image))
                    expect(page.locator("body")).to_have_attribute("data-state", "idle")
                    expect(page.locator("#bars li")).to_have_count(5)
                page.wait_for_timeout(500)  # the bars' transition
                page.screenshot(path=args.out, full_page=True)
                browser.close()
        finally:
            server.terminate()
            server.wait(20)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
