"""`resnetlab serve` against a real uvicorn server on loopback: predictions, bad inputs, concurrency, the CLI."""

from __future__ import annotations

import base64
import http.client
import io
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from fakedata import pattern_images
from liveserver import LiveServer, free_port, running, serving, wait_for_health
from PIL import Image

from resnetlab.cli import main
from resnetlab.errors import UserError
from resnetlab.inference import TorchPredictor
from resnetlab.serve import MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS, create_app

UPLOAD_LIMIT = 64 * 1024  # small, so the 413 tests send little
PEAK_MEMORY_LIMIT_MB = 1500  # for 50 concurrent 6000x6000 PNGs; it was 10.8 GB before they were decoded two at a time


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def gradient_image(width: int, height: int, image_format: str) -> bytes:
    """An RGB image of smooth gradients, which compresses to little: 6000x6000 pixels are about 120 KB as PNG."""
    ramp = Image.linear_gradient("L").resize((width, height))
    flat = Image.new("L", (width, height), 128)
    buffer = io.BytesIO()
    Image.merge("RGB", (ramp, ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT), flat)).save(buffer, format=image_format)
    return buffer.getvalue()


def peak_memory_mb(pid: int) -> float:
    """The peak resident set of a process (VmHWM in /proc/PID/status), in megabytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise KeyError("VmHWM")


@pytest.fixture(scope="module")
def predictor(trained_run) -> TorchPredictor:
    return TorchPredictor.from_checkpoint(trained_run / "best.pt")


@pytest.fixture(scope="module")
def server(predictor) -> LiveServer:
    with running(create_app(predictor, max_upload_bytes=UPLOAD_LIMIT)) as live:
        yield live


@pytest.fixture(scope="module")
def served(trained_run) -> tuple[LiveServer, subprocess.Popen]:
    """`resnetlab serve` in a process of its own, with the default limits, so its memory can be measured."""
    if not Path("/proc/self/status").exists():
        pytest.skip("reads the server's memory in /proc (Linux)")
    with serving(trained_run, timeout=120) as live_and_process:
        yield live_and_process


@pytest.fixture(scope="module")
def known_images(tmp_path_factory) -> list:
    """One image file per class: the fake data's pattern for that class, at 3x the model's size."""
    folder = tmp_path_factory.mktemp("images")
    images = pattern_images(np.arange(10), 84, 1, seed=7)[..., 0]
    paths = []
    for label, image in enumerate(images):
        paths.append(folder / f"class{label}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


def expected_top(predictor: TorchPredictor, path, k: int = 5) -> list[tuple[str, float]]:
    return predictor.top_classes(predictor.probabilities(predictor.decode_files([path])), k)[0]


def assert_same_top(reply_top: list[dict], expected: list[tuple[str, float]]) -> None:
    assert [entry["class"] for entry in reply_top] == [name for name, _ in expected]
    assert [entry["probability"] for entry in reply_top] == pytest.approx([p for _, p in expected], abs=1e-5)


def test_health_model_and_openapi(server, predictor):
    assert server.get("/health").json() == {"status": "ok"}
    info = server.get("/model").json()
    assert info["model"] == "resnet20" and info["dataset"] == "fashion-mnist"
    assert info["classes"] == predictor.classes
    assert (info["image_size"], info["in_channels"]) == (28, 1)
    assert info["test_accuracy"] == pytest.approx(predictor.best_test_accuracy)
    assert info["max_upload_bytes"] == UPLOAD_LIMIT
    spec = server.get("/openapi.json").json()
    assert {"/predict", "/model", "/health"} <= set(spec["paths"])
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "image/*" in body
    assert server.get("/docs").status == 404  # FastAPI's docs page would load Swagger UI from a CDN


def test_keep_alive_requests_are_not_held_by_nagles_algorithm(server):
    """Without TCP_NODELAY on the server's connections each reply waits ~40 ms for the client's delayed ACK."""
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    times = []
    for _ in range(15):
        start = time.perf_counter()
        connection.request("GET", "/health")
        connection.getresponse().read()
        times.append(time.perf_counter() - start)
    connection.close()
    assert statistics.median(times) < 0.03, times


def test_page_and_its_files_are_served_without_outside_urls(server):
    page = server.get("/")
    assert page.status == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("static/app.js", "static/style.css"):
        reply = server.get(f"/{name}")
        assert reply.status == 200, name
        assert b"http://" not in reply.body and b"https://" not in reply.body, name
    assert b"https://" not in page.body and b"http://" not in page.body


def test_a_known_image_gets_the_same_answer_as_predict(server, predictor, known_images, trained_run, capsys, tmp_path):
    path = known_images[3]
    expected = expected_top(predictor, path)
    as_body = server.post_image(path.read_bytes())
    as_form = server.post_form({"file": path.read_bytes()})
    for reply in (as_body, as_form):
        assert reply.status == 200, reply.body
        result = reply.json()
        assert_same_top(result["top"], expected)
        assert result["model"] == "resnet20" and result["milliseconds"] > 0 and "input_png" not in result
    args = ["predict", str(trained_run / "best.pt"), str(path), "--top", "5", "--save", str(tmp_path / "p.png")]
    assert main(args) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line == f"{path}: " + ", ".join(f"{e['class']} {e['probability']:.1%}" for e in as_body.json()["top"])


def test_top_and_input_png(server, predictor, known_images):
    path = known_images[5]
    reply = server.post_image(path.read_bytes(), "/predict?top=2&input_png=true", "application/octet-stream")
    result = reply.json()
    assert len(result["top"]) == 2
    prefix = "data:image/png;base64,"
    assert result["input_png"].startswith(prefix)
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["input_png"][len(prefix) :]))))
    assert seen.shape == (28, 28)
    assert torch.equal(torch.from_numpy(seen.copy())[None], predictor.decode_files([path])[0])
    assert len(server.post_image(path.read_bytes(), "/predict?top=99").json()["top"]) == 10


@pytest.mark.parametrize(
    "query,sentence",
    [
        ("top=0", "?top=0 is refused: top must be at least 1; see /openapi.json for what /predict takes."),
        ("top=abc", "?top=abc is refused: top must be a whole number; see /openapi.json for what /predict takes."),
        ("gradcam=maybe", "?gradcam=maybe is refused: gradcam must be true or false; see /openapi.json for what"),
        ("min_confidence=1", "?min_confidence=1 is refused: min_confidence must be below 1; see /openapi.json"),
        ("min_confidence=-0.5", "?min_confidence=-0.5 is refused: min_confidence must be at least 0; see"),
        ("min_confidence=abc", "?min_confidence=abc is refused: min_confidence must be a number; see /openapi.json"),
        ("min_confidence=nan", "?min_confidence=nan is refused: min_confidence must be a finite number; see"),
    ],
)
def test_a_bad_query_parameter_gets_400_and_one_sentence(server, known_images, query, sentence):
    reply = server.post_image(known_images[0].read_bytes(), f"/predict?{query}")
    assert reply.status == 400
    detail = reply.json()["detail"]
    assert isinstance(detail, str) and detail.startswith(sentence), detail


def test_min_confidence_answers_unknown_below_it(server, predictor, known_images):
    path = known_images[2]
    top = expected_top(predictor, path)[0]  # (class, calibrated probability)
    plain = server.post_image(path.read_bytes(), "/predict").json()
    assert "unknown" not in plain and "class" not in plain  # only asked for
    above = server.post_image(path.read_bytes(), f"/predict?min_confidence={top[1] * 0.99}").json()
    assert above["unknown"] is False and above["class"] == top[0] == above["top"][0]["class"]
    below = server.post_image(path.read_bytes(), f"/predict?min_confidence={min(top[1] * 1.01, 0.999999)}").json()
    assert below["unknown"] is True and below["class"] == "unknown" and below["top"][0]["class"] == top[0]
    assert below["top"][0]["probability"] == pytest.approx(top[1], abs=1e-5)


def test_gradcam_overlay_for_the_top_class(server, predictor, known_images):
    assert server.get("/model").json()["gradcam"] is True
    path = known_images[4]
    result = server.post_image(path.read_bytes(), "/predict?gradcam=true").json()
    assert_same_top(result["top"], expected_top(predictor, path))  # the backward pass changes nothing
    prefix = "data:image/png;base64,"
    overlay = Image.open(io.BytesIO(base64.b64decode(result["gradcam_png"][len(prefix) :])))
    assert (overlay.mode, overlay.size) == ("RGB", (112, 112))
    assert len(np.unique(np.asarray(overlay).reshape(-1, 3), axis=0)) > 20  # a heat map, not a flat color


def test_color_and_odd_images_are_converted_like_predict(server, predictor, tmp_path):
    rgba = np.random.default_rng(0).integers(0, 255, (50, 70, 4), dtype=np.uint8)
    for name, image in [
        ("photo.jpg", Image.fromarray(rgba[..., :3])),
        ("alpha.png", Image.fromarray(rgba)),
        ("palette.gif", Image.fromarray(rgba[..., :3]).convert("P")),
    ]:
        path = tmp_path / name
        image.save(path)
        reply = server.post_image(path.read_bytes(), content_type="image/whatever")
        assert reply.status == 200, (name, reply.body)
        assert_same_top(reply.json()["top"], expected_top(predictor, path))


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"", "no image"),
        (b"this is not an image", "not an image"),
        (b"%PDF-1.4 a pdf file", "not an image"),
    ],
)
def test_non_images_get_400_with_a_clear_message(server, body, fragment):
    reply = server.post_image(body, content_type="application/octet-stream")
    assert reply.status == 400
    assert fragment in reply.json()["detail"]


def test_truncated_image_gets_400(server, known_images):
    data = known_images[0].read_bytes()
    reply = server.post_image(data[: len(data) // 2])
    assert reply.status == 400
    assert "truncated" in reply.json()["detail"] or "not an image" in reply.json()["detail"]


def test_form_without_the_file_field_gets_400(server, known_images):
    reply = server.post_form({"image": known_images[0].read_bytes()})
    assert reply.status == 400
    assert "field 'file'" in reply.json()["detail"]
    broken = server.request("POST", "/predict", b"--x\r\nnonsense", {"Content-Type": "multipart/form-data"})
    assert broken.status == 400 and "boundary" in broken.json()["detail"]


def test_uploads_over_the_limit_get_413(server):
    big = os.urandom(UPLOAD_LIMIT + 1)
    declared = server.post_image(big)
    assert declared.status == 413
    assert f"{UPLOAD_LIMIT:,} bytes" in declared.json()["detail"]
    streamed = server.request("POST", "/predict", iter([big[:40_000], big[40_000:]]), chunked=True)
    assert streamed.status == 413
    assert server.post_form({"file": big}).status == 413


def test_an_image_of_too_many_pixels_gets_413(server):
    side = int(MAX_UPLOAD_PIXELS**0.5) + 100
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG")  # a few kilobytes
    assert len(buffer.getvalue()) < UPLOAD_LIMIT
    reply = server.post_image(buffer.getvalue())
    assert reply.status == 413
    assert "pixels" in reply.json()["detail"]


def test_50_concurrent_requests_are_all_answered_correctly(server, predictor, known_images):
    expected = {path: expected_top(predictor, path) for path in known_images}
    jobs = [known_images[i % len(known_images)] for i in range(50)]

    def ask(i: int):
        path = jobs[i]
        url = "/predict?gradcam=true" if i % 3 == 0 else "/predict"  # Grad-CAM hooks share the model too
        if i % 2:
            return path, server.post_form({"file": path.read_bytes()}, url)
        return path, server.post_image(path.read_bytes(), url)

    with ThreadPoolExecutor(max_workers=25) as pool:
        replies = list(pool.map(ask, range(len(jobs))))
    assert len(replies) == 50
    for path, reply in replies:
        assert reply.status == 200, reply.body
        assert_same_top(reply.json()["top"], expected[path])


def test_resnetlab_serve_command_runs_a_server(trained_run, known_images):
    port = free_port()
    command = [sys.executable, "-m", "resnetlab", "serve", str(trained_run), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        live = LiveServer("127.0.0.1", port)
        wait_for_health(live, 60)
        reply = live.post_image(known_images[1].read_bytes())
        assert reply.status == 200 and reply.json()["model"] == "resnet20"
        assert live.request("GET", "/health", headers={"Host": f"rebound.example:{port}"}).status == 400
    finally:
        process.terminate()
        output = process.communicate(timeout=20)[0]
    assert f"at http://127.0.0.1:{port}/" in output


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--port", "70000"], "cannot listen on 127.0.0.1:70000"),
        (["--host", "203.0.113.9"], "cannot listen on 203.0.113.9"),  # an address this machine does not have
    ],
)
def test_serve_cannot_listen_is_a_user_error(trained_run, capsys, extra, fragment):
    assert main(["serve", str(trained_run), *extra]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "--port" in err and err.count("\n") == 1


def test_serve_refuses_bad_and_missing_models_in_one_sentence(tmp_path, capsys):
    (tmp_path / "model.onnx").write_bytes(b"not onnx")
    assert main(["serve", str(tmp_path / "model.onnx")]) == 2
    err = capsys.readouterr().err
    assert "model.onnx" in err and err.count("\n") == 1
    assert main(["serve", str(tmp_path / "missing.pt")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_serve_without_the_extra_says_how_to_install_it(monkeypatch, capsys, trained_run):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi now raises ImportError
    monkeypatch.delitem(sys.modules, "resnetlab.serve")
    assert main(["serve", str(trained_run)]) == 2
    err = capsys.readouterr().err
    assert "pip install -e '.[serve]'" in err and err.count("\n") == 1


def test_an_exported_onnx_model_is_served_like_its_checkpoint(trained_run, predictor, known_images, tmp_path):
    pytest.importorskip("onnxruntime")
    onnx_path = tmp_path / "model.onnx"
    assert main(["export", str(trained_run), "-o", str(onnx_path), "--check-images", "8"]) == 0
    with running(create_app(onnx_path)) as live:
        info = live.get("/model").json()
        assert (info["model"], info["classes"], info["gradcam"]) == ("resnet20", predictor.classes, False)
        reply = live.post_form({"file": known_images[2].read_bytes()}, "/predict?gradcam=true")
    assert reply.status == 200, reply.body
    assert "gradcam_png" not in reply.json()  # an ONNX file has no gradients to follow
    fp32 = TorchPredictor.from_checkpoint(trained_run / "best.pt", "cpu", "fp32")  # as the ONNX model computes
    assert_same_top(reply.json()["top"], expected_top(fp32, known_images[2]))


def test_50_concurrent_6000x6000_pngs_keep_the_server_small_and_health_answering(served):
    """Each PNG is 120 KB but 108 MB decoded: the server decodes two at a time, and /health does not wait for them."""
    live, process = served
    png = gradient_image(6000, 6000, "PNG")
    assert len(png) < 200_000
    health: list[tuple[int, float]] = []
    burst_over = threading.Event()

    def watch_health() -> None:
        while not burst_over.is_set():
            start = time.perf_counter()
            status = live.get("/health").status
            health.append((status, time.perf_counter() - start))
            burst_over.wait(0.1)

    watcher = threading.Thread(target=watch_health)
    watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=50) as pool:
            replies = list(pool.map(lambda _: live.post_image(png), range(50)))
    finally:
        burst_over.set()
        watcher.join()
    peak = peak_memory_mb(process.pid)
    assert peak < PEAK_MEMORY_LIMIT_MB, f"the server's peak memory was {peak:.0f} MB"
    assert [reply.status for reply in replies] == [200] * 50, [reply.body[:200] for reply in replies]
    assert len(health) >= 5 and {status for status, _ in health} == {200}
    assert max(seconds for _, seconds in health) < 1.0, health


def test_a_36_megapixel_phone_photo_gets_200(served):
    jpeg = gradient_image(7360, 4912, "JPEG")  # a 36 MP camera's size
    assert len(jpeg) < MAX_UPLOAD_BYTES
    reply = served[0].post_image(jpeg, content_type="image/jpeg")
    assert reply.status == 200, reply.body
    assert len(reply.json()["top"]) == 5


def test_a_large_jpeg_is_decoded_at_reduced_size_and_a_png_whole(monkeypatch):
    """The decoding predict and serve share: a JPEG decodes at 1/2 to 1/8 scale, as small as keeps twice the model's
    size; other formats decode whole."""
    import resnetlab.imagefiles
    from resnetlab.card import ModelCard
    from resnetlab.serve import decode_image

    decoded = []
    real = resnetlab.imagefiles.ImageOps.exif_transpose  # called on the image just decoded
    monkeypatch.setattr(
        resnetlab.imagefiles.ImageOps,
        "exif_transpose",
        lambda image, **options: (decoded.append(image.size), real(image, **options))[1],
    )
    cards = {size: ModelCard("resnet20", ("a", "b"), 3, size, (0.5,) * 3, (0.25,) * 3) for size in (28, 500)}
    jpeg = gradient_image(7360, 4912, "JPEG")
    for size, image, expected in [
        (28, jpeg, (920, 614)),  # 1/8 scale, still at least 56x56
        (500, jpeg, (1840, 1228)),  # 1/4: 1/8 would be under 1000 pixels high
        (28, gradient_image(200, 100, "JPEG"), (200, 100)),  # 1/2 would be 50 high
        (28, gradient_image(50, 40, "JPEG"), (50, 40)),  # under twice the size: whole
        (28, gradient_image(600, 400, "PNG"), (600, 400)),
    ]:
        assert decode_image(image, cards[size]).shape == (3, size, size)
        assert decoded.pop() == expected


def many_fields_form(fields: int) -> tuple[bytes, str]:
    """A multipart/form-data body of `fields` one-byte fields."""
    part = b'--b0undary\r\nContent-Disposition: form-data; name="f"\r\n\r\nx\r\n'
    return part * fields + b"--b0undary--\r\n", "multipart/form-data; boundary=b0undary"


def test_a_form_of_more_than_16_parts_gets_400(server, known_images):
    image = known_images[0].read_bytes()
    fields = {f"extra{i}": b"x" for i in range(15)}
    assert server.post_form({**fields, "file": image}).status == 200  # 16 parts
    reply = server.post_form({**fields, "extra15": b"x", "file": image})
    assert reply.status == 400
    assert reply.json()["detail"] == "the form has more than 16 parts; send only the image, as the field 'file'."


def test_health_answers_while_a_body_of_many_fields_is_parsed(served):
    """8 MB of tiny form fields took 1.7 s of Python to parse, on the event loop: /health waited as long."""
    live = served[0]
    body, content_type = many_fields_form(120_000)
    assert len(body) < MAX_UPLOAD_BYTES
    replies = []
    stop = threading.Event()

    def send_forms() -> None:
        while not stop.is_set():
            replies.append(live.request("POST", "/predict", body, {"Content-Type": content_type}))

    senders = [threading.Thread(target=send_forms) for _ in range(2)]
    for sender in senders:
        sender.start()
    latencies = []
    try:
        time.sleep(0.3)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            start = time.perf_counter()
            assert live.get("/health").status == 200
            latencies.append(time.perf_counter() - start)
            time.sleep(0.05)
    finally:
        stop.set()
        for sender in senders:
            sender.join()
    assert max(latencies) < 0.5, latencies
    assert replies and {reply.status for reply in replies} == {400}
    assert "more than 16 parts" in replies[0].json()["detail"]


def test_a_malformed_form_gets_a_plain_sentence_and_no_parser_log(server, caplog):
    caplog.set_level(logging.DEBUG)
    plain = (
        "the multipart/form-data body is malformed; let your HTTP client build the form (e.g. curl -F file=@image.png)."
    )
    for body in [b"--x\r\nbad header line\r\n\r\n", b"--xyz", b"garbage\r\n--x\r\n\r\n"]:
        reply = server.request("POST", "/predict", body, {"Content-Type": "multipart/form-data; boundary=x"})
        assert reply.status == 400, body
        assert reply.json()["detail"] == plain  # not the parser's "Found invalid character 32 in header at 8"
    assert [record.getMessage() for record in caplog.records if "multipart" in record.name] == []


def test_only_loopback_host_names_are_answered_by_default(server, known_images):
    """A DNS-rebinding page reaches 127.0.0.1 under its own site's name: that Host gets 400."""
    for host in [
        "localhost",
        f"localhost:{server.port}",
        "LocalHost.",
        "127.0.0.1",
        "127.1.2.3:99",
        "[::1]",
        "[::1]:8000",
        "[0:0::1]",
    ]:
        assert server.request("GET", "/health", headers={"Host": host}).status == 200, host
    for host in [
        "rebound.example",
        f"rebound.example:{server.port}",
        "127.0.0.1.rebound.example",
        "localhost.rebound.example",
        "10.0.0.1",
        "[::2]",
        "",
        "user@localhost",
        "localhost:port",
    ]:
        reply = server.request("GET", "/health", headers={"Host": host})
        assert reply.status == 400, host
        detail = reply.json()["detail"]
        assert "Host header" in detail and "--allowed-host" in detail and detail.count(". ") == 0, detail
    image = known_images[0].read_bytes()
    reply = server.request("POST", "/predict", image, {"Host": "rebound.example", "Content-Type": "image/png"})
    assert reply.status == 400


def test_allowed_hosts_add_names_and_none_answers_any(predictor):
    with running(create_app(predictor, allowed_hosts=["resnet.lan", "192.168.1.5:8000", "fe80::1"])) as live:
        for host, status in [
            ("resnet.lan", 200),
            ("RESNET.LAN:8000", 200),
            ("192.168.1.5", 200),
            ("[fe80::1]:80", 200),
            ("localhost", 200),
            ("rebound.example", 400),
        ]:
            assert live.request("GET", "/health", headers={"Host": host}).status == status, host
    for anyone in [None, ["*"]]:
        with running(create_app(predictor, allowed_hosts=anyone)) as live:
            assert live.request("GET", "/health", headers={"Host": "rebound.example"}).status == 200
    with pytest.raises(UserError, match="'http://resnet.lan/' is not a host name"):
        create_app(predictor, allowed_hosts=["http://resnet.lan/"])


def test_requests_from_pages_of_other_origins_get_403(server, known_images):
    """A page on any site may POST text/plain to 127.0.0.1 without asking first; its Origin header tells it apart."""
    own = f"http://127.0.0.1:{server.port}"
    port = server.port
    for origin in [
        "http://evil.example",
        "null",
        f"http://127.0.0.1:{port + 1}",
        f"https://127.0.0.1:{port}",
        f"http://localhost:{port}",
        "http://127.0.0.1",
    ]:
        reply = server.request("POST", "/predict", b"hello", {"Content-Type": "text/plain", "Origin": origin})
        assert reply.status == 403, origin
        assert reply.json()["detail"] == (
            "requests from pages of other sites are refused: the Origin header is not this server's own origin."
        )
    assert server.request("GET", "/model", headers={"Origin": "http://evil.example"}).status == 403
    image = known_images[0].read_bytes()
    assert server.request("POST", "/predict", image, {"Content-Type": "image/png", "Origin": own}).status == 200
    as_localhost = {
        "Content-Type": "image/png",
        "Origin": f"http://localhost:{server.port}",
        "Host": f"localhost:{server.port}",
    }
    assert server.request("POST", "/predict", image, as_localhost).status == 200


def test_serve_answers_loopback_names_unless_told_others(trained_run, monkeypatch, capsys):
    from resnetlab.serve import answered_hosts

    assert answered_hosts("127.0.0.1") == answered_hosts("::1") == answered_hosts("localhost") == []
    assert answered_hosts("0.0.0.0") is None and answered_hosts("192.168.1.5") is None  # reached by any name
    assert answered_hosts("0.0.0.0", ["resnet.lan"]) == answered_hosts("127.0.0.1", ["resnet.lan"]) == ["resnet.lan"]
    assert main(["serve", str(trained_run), "--allowed-host", "http://resnet.lan/"]) == 2
    err = capsys.readouterr().err
    assert "--allowed-host 'http://resnet.lan/' is not a host name" in err and err.count("\n") == 1
    calls = []
    monkeypatch.setattr("resnetlab.serve.serve", lambda *args: calls.append(args))
    assert main(["serve", str(trained_run), "--allowed-host", "a.lan", "--allowed-host", "b.lan"]) == 0
    assert main(["serve", str(trained_run)]) == 0
    assert [args[-1] for args in calls] == [["a.lan", "b.lan"], []]
