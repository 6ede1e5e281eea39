"""The page of `resnetlab serve` in a real headless Chromium (Debian's, driven by Playwright): draw, upload, see.

Screenshots go to the test's tmp folder, and to $RESNETLAB_ARTIFACTS when that is set (CI keeps them).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from fakedata import pattern_images
from liveserver import running
from PIL import Image
from playwright.sync_api import expect

from resnetlab.card import ModelCard
from resnetlab.checkpoint import Checkpoint
from resnetlab.inference import TorchPredictor
from resnetlab.serve import create_app

CHROMIUM = Path("/usr/bin/chromium")
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

# make test installs Debian's chromium; in CI a missing one fails the browser fixture instead of skipping.
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"), reason="needs Debian's chromium (make test installs it)"
)


@pytest.fixture(scope="module")
def predictor(trained_run) -> TorchPredictor:
    return TorchPredictor.from_checkpoint(trained_run / "best.pt")


@pytest.fixture(scope="module")
def server(predictor):
    with running(create_app(predictor)) as live:
        yield live


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def problems() -> list[str]:
    """What went wrong in the page: console errors, script errors, failed requests."""
    return []


@pytest.fixture
def page(browser, server, problems):
    context = browser.new_context(viewport={"width": 1180, "height": 860}, device_scale_factor=1)
    page = context.new_page()
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("requestfailed", lambda request: problems.append(f"{request.url}: {request.failure}"))
    page.goto(server.url)
    page.wait_for_selector("#facts dd")  # /model answered and the page shows it
    yield page
    context.close()
    assert not problems, problems  # no script errors, no blocked or failed requests (CSP included)


def save_screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("RESNETLAB_ARTIFACTS"):
        folder = Path(os.environ["RESNETLAB_ARTIFACTS"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / name)
    return path


def test_drawing_on_the_canvas_shows_a_prediction(page, predictor, tmp_path):
    assert "resnet20" in page.inner_text("#model-summary")
    assert page.locator("#classes span").count() == len(predictor.classes)
    box = page.locator("#canvas").bounding_box()
    x, y, w, h = box["x"], box["y"], box["width"], box["height"]
    page.mouse.move(x + w * 0.35, y + h * 0.2)
    page.mouse.down()
    for t in np.linspace(0, 1, 12):  # a "7": across the top, then down to the left
        page.mouse.move(x + w * (0.35 + 0.3 * min(2 * t, 1)), y + h * (0.2 if t < 0.5 else 0.2 + 1.2 * (t - 0.5)))
    page.mouse.up()
    # the last stroke's reply is shown (30 s: on a loaded 2-core machine the replies to 12 strokes can queue up)
    expect(page.locator("body")).to_have_attribute("data-state", "idle", timeout=30_000)
    expect(page.locator("#bars li")).to_have_count(5)
    expect(page.locator("#seen")).to_have_attribute("src", re.compile("^data:image/png;base64,"))
    assert page.locator("#seen").evaluate("image => [image.naturalWidth, image.naturalHeight]") == [28, 28]
    # The model saw the whole "7": its lower half (the end of the stroke) is in the input too.
    lower_half = page.locator("#seen").evaluate(
        "image => { const c = document.createElement('canvas'); c.width = 28; c.height = 28;"
        " const g = c.getContext('2d'); g.drawImage(image, 0, 0);"
        " return Array.from(g.getImageData(0, 16, 28, 12).data).filter((v, i) => i % 4 === 0 && v > 128).length; }"
    )
    assert lower_half > 5
    expect(page.locator("#gradcam")).to_have_attribute("src", re.compile("^data:image/png;base64,"))
    assert page.inner_text("#verdict .top-class") in predictor.classes
    assert page.locator("#error").is_hidden()
    screenshot = save_screenshot(page, tmp_path, "serve-drawn.png")
    assert screenshot.stat().st_size > 10_000

    page.click("#undo")  # back to the blank canvas: the prediction goes away
    expect(page.locator("#bars li")).to_have_count(0)


def test_uploading_an_image_shows_the_servers_prediction(page, predictor, tmp_path):
    path = tmp_path / "upload.png"
    Image.fromarray(pattern_images(np.array([7]), 56, 1, seed=3)[0, :, :, 0]).save(path)
    expected = predictor.top_classes(predictor.probabilities(predictor.decode_files([path])), 5)[0]
    page.set_input_files("#file", str(path))
    expect(page.locator("body")).to_have_attribute("data-state", "idle")
    expect(page.locator("#bars li")).to_have_count(5)
    names = page.locator("#bars .name").all_inner_texts()
    values = page.locator("#bars .value").all_inner_texts()
    assert names == [name for name, _ in expected]
    assert values == [f"{p * 100:.1f}%" for _, p in expected]
    save_screenshot(page, tmp_path, "serve-uploaded.png")


def test_a_non_image_upload_shows_the_servers_message(page, problems, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not an image")
    page.set_input_files("#file", str(path))
    expect(page.locator("#error")).to_contain_text("not an image")
    assert problems == ["Failed to load resource: the server responded with a status of 400 (Bad Request)"]
    problems.clear()


@pytest.fixture(scope="module")
def color_server():
    """An untrained RGB model with no recorded accuracy: the page for models one cannot draw for."""
    from resnetlab.models import create_model
    from resnetlab.runtime import select_runtime

    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    card = ModelCard("resnet20", tuple(classes), 3, 32, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26), dataset="cifar10")
    network = create_model("resnet20", 10, 3).eval()
    predictor = TorchPredictor(Checkpoint(card, network.state_dict()), network, select_runtime("cpu", "fp32"))
    with running(create_app(predictor)) as live:
        yield live, predictor


def test_color_model_page_takes_a_dropped_image(browser, color_server, problems, tmp_path):
    server, predictor = color_server
    context = browser.new_context(viewport={"width": 1180, "height": 860})
    page = context.new_page()
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(server.url)
    expect(page.locator("#facts")).to_contain_text("not recorded")
    expect(page.locator("#canvas-hint")).to_have_text("Drop an image")
    box = page.locator("#canvas").bounding_box()
    page.mouse.move(box["x"] + 50, box["y"] + 50)
    page.mouse.down()
    page.mouse.move(box["x"] + 150, box["y"] + 150)
    page.mouse.up()
    page.wait_for_timeout(300)
    assert page.locator("#bars li").count() == 0  # no drawing, no request for an RGB model

    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (60, 90, 3), dtype=np.uint8)).save(path)
    files = page.evaluate_handle(
        "bytes => { const dt = new DataTransfer();"
        " dt.items.add(new File([new Uint8Array(bytes)], 'photo.png', {type: 'image/png'})); return dt; }",
        list(path.read_bytes()),
    )
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": files})
    expect(page.locator("#bars li")).to_have_count(5)
    expected = predictor.top_classes(predictor.probabilities(predictor.decode_files([path])), 5)[0]
    assert page.locator("#bars .name").all_inner_texts() == [name for name, _ in expected]
    assert page.locator("#seen").evaluate("image => [image.naturalWidth, image.naturalHeight]") == [32, 32]
    save_screenshot(page, tmp_path, "serve-color.png")
    context.close()
    assert not problems, problems
