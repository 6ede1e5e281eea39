"""Scores of a classifier on a split, under names that do not assume which split it was.

`score` returns loss, accuracy, per-class accuracy and the confusion matrix; `with_prefix` names them for the
split they were measured on (test_accuracy, train_accuracy, ...), as metrics.csv and the JSON outputs do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

SPLIT_METRICS = ("loss", "accuracy")  # the per-class figures and confusion matrix keep their names


def score(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    seconds: float,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Loss, accuracy, per-class accuracy, confusion matrix (rows: actual class) and throughput, from logits
    and labels that took `seconds` to compute. reduce, if given, sums the counts over processes."""
    predictions = logits.argmax(1)
    confusion = torch.bincount(labels * num_classes + predictions, minlength=num_classes**2).double()
    sums = torch.cat([confusion, F.cross_entropy(logits, labels, reduction="sum").double().view(1)])
    if reduce is not None:
        sums = reduce(sums)
    confusion = sums[:-1].round().long().reshape(num_classes, num_classes)
    count = int(confusion.sum())
    per_class_total = confusion.sum(1)
    per_class = confusion.diag().double() / per_class_total.clamp_min(1)
    return {
        "loss": sums[-1].item() / max(count, 1),
        "accuracy": confusion.diag().sum().item() / max(count, 1),
        "per_class_accuracy": [a if n else float("nan") for a, n in zip(per_class.tolist(), per_class_total.tolist())],
        "confusion_matrix": confusion.tolist(),
        "images": count,
        "images_per_second": len(labels) / max(seconds, 1e-9),
        "seconds": seconds,
    }


def with_prefix(stats: dict[str, Any], split: str) -> dict[str, Any]:
    """stats with the split-dependent names prefixed: accuracy -> test_accuracy for split "test"."""
    return {f"{split}_{k}" if k in SPLIT_METRICS else k: v for k, v in stats.items()}
