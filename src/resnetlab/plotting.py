"""`resnetlab plot`: a run's pictures drawn again from its files."""

from __future__ import annotations

from pathlib import Path

from .errors import UserError
from .inference import TorchPredictor
from .plots import confusion_matrix_plot, prediction_grid, read_metrics, training_curves


def plot_run(
    run: str | Path,
    data_dir: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    n: int = 20,
    cache_dir: str | None = None,
) -> list[str]:
    """Draw every picture of a run folder again from its files: curves.png from metrics.csv, and, when the
    test data can be found without downloading it, confusion_matrix.png and predictions.png (the first n test
    images) from best.pt. Returns one line per picture: where it was written, or why it was skipped. cache_dir: where
    a folder's decoded images are kept (data.load_split)."""
    run = Path(run)
    if not run.is_dir():
        raise UserError(f"{run} is not a folder; give the run folder that resnetlab train wrote.")
    metrics, best = run / "metrics.csv", run / "best.pt"
    if not metrics.is_file() and not best.is_file():
        raise UserError(f"{run} has neither metrics.csv nor best.pt; give the run folder that resnetlab train wrote.")
    predictor = TorchPredictor.from_checkpoint(best, device, precision) if best.is_file() else None
    title = f"{predictor.card.architecture} on {predictor.card.dataset}" if predictor else None
    lines = []
    rows = read_metrics(metrics) if metrics.is_file() else []
    if rows:
        lines.append(str(training_curves(rows, run / "curves.png", title)))
    else:
        lines.append(f"skipped curves.png: {run} has no epochs in metrics.csv")
    if predictor is None:
        lines.append(f"skipped confusion_matrix.png and predictions.png: {run} has no best.pt")
        return lines
    card = predictor.card
    if not predictor.has_data(data_dir):
        lines.append(
            f"skipped confusion_matrix.png and predictions.png: the {card.dataset} test data is not in "
            f"{card.data_folder(data_dir)}; give --data-dir"
        )
        return lines
    data = predictor.load_test_data(data_dir, cache_dir=cache_dir)
    stats = predictor.evaluate(data)
    lines.append(
        str(confusion_matrix_plot(stats["confusion_matrix"], predictor.classes, run / "confusion_matrix.png", title))
    )
    first = data.select(slice(0, n))
    confidence, indices = predictor.probabilities(first.images).max(1)
    predicted = [card.classes[i] for i in indices.tolist()]
    actual = [card.classes[i] for i in first.labels.tolist()]
    picture = prediction_grid(
        first.images, predicted, confidence.tolist(), actual, run / "predictions.png", classes=card.classes
    )
    lines.append(str(picture))
    return lines
