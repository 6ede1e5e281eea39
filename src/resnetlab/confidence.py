"""Calibrated confidence: temperature scaling and the expected calibration error.

A network's softmax is usually over-confident. Temperature scaling (Guo et al. 2017, "On Calibration of Modern
Neural Networks") divides the logits by one scalar T, fitted after training to minimize the negative log-likelihood
on held-out images; the argmax, hence the accuracy, stays the same. The model card keeps T, and every softmax of
resnetlab (predict, eval, serve, the exported files) is softmax(logits / T).

The expected calibration error (ECE) sorts images into ECE_BINS equal-width bins of their top probability and
averages |accuracy - mean top probability| over the bins, weighted by their images.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

ECE_BINS = 15  # Guo et al.'s number
TEMPERATURE_RANGE = (0.05, 20.0)  # what the fit may return: a held-out set without a mistake pushes T towards 0
_SEARCH_STEPS = 80  # golden-section steps on log T: the interval shrinks to 0.618^80 of its width, ~1e-16


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T in TEMPERATURE_RANGE minimizing the mean cross-entropy of logits / T: a golden-section search on
    log T (the loss is convex in 1/T, so it has one minimum there), deterministic; 1.0 without images."""
    if len(labels) == 0:
        return 1.0
    logits, labels = logits.double(), labels.long()

    def loss(log_t: float) -> float:
        return F.cross_entropy(logits / math.exp(log_t), labels).item()

    ratio = (math.sqrt(5) - 1) / 2
    low, high = (math.log(t) for t in TEMPERATURE_RANGE)
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = loss(a), loss(b)
    for _ in range(_SEARCH_STEPS):
        if loss_a <= loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = loss(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = loss(b)
    return math.exp((low + high) / 2)


def reliability(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per bin of the top probability ((i/bins, (i+1)/bins], the first closed): its images, their mean top
    probability (confidence) and their accuracy; empty bins have None for both."""
    confidence, predicted = probabilities.double().max(1)
    which = (confidence * bins).ceil().long().clamp(1, bins) - 1
    right = (predicted == labels).double()
    counts = torch.bincount(which, minlength=bins)
    confidence_sums = torch.bincount(which, confidence, minlength=bins)
    right_sums = torch.bincount(which, right, minlength=bins)
    return [
        {
            "lower": i / bins,
            "upper": (i + 1) / bins,
            "images": int(n),
            "confidence": float(c / n) if n else None,
            "accuracy": float(r / n) if n else None,
        }
        for i, (n, c, r) in enumerate(zip(counts.tolist(), confidence_sums.tolist(), right_sums.tolist()))
    ]


def expected_calibration_error(bins: list[dict[str, float]]) -> float:
    """ECE from `reliability`'s bins: their |accuracy - confidence|, weighted by their share of the images."""
    total = sum(b["images"] for b in bins)
    return (
        sum(b["images"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["images"]) if total else 0.0
    )


def calibration(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float | None = None, with_bins: bool = False
) -> dict[str, Any]:
    """How well the softmax of logits (before) and of logits / temperature (after) is calibrated on these labels:
    ECE and mean cross-entropy (loss) of each. Without a temperature, it is fitted here (fit_temperature). with_bins:
    also the reliability bins of each, for the reliability diagram."""
    if temperature is None:
        temperature = fit_temperature(logits, labels)
    logits, labels = logits.double(), labels.long()
    report: dict[str, Any] = {"temperature": temperature, "images": len(labels), "bins": ECE_BINS}
    for when, scaled in (("before", logits), ("after", logits / temperature)):
        bins = reliability(scaled.softmax(1), labels)
        report[f"ece_{when}"] = expected_calibration_error(bins)
        report[f"loss_{when}"] = F.cross_entropy(scaled, labels).item() if len(labels) else None
        if with_bins:
            report.setdefault("reliability", {})[when] = bins
    return report


def describe_calibration(report: dict[str, Any], source: str) -> str:
    """Two lines on a `calibration` report: the temperature (source: where it comes from), and the ECE before and
    after it."""
    return (
        f"calibration: temperature {report['temperature']:.3g} ({source})\n"
        f"expected calibration error ({report['bins']} bins, {report['images']} images): {report['ece_before']:.2%} "
        f"before, {report['ece_after']:.2%} after"
    )
