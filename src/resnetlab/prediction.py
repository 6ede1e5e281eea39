"""`resnetlab predict`: the top classes a checkpoint (or an exported .onnx file) gives image files, or the first
test images, and the picture of them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .checkpoint import resolve_path
from .imagefiles import expand_image_paths
from .inference import PredictorBase, open_predictor
from .plots import prediction_grid

PICTURE_IMAGES = 100  # images drawn in predictions.png at most

Top = list[tuple[str, float]]  # (class, probability), the likeliest first
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

    def draw(self, show: bool = False) -> None:
        predicted, confidence = [top[0][0] for top in self.tops], [top[0][1] for top in self.tops]
        prediction_grid(self.images, predicted, confidence, self.actual, self.path, show, self.captions, self.classes)


def _top_json(top: Top) -> list[dict[str, Any]]:
    return [{"class": name, "probability": round(p, 6)} for name, p in top]


def predict_files(predictor: PredictorBase, images: list[str], top: int, report: Report) -> Picture:
    """Predict image files (and the images in folders) chunk by chunk, reporting each as it is done."""
    shown, tops_shown, captions = [], [], []
    for paths, pixels, probabilities in predictor.predict_files(expand_image_paths(images)):
        tops = predictor.top_classes(probabilities, top)
        for path, path_top in zip(paths, tops):
            report(
                {"file": str(path), "top": _top_json(path_top)},
                f"{path}: " + ", ".join(f"{name} {p:.1%}" for name, p in path_top),
            )
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
) -> Picture:
    """Predict the first n test images, reporting each, then how many were right."""
    data = predictor.load_test_data(data_dir, limit=n, cache_dir=cache_dir)
    tops = predictor.top_classes(predictor.probabilities(data.images), top)
    actual = [predictor.card.classes[i] for i in data.labels.tolist()]
    for i, (image_top, a) in enumerate(zip(tops, actual)):
        predicted, probability = image_top[0]
        record = {
            "index": i,
            "predicted": predicted,
            "probability": round(probability, 6),
            "actual": a,
            "correct": predicted == a,
            "top": _top_json(image_top),
        }
        report(record, f'predicted: "{predicted}", actual: "{a}"')
    right = sum(image_top[0][0] == a for image_top, a in zip(tops, actual))
    report(None, f"{right} of {len(actual)} right ({right / len(actual):.0%})")
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
) -> Picture:
    """Predict image files (or, without any, the first n test images) with a checkpoint, run folder or .onnx file,
    reporting each image; returns the picture to draw into save (default: predictions.png beside the checkpoint)."""
    predictor = open_predictor(checkpoint, device, precision)
    path = Path(save) if save else resolve_path(checkpoint).parent / "predictions.png"
    if images:
        picture = predict_files(predictor, images, top, report)
    else:
        picture = predict_test_images(predictor, n, top, report, data_dir, cache_dir)
    return replace(picture, path=path, classes=tuple(predictor.card.classes))
