"""`resnetlab eval`: a checkpoint (or an exported .onnx file) scored on its test split, and the picture of its
confusion matrix; its mistakes (per-class precision, recall and F1, the most confused pairs) and, with --worst,
the picture of the images it got most wrong and every image's prediction in predictions.csv."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .batches import ImageData
from .card import ModelCard
from .checkpoint import resolve_path
from .inference import open_predictor
from .metrics import ImageScores, class_report, most_confused, with_prefix
from .plots import confusion_matrix_plot, prediction_grid, reliability_diagram

MOST_CONFUSED = 5  # the commonest mistakes listed (actual -> predicted)
WORST_DRAWN = 100  # eval --worst draws at most this many images


@dataclass(frozen=True)
class Evaluation:
    """What `eval` found: the model's card, its test metrics and where the confusion matrix was drawn."""

    checkpoint: str
    card: ModelCard
    stats: dict[str, Any]  # metrics.score under test_ names: test_loss, test_accuracy, confusion_matrix, images...
    picture: Path
    runtime: str  # what ran the model (device and precision, or onnxruntime's providers)
    worst: WorstImages | None = None  # eval --worst: where the worst images and predictions.csv were written
    reliability: Path | None = None  # the reliability diagram (before and after the card's temperature)

    def to_json(self) -> dict[str, Any]:
        """The object `eval --json` prints."""
        return {
            "checkpoint": self.checkpoint,
            "model": self.card.architecture,
            "dataset": self.card.dataset,
            "classes": list(self.card.classes),
            **self.stats,
            "picture": str(self.picture),
            **(self.worst.to_json() if self.worst else {}),
            "reliability_picture": str(self.reliability) if self.reliability else None,
        }


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_dir: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    cache_dir: str | None = None,
    save: str | Path | None = None,
    worst: int | None = None,
    worst_save: str | Path | None = None,
) -> Evaluation:
    """Score a checkpoint, run folder or .onnx file on its test split (from data_dir, default the folder it was
    trained from) and draw its confusion matrix into save (default: confusion_matrix.png beside the checkpoint),
    and its reliability diagram into reliability.png beside that. With worst, also draw that many images of the
    highest loss into worst_save (default: worst.png beside the checkpoint) and write every image's prediction into
    predictions.csv beside it."""
    predictor = open_predictor(checkpoint, device, precision)
    card = predictor.card
    data = predictor.load_test_data(data_dir, cache_dir=cache_dir)
    stats, scores = predictor.evaluate_images(data)
    stats = with_prefix(stats, "test")
    stats |= mistakes(stats["confusion_matrix"], card.classes)
    picture = Path(save) if save else resolve_path(checkpoint).parent / "confusion_matrix.png"
    title = f"{card.architecture} on {card.dataset}"
    confusion_matrix_plot(stats["confusion_matrix"], card.classes, picture, title)
    reliability = reliability_diagram(stats["calibration"], picture.with_name("reliability.png"), title)
    drawn = None
    if worst:
        drawn = WorstImages(
            Path(worst_save) if worst_save else resolve_path(checkpoint).parent / "worst.png", min(worst, len(data))
        )
        drawn.write(data, scores, card.classes)
    return Evaluation(str(checkpoint), card, stats, picture, predictor.runs_on, drawn, reliability)


def mistakes(confusion: list[list[int]], classes: tuple[str, ...]) -> dict[str, Any]:
    """Per-class precision, recall and F1, their macro averages, and the MOST_CONFUSED commonest mistakes as
    {"actual", "predicted", "count"} (class names), from a confusion matrix (rows: actual class)."""
    pairs = most_confused(confusion, MOST_CONFUSED)
    return class_report(confusion) | {
        "most_confused": [{"actual": classes[a], "predicted": classes[p], "count": n} for a, p, n in pairs]
    }


@dataclass(frozen=True)
class WorstImages:
    """eval --worst: the `count` images of the highest loss drawn into `picture`, and every image's prediction
    in predictions.csv beside it."""

    picture: Path
    count: int

    @property
    def table(self) -> Path:
        return self.picture.with_name("predictions.csv")

    def to_json(self) -> dict[str, Any]:
        return {"worst_picture": str(self.picture), "predictions_csv": str(self.table)}

    def write(self, data: ImageData, scores: ImageScores, classes: tuple[str, ...]) -> None:
        write_predictions(self.table, data, scores, classes)
        index = scores.loss.argsort(descending=True, stable=True)[: min(self.count, WORST_DRAWN)]
        order = index.tolist()
        captions = [f"{_image_name(data, i)}, loss {loss:.2f}" for i, loss in zip(order, scores.loss[index].tolist())]
        wrong = int((scores.predicted[index] != scores.labels[index]).sum())
        prediction_grid(
            data.take(index),
            [classes[i] for i in scores.predicted[index].tolist()],
            scores.probability[index].tolist(),
            [classes[i] for i in scores.labels[index].tolist()],
            self.picture,
            captions=captions,
            classes=classes,
            heading=f"the {len(order)} test images of the highest loss, of {len(data):,} ({wrong} wrong, in red "
            "with the actual class)\npredicted class and its probability",
        )


def _image_name(data: ImageData, i: int) -> str:
    """An image of the split as a caption: its file under the split's folder, or its index."""
    if not data.files:
        return f"#{i}"
    prefix = data.source.rstrip(os.sep) + os.sep
    return data.files[i].removeprefix(prefix) if data.source else data.files[i]


def write_predictions(path: Path, data: ImageData, scores: ImageScores, classes: tuple[str, ...]) -> Path:
    """Every image's prediction as a CSV row: index (into the test split, as explain takes it), file (image
    folders), actual and predicted class, the predicted class's probability, loss; written atomically."""
    partial = path.with_name(f".{path.name}.partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", *(["file"] if data.files else []), "actual", "predicted", "probability", "loss"])
        rows = zip(scores.labels.tolist(), scores.predicted.tolist(), scores.probability.tolist(), scores.loss.tolist())
        for i, (actual, predicted, probability, loss) in enumerate(rows):
            file = [data.files[i]] if data.files else []
            writer.writerow([i, *file, classes[actual], classes[predicted], f"{probability:.6f}", f"{loss:.6f}"])
    os.replace(partial, path)
    return path
