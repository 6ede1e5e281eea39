"""`resnetlab predict`: the top classes a checkpoint (or an exported .onnx file) gives image files, or the first
test images, and the picture of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .answers import PICTURE_IMAGES, UNKNOWN, Top, check_min_confidence, file_answer, is_unknown, top_json
from .checkpoint import resolve_path
from .imagefiles import expand_image_paths
from .inference import PredictorBase, open_predictor
from .plots import prediction_grid

# Told each image's result as it is predicted: its JSON object (None for a closing line of text) and its line of text.
Report = Callable[[dict[str, Any] | None, str], None]


@dataclass(frozen=True)
class Picture:
    """What predictions.png shows: the first PICTURE_IMAGES images with their top classes."""

    images: torch.Tensor  # uint8 [N, C, H, W]
    tops: list[Top]
    actual: list[str] | None = None  # the test images' classes
    captions: list[str] | None = None  # the image files' names
    path: Path = Path("predictions.png")  # where draw() writes it
    classes: tuple[str, ...] | None = None  # the model's classes, so a name no font draws shows as its index
    min_confidence: float | None = None  # below it, an image is shown as unknown

    def draw(self, show: bool = False) -> None:
        predicted, confidence = [top[0][0] for top in self.tops], [top[0][1] for top in self.tops]
        unknown = [is_unknown(top, self.min_confidence) for top in self.tops]
        prediction_grid(
            self.images, predicted, confidence, self.actual, self.path, show, self.captions, self.classes, unknown
        )


def predict_files(
    predictor: PredictorBase, images: list[str], top: int, report: Report, min_confidence: float | None = None
) -> Picture:
    """Predict image files (and the images in folders) chunk by chunk, reporting each as it is done; "unknown"
    where the top probability is below min_confidence."""
    shown, tops_shown, captions = [], [], []
    for paths, pixels, probabilities in predictor.predict_files(expand_image_paths(images)):
        tops = predictor.top_classes(probabilities, top)
        for path, path_top in zip(paths, tops):
            report(*file_answer(path, path_top, min_confidence))
        room = PICTURE_IMAGES - len(captions)
        shown.append(pixels[:room])
        tops_shown += tops[:room]
        captions += [path.name for path in paths[:room]]
    return Picture(torch.cat(shown), tops_shown, captions=captions)


def predict_test_images(
    predictor: PredictorBase,
    n: int,
    top: int,
    report: Report,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    min_confidence: float | None = None,
) -> Picture:
    """Predict the first n test images, reporting each, then how many were right (and, with min_confidence, how
    many unknown: neither right nor wrong)."""
    data = predictor.load_test_data(data_dir, limit=n, cache_dir=cache_dir)
    tops = predictor.top_classes(predictor.probabilities(data.images), top)
    actual = [predictor.card.classes[i] for i in data.labels.tolist()]
    unknown = [is_unknown(image_top, min_confidence) for image_top in tops]
    for i, (image_top, a, u) in enumerate(zip(tops, actual, unknown)):
        predicted, probability = image_top[0]
        answer = UNKNOWN if u else predicted
        record = {
            "index": i,
            "predicted": answer,
            "probability": round(probability, 6),
            "actual": a,
            "correct": answer == a and not u,
            **({"unknown": u} if min_confidence is not None else {}),
            "top": top_json(image_top),
        }
        shown = f'"{UNKNOWN}" ({predicted} {probability:.1%}, below {min_confidence:.1%})' if u else f'"{predicted}"'
        report(record, f'predicted: {shown}, actual: "{a}"')
    right = sum(image_top[0][0] == a and not u for image_top, a, u in zip(tops, actual, unknown))
    unknowns = (
        f", {sum(unknown)} unknown (top probability below {min_confidence:.1%})" if min_confidence is not None else ""
    )
    report(None, f"{right} of {len(actual)} right ({right / len(actual):.0%}){unknowns}")
    return Picture(data.images[:PICTURE_IMAGES], tops[:PICTURE_IMAGES], actual[:PICTURE_IMAGES])


def predict(
    checkpoint: str | Path,
    images: list[str],
    n: int,
    top: int,
    report: Report,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    save: str | Path | None = None,
    min_confidence: float | None = None,
) -> Picture:
    """Predict image files (or, without any, the first n test images) with a checkpoint, run folder or .onnx file,
    reporting each image; returns the picture to draw into save (default: predictions.png beside the checkpoint).
    min_confidence (0 to 1, 1 excluded): below this top (calibrated) probability the answer is "unknown"."""
    check_min_confidence(min_confidence)
    predictor = open_predictor(checkpoint, device, precision)
    path = Path(save) if save else resolve_path(checkpoint).parent / "predictions.png"
    if images:
        picture = predict_files(predictor, images, top, report, min_confidence)
    else:
        picture = predict_test_images(predictor, n, top, report, data_dir, cache_dir, min_confidence)
    return replace(picture, path=path, classes=tuple(predictor.card.classes), min_confidence=min_confidence)
