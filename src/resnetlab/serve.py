"""`resnetlab serve`: a local web page and an HTTP API for a trained model.

GET /             the page (src/resnetlab/static/): draw or drop an image, see the top-5 classes
POST /predict     an image, as the request body or as the multipart form field `file`
GET /model        what the model is: name, dataset, classes, input size, test accuracy
GET /health       {"status": "ok"}
GET /openapi.json the API described as OpenAPI (no /docs page: FastAPI's fetches Swagger UI from a CDN)

Uploads stay in memory (never written to disk) and are limited in size, in pixels and in form parts; at most
MAX_DECODES images are decoded at once (a small upload can decode to hundreds of megabytes), JPEGs at reduced scale;
the model is shared by all requests and runs one batch at a time under a lock. With ?gradcam=true, /predict also
returns a Grad-CAM heat map of the last stage for the top class (models with PyTorch weights; not .onnx files).

Against other web sites: a request whose Host header is not an allowed name gets 400 (by default only loopback names,
so a DNS-rebinding page cannot reach a server on 127.0.0.1), and one whose Origin header is another origin gets 403
(a page elsewhere cannot POST to /predict).
"""

from __future__ import annotations

import asyncio
import base64
import io
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import torch
import torch.nn.functional as F
import uvicorn
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from . import __version__
from .answers import UNKNOWN
from .card import ModelCard
from .errors import UserError
from .explain import cam_of
from .imagefiles import DecoderMissing, ImageFileError, ImageTooLarge, decode
from .inference import open_predictor

STATIC_DIR = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 8 * 1024 * 1024  # a phone photo fits; the model sees 28x28 or 32x32 pixels anyway
# Checked in the header: a few kilobytes of PNG can decode to gigabytes. Below imagefiles.MAX_FILE_PIXELS (a user's
# own files): anyone who reaches the server can send these, MAX_DECODES at a time; a 36 MP phone photo still passes.
MAX_UPLOAD_PIXELS = 40_000_000
MAX_DECODES = 2  # images decoded at once: each can take ~4 bytes a pixel, plus its conversion to the model's mode
MAX_FORM_PARTS = 16  # a form needs one; a body of thousands of tiny parts costs seconds of Python to parse
FORM_FIELD = "file"
DEFAULT_PORTS = {"http": 80, "https": 443}
# The parser warns about each malformed body in its own words; the client gets a plain 400, the log needs nothing.
PARSER_LOG = logging.getLogger(__name__ + ".multipart")
PARSER_LOG.setLevel(logging.ERROR)
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'",
    "X-Content-Type-Options": "nosniff",
}


class ServablePredictor(Protocol):
    """What the server needs of a model: an inference.TorchPredictor or OnnxPredictor, or any object with the same
    members. `probabilities` takes a uint8 batch [N, in_channels, image_size, image_size] and returns softmax
    probabilities [N, classes]; epoch and best_test_accuracy are shown when known."""

    card: ModelCard
    epoch: int | None
    best_test_accuracy: float | None

    def probabilities(self, images: torch.Tensor) -> torch.Tensor: ...

    def top_classes(self, probabilities: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]: ...


class ClassProbability(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    class_name: str = Field(alias="class", description="a class name from the checkpoint")
    probability: float = Field(description="softmax probability, 0 to 1")


class Prediction(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    top: list[ClassProbability] = Field(description="the most probable classes, most probable first")
    answer: str | None = Field(
        default=None,
        alias="class",
        description="only with ?min_confidence=P: the top class, or 'unknown' when its probability is below P",
    )
    unknown: bool | None = Field(
        default=None, description="only with ?min_confidence=P: whether the top probability is below P"
    )
    model: str = Field(description="the model's name, e.g. resnet20")
    milliseconds: float = Field(description="server time to decode, prepare and classify the image")
    input_png: str | None = Field(
        default=None,
        description="only with ?input_png=true: the image as the model saw it (converted and resized, "
        "before normalization), as a data:image/png;base64 URL",
    )
    gradcam_png: str | None = Field(
        default=None,
        description="only with ?gradcam=true, for models that support it (see /model): the input under "
        "a Grad-CAM heat map of the last stage for the top class (red: what drove the prediction), 4x larger, as a "
        "data:image/png;base64 URL",
    )


class ModelInfo(BaseModel):
    model: str
    dataset: str
    classes: list[str]
    image_size: int = Field(description="the model's input is image_size x image_size pixels")
    in_channels: int = Field(description="1: grayscale, 3: RGB")
    test_accuracy: float | None = Field(description="the checkpoint's best test accuracy, 0 to 1, if recorded")
    epoch: int | None = None
    gradcam: bool = Field(description="whether /predict?gradcam=true returns a Grad-CAM overlay for this model")
    max_upload_bytes: int
    resnetlab_version: str


class Health(BaseModel):
    status: str


IMAGE_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {FORM_FIELD: {"type": "string", "format": "binary"}},
                "required": [FORM_FIELD],
            },
        },
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}


def load_predictor(path: str | Path, device: str = "auto", precision: str = "auto") -> ServablePredictor:
    """A checkpoint or run folder (inference.TorchPredictor), or a .onnx file from resnetlab export (OnnxPredictor)."""
    return open_predictor(path, device, precision)


def model_info(predictor: ServablePredictor, max_upload_bytes: int) -> ModelInfo:
    card = predictor.card
    return ModelInfo(
        model=card.architecture,
        dataset=card.dataset,
        classes=list(card.classes),
        image_size=card.image_size,
        in_channels=card.in_channels,
        test_accuracy=predictor.best_test_accuracy,
        epoch=predictor.epoch,
        gradcam=supports_gradcam(predictor),
        max_upload_bytes=max_upload_bytes,
        resnetlab_version=__version__,
    )


def decode_image(data: bytes, card: ModelCard) -> torch.Tensor:
    """Upload bytes as the model's uint8 input [C, H, W], decoded as `resnetlab predict` decodes files
    (imagefiles.decode: the pixel count checked from the header first; a JPEG of twice the model's size or more
    decodes at 1/2 to 1/8 scale), or an HTTPException (400 not a whole image, 413 too many pixels). This is the
    step that takes memory: run it on the decoding threads only."""
    if not data:
        raise HTTPException(400, f"the request has no image: send it as the body or as the form field '{FORM_FIELD}'.")
    try:
        return decode(
            io.BytesIO(data), card.in_channels, card.image_size, name="the upload", max_pixels=MAX_UPLOAD_PIXELS
        )
    except ImageTooLarge as e:
        raise HTTPException(413, str(e)) from None
    except DecoderMissing as e:  # the server's to install; the sender can convert the image
        raise HTTPException(415, str(e)) from None
    except ImageFileError:
        raise HTTPException(
            400,
            "the upload is not an image Pillow can read, or not the whole file; send a PNG, "
            "JPEG, GIF, BMP, TIFF, WebP, HEIC or AVIF file.",
        ) from None


def supports_gradcam(predictor: ServablePredictor) -> bool:
    """Grad-CAM needs the PyTorch network (a TorchPredictor's, not an ONNX file's)."""
    return hasattr(getattr(predictor, "network", None), "stages") and hasattr(predictor, "classifier")


def gradcam_overlay(predictor: ServablePredictor, image: torch.Tensor, target: int, scale: int = 4) -> torch.Tensor:
    """The image (uint8 [C, H, W]) under the Grad-CAM map of the last stage for class `target`, as uint8
    [3, H * scale, W * scale]: pixels kept sharp, the map upsampled smoothly and colored with matplotlib's jet."""
    from matplotlib import colormaps

    device = predictor.runtime.device
    maps = cam_of(
        predictor.classifier,
        image[None].to(device),
        predictor.network.stages()[-1],
        torch.tensor([target], device=device),
    )
    size = (image.shape[1] * scale, image.shape[2] * scale)
    heat = F.interpolate(maps[None].float().cpu(), size=size, mode="bilinear", align_corners=False)[0, 0]
    colors = torch.from_numpy(colormaps["jet"](heat.clamp(0, 1).numpy())[..., :3]).float()
    pixels = F.interpolate(image[None].float(), size=size, mode="nearest")[0].expand(3, -1, -1).permute(1, 2, 0)
    blended = 0.55 * pixels / 255 + 0.45 * colors
    return (blended * 255).round().to(torch.uint8).permute(2, 0, 1)


def png_data_url(image: torch.Tensor) -> str:
    """A uint8 [C, H, W] tensor as a data:image/png;base64 URL."""
    array = image.permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes (declared or streamed)."""
    too_large = HTTPException(413, f"the upload is larger than {limit:,} bytes; send a smaller image.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def form_file(body: bytes, content_type: str) -> bytes:
    """The bytes of the form field `file` of a multipart/form-data body, parsed in memory, or an HTTPException
    (400: no boundary, malformed, more than MAX_FORM_PARTS parts, no `file`). Pure Python at a few microseconds a
    part: call it off the event loop. (python-multipart itself refuses more than 8 headers in a part.)"""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise HTTPException(400, "the multipart/form-data body has no boundary; let your HTTP client build the form.")
    fields: dict[str, bytes] = {}
    part: dict[str, Any] = {}
    parts = 0

    def on_part_begin() -> None:
        nonlocal parts
        parts += 1
        if parts > MAX_FORM_PARTS:  # refused at the first part too many, before the rest is parsed
            raise HTTPException(
                400, f"the form has more than {MAX_FORM_PARTS} parts; send only the image, as the field '{FORM_FIELD}'."
            )
        part.update(headers={}, name=b"", value=b"", data=bytearray())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part["name"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part["value"] += data[start:end]

    def on_header_end() -> None:
        part["headers"][part["name"].lower()] = part["value"]
        part.update(name=b"", value=b"")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part["data"] += data[start:end]

    def on_part_end() -> None:
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition", b""))
        fields.setdefault(disposition.get(b"name", b"").decode("utf-8", "replace"), bytes(part["data"]))

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.logger = PARSER_LOG
        parser.write(body)
        parser.finalize()
    except MultipartParseError:  # its text is the parser's state machine ("at index 2"): no help to a client
        raise HTTPException(
            400,
            "the multipart/form-data body is malformed; let your HTTP client build the form "
            f"(e.g. curl -F {FORM_FIELD}=@image.png).",
        ) from None
    if FORM_FIELD not in fields:
        raise HTTPException(400, f"the form has no field '{FORM_FIELD}'; send the image as {FORM_FIELD}=@image.png.")
    return fields[FORM_FIELD]


def host_name(authority: str) -> str | None:
    """The host name in a Host header (or an --allowed-host), lowercase, without port, brackets or final dot:
    'LocalHost.:8000' -> 'localhost', '[::1]:80' -> '::1'; None when it is not host[:port]."""
    try:
        parts = urlsplit("//" + authority)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number from 0 to 65535
    except ValueError:
        return None
    name = (parts.hostname or "").rstrip(".")
    if not name or parts.netloc != authority or "@" in authority:
        return None
    try:
        return str(ipaddress.ip_address(name))  # one spelling of an address: [0:0::1] is ::1
    except ValueError:
        return name


def allowed_host_names(allowed_hosts: Iterable[str] | None) -> frozenset[str] | None:
    """create_app's allowed_hosts as host names (host_name()), None for any; a UserError for an entry that is
    not a host name, an address or host:port."""
    if allowed_hosts is None:
        return None
    names = set()
    for entry in allowed_hosts:
        if entry == "*":
            return None
        try:
            name = str(ipaddress.ip_address(entry))  # an IPv6 address given without brackets
        except ValueError:
            name = host_name(entry)
        if name is None:
            raise UserError(
                f"--allowed-host {entry!r} is not a host name; give a name or address such as "
                "resnet.lan or 192.168.1.5, without http:// or a path."
            )
        names.add(name)
    return frozenset(names)


def same_origin(origin: str, scheme: str, host: str) -> bool:
    """Whether an Origin header (scheme://host[:port]) is the origin the request was sent to: `scheme` and the Host
    header, default ports filled in. "null" (sandboxed pages, file: URLs) is no one's origin."""
    try:
        theirs, ours = urlsplit(origin), urlsplit(f"{scheme}://{host}")
        return theirs.hostname is not None and (
            theirs.scheme,
            theirs.hostname,
            theirs.port or DEFAULT_PORTS.get(theirs.scheme),
        ) == (ours.scheme, ours.hostname, ours.port or DEFAULT_PORTS.get(ours.scheme))
    except ValueError:
        return False


class HostAndOriginCheck:
    """ASGI middleware: 400 for a Host header that names no allowed host, 403 for an Origin header of another origin.

    DNS rebinding points a web site's name at 127.0.0.1, so that its pages reach a local server, with that name
    as Host: loopback names alone keep them out. And browsers send Origin with every POST, so a page elsewhere
    that posts an image to /predict (a "simple" request, sent without a CORS preflight) is recognized by it.
    `allowed_hosts`: host names from allowed_host_names(), besides the loopback ones (localhost, 127.x.x.x, ::1);
    None: any Host.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: frozenset[str] | None) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                await JSONResponse({"detail": refusal[1]}, refusal[0])(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """(status, sentence) for a request to refuse, None for one to answer."""
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if self.allowed_hosts is not None:
            name = host_name(host)
            if name is None or not (is_loopback(name) or name in self.allowed_hosts):
                shown = repr(name[:100]) if name else "missing or malformed"
                return 400, (
                    f"this server does not answer to the host name in the Host header ({shown}); open it "
                    "as localhost or 127.0.0.1, or start it with --allowed-host NAME."
                )
        origin = headers.get("origin")
        if origin is not None and not same_origin(origin, scope.get("scheme", "http"), host):
            return 403, (
                "requests from pages of other sites are refused: the Origin header is not this server's own origin."
            )
        return None


def validation_sentence(request: Request, error: RequestValidationError) -> str:
    """FastAPI's list of validation errors (of the query: the body is read by hand) as one sentence about the first."""
    first = (error.errors() or [{}])[0]
    name = str(first.get("loc", ("", "?"))[-1])
    kind, limits = first.get("type", ""), first.get("ctx") or {}
    rules = {
        "int_parsing": "a whole number",
        "bool_parsing": "true or false",
        "float_parsing": "a number",
        "greater_than_equal": "at least {ge:g}",
        "less_than": "below {lt:g}",
    }
    message = str(first.get("msg", "not valid"))
    rule = rules[kind].format(**limits) if kind in rules else message.removeprefix("Input should be ").lower()
    given = f"={str(first['input'])[:40]}" if "input" in first else ""
    return f"?{name}{given} is refused: {name} must be {rule}; see /openapi.json for what {request.url.path} takes."


async def _refuse_invalid(request: Request, error: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": validation_sentence(request, error)}, 400)


def _app_with_pages(info: ModelInfo, names) -> FastAPI:
    """The app with its page, its static files, /health and /model, behind the Host and Origin check."""
    app = FastAPI(
        title="resnetlab serve",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        description=f"{info.model} trained on {info.dataset}: send an image, get its most probable classes.",
    )
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(HostAndOriginCheck, allowed_hosts=names)
    app.add_exception_handler(RequestValidationError, _refuse_invalid)  # one sentence, not pydantic's list of dicts

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    @app.get("/health")
    async def health() -> Health:
        return Health(status="ok")

    @app.get("/model")
    async def model() -> ModelInfo:
        return info

    return app


def answer(top: tuple[str, float], min_confidence: float | None) -> dict[str, Any]:
    """Prediction's class and unknown fields for ?min_confidence (none without it): the top class, or "unknown"
    where its calibrated probability is below min_confidence."""
    if min_confidence is None:
        return {}
    unknown = top[1] < min_confidence
    return {"answer": UNKNOWN if unknown else top[0], "unknown": unknown}


def create_app(
    predictor_or_path: ServablePredictor | str | Path,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    allowed_hosts: Iterable[str] | None = (),
) -> FastAPI:
    """The web app for one model: a Predictor-like object, or the path of a checkpoint to load.

    `allowed_hosts`: the names the Host header may give besides loopback ones (localhost, 127.x.x.x, [::1]), with or
    without a port; "*" or None: any name (for a server on a network address, reached by names it cannot know).
    """
    names = allowed_host_names(allowed_hosts)
    if isinstance(predictor_or_path, (str, Path)):
        predictor = load_predictor(predictor_or_path)
    else:
        predictor = predictor_or_path
    info = model_info(predictor, max_upload_bytes)
    lock = threading.Lock()  # one forward pass at a time: the model and its runtime are shared
    # Uploads are decoded by MAX_DECODES threads of their own, so at most that many full-size images are in memory
    # (20 uploads of a 119 KB PNG of 6000x6000 pixels decoded at once took 5 GB). Threads, not a semaphore: glibc
    # gives each thread that allocates a malloc arena of its own and keeps what is freed there, so decoding in any
    # of the 40 request threads in turn still grew the server to 3.4 GB for 50 such uploads. Requests wait for
    # their turn on the event loop, holding no thread.
    decoders = ThreadPoolExecutor(MAX_DECODES, thread_name_prefix="resnetlab-decode")

    def classify(
        image: torch.Tensor, start: float, top: int, with_input: bool, with_gradcam: bool, min_confidence: float | None
    ) -> Prediction:
        overlay = None
        with lock:
            probabilities = predictor.probabilities(image[None])
            if with_gradcam and info.gradcam:
                overlay = gradcam_overlay(predictor, image, int(probabilities[0].argmax()))
        best = predictor.top_classes(probabilities, top)[0]
        return Prediction(
            top=[ClassProbability(class_name=name, probability=p) for name, p in best],
            **answer(best[0], min_confidence),
            model=info.model,
            milliseconds=round((time.perf_counter() - start) * 1000, 3),
            input_png=png_data_url(image) if with_input else None,
            gradcam_png=png_data_url(overlay) if overlay is not None else None,
        )

    app = _app_with_pages(info, names)

    @app.post(
        "/predict",
        response_model=Prediction,
        response_model_exclude_none=True,
        openapi_extra={"requestBody": IMAGE_BODY},
        responses={
            400: {"description": "not an image, a malformed form, a bad query parameter, or a Host header not allowed"},
            403: {"description": "sent by a page of another origin"},
            413: {"description": "upload or image too large"},
        },
    )
    async def predict(
        request: Request,
        top: int = Query(5, ge=1, description="how many classes to return (at most the number of classes)"),
        input_png: bool = Query(False, description="also return the image as the model saw it, as a PNG data URL"),
        gradcam: bool = Query(False, description="also return a Grad-CAM overlay for the top class (see /model)"),
        min_confidence: float | None = Query(
            None, ge=0, lt=1, allow_inf_nan=False, description="answer 'unknown' below this top probability (0 to 1)"
        ),
    ) -> Prediction:
        """Classify one image, sent as the request body (any content type) or as the multipart form field `file`."""
        body = await read_body(request, max_upload_bytes)
        if request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            # off the event loop: 8 MB of tiny parts held every other request for 1.7 s
            body = await run_in_threadpool(form_file, body, request.headers["content-type"])
        start = time.perf_counter()
        # decode_image runs on `decoders`, where the full-size image lives
        image = await asyncio.wrap_future(decoders.submit(decode_image, body, predictor.card))
        top = min(top, len(info.classes))
        return await run_in_threadpool(classify, image, start, top, input_png, gradcam, min_confidence)

    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or a UserError that says why not."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto given explicitly: asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and without
        # it Nagle's algorithm holds each response's body until the client's delayed ACK (~40 ms per request).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except (OSError, OverflowError) as e:
        reason = getattr(e, "strerror", None) or e
        raise UserError(f"cannot listen on {host}:{port} ({reason}); choose another --port or --host.") from None
    sock.listen(128)
    return sock


def answered_hosts(bind_host: str, allowed_hosts: Iterable[str] = ()) -> list[str] | None:
    """create_app's allowed_hosts for a server on `bind_host` given --allowed-host names: on a loopback address,
    only loopback names and those; on a network address, any name (None) unless some are given."""
    names = list(allowed_hosts)
    return names if names or is_loopback(bind_host) else None


def serve(
    checkpoint: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "auto",
    precision: str = "auto",
    allowed_hosts: Iterable[str] = (),
) -> None:
    """Load a checkpoint and serve the page and the API until Ctrl+C."""
    names = answered_hosts(host, allowed_hosts)
    allowed_host_names(names)  # a mistake in --allowed-host is told before the model loads
    predictor = load_predictor(checkpoint, device, precision)
    app = create_app(predictor, allowed_hosts=names)
    sock = bind(host, port)
    port = sock.getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    card = predictor.card
    print(
        f"resnetlab: serving {card.architecture} ({card.dataset}) at http://{url_host}:{port}/ ; Ctrl+C stops.",
        flush=True,
    )
    if not is_loopback(host):
        print(
            f"resnetlab: note: {host} is not a loopback address, so anyone who can reach this machine can use the "
            "model.",
            flush=True,
        )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down on Ctrl+C, then raises it again
        pass
    print("resnetlab: server stopped.", flush=True)
