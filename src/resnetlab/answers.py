"""What `predict` says about one image file, in text and JSON: shared by the PyTorch path (prediction.py) and the
path that answers an .onnx model without importing PyTorch (onnxlight.py). No tensor code: plain lists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import UserError

CHUNK_SIZE = 256  # images per forward pass, and image files decoded at a time (both paths)
PICTURE_IMAGES = 100  # images drawn in predictions.png at most
UNKNOWN = "unknown"  # the answer of predict --min-confidence and serve ?min_confidence below the threshold

Top = list[tuple[str, float]]  # (class, probability), the likeliest first


def is_unknown(top: Top, min_confidence: float | None) -> bool:
    """Whether the answer is "unknown": the top (calibrated) probability is below min_confidence."""
    return min_confidence is not None and top[0][1] < min_confidence


def check_min_confidence(value: float | None) -> None:
    if value is not None and not 0 <= value < 1:
        raise UserError(f"--min-confidence must be from 0 up to (not including) 1, not {value:g}.")


def answer_fields(top: Top, min_confidence: float | None) -> dict[str, Any]:
    """The JSON fields of the answer with --min-confidence: the class or "unknown", and whether it is unknown."""
    if min_confidence is None:
        return {}
    unknown = is_unknown(top, min_confidence)
    return {"class": UNKNOWN if unknown else top[0][0], "unknown": unknown}


def top_json(top: Top) -> list[dict[str, Any]]:
    return [{"class": name, "probability": round(p, 6)} for name, p in top]


def file_answer(path: Path, top: Top, min_confidence: float | None) -> tuple[dict[str, Any], str]:
    """An image file's JSON object and line of text."""
    classes = ", ".join(f"{name} {p:.1%}" for name, p in top)
    unknown = is_unknown(top, min_confidence)
    line = f"{path}: " + (f"{UNKNOWN} (below {min_confidence:.1%}: {classes})" if unknown else classes)
    return {"file": str(path), **answer_fields(top, min_confidence), "top": top_json(top)}, line
