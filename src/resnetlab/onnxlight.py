"""`resnetlab predict MODEL.onnx IMAGE...` without PyTorch: answers in a blink.

Importing torch takes seconds (3.3 s of predict's 3.7 s, benchmarks in the README); an exported ONNX model holds
everything predict needs: the graph takes uint8 pixels and gives calibrated probabilities (export.py), and its
metadata holds the classes and the input size. So this path imports onnxruntime, Pillow and numpy only: the
photos are decoded as for training (imagefiles.decode_square), resized by Pillow's antialiased bilinear filter
(torchvision's resize for training matches it to within a level or two of 255: tests/test_onnxlight.py), run a
chunk at a time, and the picture is drawn with Pillow rather than matplotlib. The answers, in text and JSON, are
those of the PyTorch path (answers.py). predict --csv and --sort-into (sorting.py) run an .onnx file through
OnnxModel.predict_files as well, so they import no PyTorch either.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .answers import CHUNK_SIZE, PICTURE_IMAGES, UNKNOWN, Top, check_min_confidence, file_answer, is_unknown
from .card import CardChecker
from .config import IMAGE_SIZE_RANGE
from .errors import UserError
from .imagefiles import as_array, decode_square, expand_image_paths

EXPORT_MARKER = "resnetlab-export"  # export_metadata's "format": what marks a file as written by resnetlab export
ONNX_SUFFIX = ".onnx"
# ONNX models written by resnetlab export: their one input and two outputs.
ONNX_INPUT = "images"
ONNX_OUTPUTS = ("logits", "probabilities")
# Metadata fields stored JSON-encoded in ONNX metadata_props; the other fields are plain strings.
ONNX_JSON_FIELDS = frozenset(
    {
        "model",
        "classes",
        "num_classes",
        "in_channels",
        "image_size",
        "mean",
        "std",
        "test_time_flip",
        "test_time_translate",
        "version",
        "epoch",
        "best_test_accuracy",
        "holdout",
        "temperature",
    }
)
TILE = 112  # pixels of each image in the picture
TITLE_COLOR, UNKNOWN_COLOR, CAPTION_COLOR = "#000000", "#666666", "#444444"

Report = Callable[[dict[str, Any] | None, str], None]


def read_onnx_metadata(metadata: dict[str, str]) -> dict[str, Any]:
    """An ONNX model's metadata_props (as onnxruntime's custom_metadata_map gives them) as resnetlab export
    wrote them."""
    try:
        return {k: json.loads(v) if k in ONNX_JSON_FIELDS else v for k, v in metadata.items()}
    except ValueError:
        raise UserError("the ONNX model's metadata is damaged; export the model again.") from None


def onnx_session(path: Path, device: str = "auto"):
    """An onnxruntime session of an ONNX file: on the CUDA GPU where asked (or auto) and available, else the CPU."""
    import onnxruntime

    providers = ["CPUExecutionProvider"]
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return onnxruntime.InferenceSession(str(path), providers=providers)


def check_exported(path: str | Path, metadata: dict[str, Any]) -> None:
    """A UserError unless the metadata is that of a model written by resnetlab export."""
    if metadata.get("format") != EXPORT_MARKER or "classes" not in metadata:
        raise UserError(
            f"{path} was not written by resnetlab export (its metadata has no class names); "
            "export the model with resnetlab export."
        )


def is_onnx(path: str | Path) -> bool:
    return str(path).lower().endswith(ONNX_SUFFIX)


class OnnxModel:
    """An exported .onnx model in an onnxruntime session, with what its metadata promises (checked as a card
    is: classes, channels, input size)."""

    def __init__(self, path: str | Path, device: str = "auto") -> None:
        path = Path(path)
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise UserError(
                "running ONNX models needs the onnxruntime package, which is not installed; install it from the "
                "resnetlab folder with: pip install -e '.[export]'."
            ) from None
        if not path.is_file():
            raise UserError(f"no ONNX model at {path}; export one first (resnetlab export CKPT --format onnx).")
        try:
            self.session = onnx_session(path, device)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types for a bad file
            raise UserError(f"{path} is not a readable ONNX model ({type(e).__name__}); export it again.") from None
        self.metadata = read_onnx_metadata(self.session.get_modelmeta().custom_metadata_map)
        check_exported(path, self.metadata)
        check = CardChecker(self.metadata, str(path))
        self.classes = check.classes()
        self.channels = check.channels()
        self.size = check.whole("image_size", *IMAGE_SIZE_RANGE)

    def decode(self, path: Path) -> np.ndarray:
        """An image file as the model's uint8 input [C, size, size]."""
        square = decode_square(path, self.channels, self.size)
        if square.size != (self.size, self.size):
            square = square.resize((self.size, self.size), Image.Resampling.BILINEAR)
        return as_array(square)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """The calibrated probabilities [N, classes] of uint8 images [N, C, size, size]."""
        return self.session.run([ONNX_OUTPUTS[1]], {ONNX_INPUT: images})[0]

    def top_classes(self, probabilities: np.ndarray, k: int) -> list[Top]:
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, : min(k, probabilities.shape[1])]
        return [[(self.classes[i], float(row[i])) for i in indices] for row, indices in zip(probabilities, order)]

    def predict_files(self, paths: list[Path]) -> Iterator[tuple[list[Path], np.ndarray, np.ndarray]]:
        """(paths, uint8 images, probabilities) for CHUNK_SIZE files at a time, as inference.PredictorBase's."""
        for start in range(0, len(paths), CHUNK_SIZE):
            chunk = paths[start : start + CHUNK_SIZE]
            pixels = np.stack([self.decode(path) for path in chunk])
            yield chunk, pixels, self.probabilities(pixels)


@dataclass(frozen=True)
class LightPicture:
    """predictions.png of image files, drawn with Pillow: each image titled with its top class and probability
    ("unknown" in gray below --min-confidence), its file name beneath."""

    images: list[np.ndarray]  # uint8 [C, H, W] each
    tops: list[Top]
    captions: list[str]
    path: Path
    classes: tuple[str, ...]
    min_confidence: float | None = None

    def draw(self, show: bool = False) -> None:
        n = len(self.images)
        cols = min(n, 10 if n > 20 else 5)
        rows = math.ceil(n / cols)
        cell_w, cell_h, top_margin = TILE + 16, TILE + 58, 30
        canvas = Image.new("RGB", (max(cols * cell_w, 300), rows * cell_h + top_margin), "white")
        draw = ImageDraw.Draw(canvas)
        title_font, caption_font = _font(12), _font(10)
        draw.text((canvas.width // 2, 8), "predicted class and its probability", "black", title_font, anchor="mt")
        for i, (pixels, top, caption) in enumerate(zip(self.images, self.tops, self.captions)):
            x, y = (i % cols) * cell_w + 8, (i // cols) * cell_h + top_margin
            tile = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))
            canvas.paste(tile.convert("RGB").resize((TILE, TILE), Image.Resampling.NEAREST), (x, y + 30))
            name, probability = top[0]
            guess = f"{self._label(name)} {probability:.0%}"
            # "unknown" in gray over the top class in brackets, as plots.prediction_grid titles it
            lines = [f"? {UNKNOWN}", f"({guess})"] if is_unknown(top, self.min_confidence) else [guess]
            color = TITLE_COLOR if len(lines) == 1 else UNKNOWN_COLOR
            for j, line in enumerate(reversed(lines)):
                text = _fit(draw, line, title_font, cell_w - 4)
                draw.text((x + TILE // 2, y + 26 - 14 * j), text, color, title_font, anchor="mb")
            shown = caption if len(caption) <= 22 else "\u2026" + caption[-21:]
            text = _fit(draw, shown, caption_font, cell_w - 4)
            draw.text((x + TILE // 2, y + TILE + 34), text, CAPTION_COLOR, caption_font, anchor="mt")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.partial")  # a viewer never sees half a picture
        canvas.save(partial, format="PNG")
        os.replace(partial, self.path)
        if show:
            canvas.show()

    def _label(self, name: str) -> str:
        """The class name, or its index where Pillow's built-in font has no glyphs for it (as plots.class_labels)."""
        try:
            name.encode("latin-1")
            return name
        except UnicodeEncodeError:
            return f"class {self.classes.index(name)}"


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size)
    except (ImportError, OSError, TypeError):  # Pillow built without FreeType: its bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    """text, cut with an ellipsis until it is at most width pixels wide."""
    while len(text) > 1 and draw.textlength(text, font=font) > width:
        text = text[:-2] + "\u2026"
    return text


def predict_files(
    checkpoint: str | Path,
    images: list[str],
    top: int,
    report: Report,
    device: str = "auto",
    save: str | Path | None = None,
    min_confidence: float | None = None,
) -> LightPicture:
    """Predict image files (and the images in folders) with an .onnx model, a chunk at a time, reporting each as
    prediction.predict_files does; returns the picture to draw into save (default: predictions.png beside the
    model)."""
    check_min_confidence(min_confidence)
    model = OnnxModel(checkpoint, device)
    paths = expand_image_paths(images)
    shown: list[np.ndarray] = []
    tops_shown: list[Top] = []
    captions: list[str] = []
    for chunk, pixels, probabilities in model.predict_files(paths):
        tops = model.top_classes(probabilities, top)
        for path, path_top in zip(chunk, tops):
            report(*file_answer(path, path_top, min_confidence))
        room = PICTURE_IMAGES - len(captions)
        shown += list(pixels[:room])
        tops_shown += tops[:room]
        captions += [path.name for path in chunk[:room]]
    path = Path(save) if save else Path(checkpoint).parent / "predictions.png"
    return LightPicture(shown, tops_shown, captions, path, model.classes, min_confidence)
