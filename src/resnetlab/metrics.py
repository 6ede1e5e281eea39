"""Scores of a classifier on a split, under names that do not assume which split it was.

`score` returns loss, accuracy (with its 95% Wilson interval), per-class accuracy and the confusion matrix;
`with_prefix` names them for the split they were measured on (test_accuracy, train_accuracy, ...), as metrics.csv
and the JSON outputs do. `ImageScores` keeps each image's prediction (for eval's worst images and predictions.csv),
`class_report` and `most_confused` read the mistakes off the confusion matrix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

# the per-class figures and confusion matrix keep their names
SPLIT_METRICS = ("loss", "accuracy", "accuracy_ci95", "top5_accuracy")
INTERVAL_BELOW = 10_000  # an accuracy on fewer images than this carries its 95% interval (above, it is within 1%)
Z_95 = 1.959964  # the standard normal quantile of 0.975: a two-sided 95% interval


def score(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    seconds: float,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Loss, accuracy, per-class accuracy, confusion matrix (rows: actual class) and throughput, from logits
    and labels that took `seconds` to compute. reduce, if given, sums the counts over processes."""
    loss_sum = F.cross_entropy(logits, labels, reduction="sum")
    return _score(labels, logits.argmax(1), loss_sum, num_classes, seconds, reduce)


def _score(
    labels: torch.Tensor,
    predictions: torch.Tensor,
    loss_sum: torch.Tensor,
    num_classes: int,
    seconds: float,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    confusion = torch.bincount(labels * num_classes + predictions, minlength=num_classes**2).double()
    sums = torch.cat([confusion, loss_sum.double().view(1)])
    if reduce is not None:
        sums = reduce(sums)
    confusion = sums[:-1].round().long().reshape(num_classes, num_classes)
    count = int(confusion.sum())
    per_class_total = confusion.sum(1)
    per_class = confusion.diag().double() / per_class_total.clamp_min(1)
    return {
        "loss": sums[-1].item() / max(count, 1),
        "accuracy": confusion.diag().sum().item() / max(count, 1),
        "accuracy_ci95": accuracy_interval(int(confusion.diag().sum()), count),
        "per_class_accuracy": [a if n else float("nan") for a, n in zip(per_class.tolist(), per_class_total.tolist())],
        "confusion_matrix": confusion.tolist(),
        "images": count,
        "images_per_second": len(labels) / max(seconds, 1e-9),
        "seconds": seconds,
    }


def with_prefix(stats: dict[str, Any], split: str) -> dict[str, Any]:
    """stats with the split-dependent names prefixed: accuracy -> test_accuracy for split "test"."""
    return {f"{split}_{k}" if k in SPLIT_METRICS else k: v for k, v in stats.items()}


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (95% by default): unlike the normal approximation it stays
    within [0, 1] and is not of width 0 at 0 or all successes (Wilson 1927; Brown, Cai and DasGupta 2001)."""
    if trials <= 0:
        return (0.0, 1.0)
    p, z2 = successes / trials, z * z / trials
    centre = (p + z2 / 2) / (1 + z2)
    half = z / (1 + z2) * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials))
    return (max(0.0, centre - half), min(1.0, centre + half))


def accuracy_interval(correct: int, images: int) -> list[float] | None:
    """The 95% Wilson interval [low, high] of an accuracy on fewer than INTERVAL_BELOW images, else None."""
    if not 0 < images < INTERVAL_BELOW:
        return None
    # clipped: a count derived from a stored accuracy (a resumed run's best) is rounded, not trusted
    return [round(bound, 6) for bound in wilson_interval(min(max(correct, 0), images), images)]


def describe_accuracy(accuracy: float, images: int) -> str:
    """An accuracy as the console shows it: "58.33% (95% CI 45.7-69.9%, 60 images)", with the interval on fewer
    than INTERVAL_BELOW images."""
    interval = accuracy_interval(round(accuracy * images), images)
    if interval is None:
        return f"{accuracy:.2%} ({images:,} images)" if images else f"{accuracy:.2%}"
    return f"{accuracy:.2%} (95% CI {interval[0]:.1%}-{interval[1]:.1%}, {images:,} images)".replace("%-", "-")


@dataclass(frozen=True)
class ImageScores:
    """Each image's prediction: its actual and predicted class, the predicted class's probability, its loss and
    whether the actual class is among the five likeliest. Scalars per image, so a split of any size fits."""

    labels: torch.Tensor  # int64 [N]
    predicted: torch.Tensor  # int64 [N]
    probability: torch.Tensor  # float32 [N]: of the predicted class
    loss: torch.Tensor  # float32 [N]: cross-entropy
    top5: torch.Tensor  # bool [N]

    @classmethod
    def of(cls, logits: torch.Tensor, labels: torch.Tensor) -> ImageScores:
        """The scores of one chunk's logits [n, classes]."""
        logits = logits.float()
        probability, predicted = logits.softmax(1).max(1)
        top5 = (logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]).any(1)
        return cls(labels, predicted, probability, F.cross_entropy(logits, labels, reduction="none"), top5)

    @classmethod
    def cat(cls, parts: Sequence[ImageScores]) -> ImageScores:
        """The chunks' scores as one, in order."""
        if not parts:
            empty = torch.empty(0)
            return cls(empty.long(), empty.long(), empty, empty, empty.bool())
        return cls(*(torch.cat([getattr(p, name) for p in parts]) for name in cls.__dataclass_fields__))

    def __len__(self) -> int:
        return len(self.labels)


def score_images(scores: ImageScores, num_classes: int, seconds: float) -> dict[str, Any]:
    """score's figures from the images' scores, and the top-5 accuracy where there are more than 5 classes."""
    stats = _score(scores.labels, scores.predicted, scores.loss.double().sum(), num_classes, seconds)
    if num_classes > 5:
        stats["top5_accuracy"] = scores.top5.double().mean().item() if len(scores) else 0.0
    return stats


def class_report(confusion: Sequence[Sequence[int]]) -> dict[str, Any]:
    """Per-class precision, recall and F1 from a confusion matrix (rows: actual class), and their macro averages
    over the classes that occur (actual or predicted), as scikit-learn's with zero_division=0: a class never
    predicted has precision 0; a class in neither gets NaN and counts in no average."""
    matrix = torch.tensor(confusion, dtype=torch.float64).reshape(len(confusion), -1)
    hits, actual, predicted = matrix.diag(), matrix.sum(1), matrix.sum(0)
    precision = torch.where(predicted > 0, hits / predicted.clamp_min(1), 0.0)
    recall = torch.where(actual > 0, hits / actual.clamp_min(1), 0.0)
    both = precision + recall
    f1 = torch.where(both > 0, 2 * precision * recall / both.clamp_min(1e-12), 0.0)
    occurs = (actual > 0) | (predicted > 0)
    report: dict[str, Any] = {}
    for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        report[f"per_class_{name}"] = torch.where(occurs, values, math.nan).tolist()
        report[f"macro_{name}"] = values[occurs].mean().item() if occurs.any() else math.nan
    return report


def most_confused(confusion: Sequence[Sequence[int]], top: int = 5) -> list[tuple[int, int, int]]:
    """The `top` commonest mistakes as (actual class, predicted class, count), the commonest first (ties in class
    order)."""
    pairs = [
        (count, actual, predicted)
        for actual, row in enumerate(confusion)
        for predicted, count in enumerate(row)
        if actual != predicted and count > 0
    ]
    pairs.sort(key=lambda pair: (-pair[0], pair[1], pair[2]))
    return [(actual, predicted, count) for count, actual, predicted in pairs[:top]]
