"""`resnetlab eval`: a checkpoint (or an exported .onnx file) scored on its test split, and the picture of its
confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .card import ModelCard
from .checkpoint import resolve_path
from .inference import open_predictor
from .metrics import with_prefix
from .plots import confusion_matrix_plot, reliability_diagram


@dataclass(frozen=True)
class Evaluation:
    """What `eval` found: the model's card, its test metrics and where the confusion matrix was drawn."""

    checkpoint: str
    card: ModelCard
    stats: dict[str, Any]  # metrics.score under test_ names: test_loss, test_accuracy, confusion_matrix, images...
    picture: Path
    runtime: str  # what ran the model (device and precision, or onnxruntime's providers)
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
            "reliability_picture": str(self.reliability) if self.reliability else None,
        }


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_dir: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    cache_dir: str | None = None,
    save: str | Path | None = None,
) -> Evaluation:
    """Score a checkpoint, run folder or .onnx file on its test split (from data_dir, default the folder it was
    trained from) and draw its confusion matrix into save (default: confusion_matrix.png beside the checkpoint),
    and its reliability diagram into reliability.png beside that."""
    predictor = open_predictor(checkpoint, device, precision)
    card = predictor.card
    stats = with_prefix(predictor.evaluate(predictor.load_test_data(data_dir, cache_dir=cache_dir)), "test")
    picture = Path(save) if save else resolve_path(checkpoint).parent / "confusion_matrix.png"
    title = f"{card.architecture} on {card.dataset}"
    confusion_matrix_plot(stats["confusion_matrix"], card.classes, picture, title)
    reliability = reliability_diagram(stats["calibration"], picture.with_name("reliability.png"), title)
    return Evaluation(str(checkpoint), card, stats, picture, predictor.describe(), reliability)
