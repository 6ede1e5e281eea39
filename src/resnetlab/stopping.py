"""Which epoch is best, when to stop, and how long to train: imbalanced classes (train --balance, best.pt by
balanced accuracy), --patience and --time-budget. Plain functions of counts, rows and seconds, used by the engine."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .config import IMBALANCE_RATIO

BUDGET_SHARE = 0.9  # --time-budget: the epochs planned fill this share of the minutes left after loading...
EPOCH_OVERHEAD_SECONDS = 0.5  # ...each with this much for saving last.pt, metrics.csv and curves.png
# --time-budget, after each epoch from the second: the epochs that fit this share of the seconds left, at the times
# measured since the first (a few timed steps before the first misjudged an epoch by up to a third on 2 cores, one
# epoch alone by a fifth; the first carries one-time costs, such as the first saving's)
REPLAN_SHARE = 0.95
# --time-budget without --eval-every: evaluate every few epochs where evaluating the held-out images after each one
# would take more than this share of an epoch's training (a few hundred photos, a large held-out part)
EVAL_SHARE = 0.25


def class_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.bincount(labels.long().cpu(), minlength=num_classes)


def is_imbalanced(counts: torch.Tensor) -> bool:
    """Whether the largest class has more than IMBALANCE_RATIO times the images of the smallest."""
    return int(counts.max()) > IMBALANCE_RATIO * int(counts.min())


def class_weights(counts: torch.Tensor) -> torch.Tensor:
    """--balance: each class's weight in the loss, inversely proportional to its training images, 1 on average over
    the images (n / (classes * count)), so the learning rate means what it meant."""
    return (counts.sum() / (len(counts) * counts.clamp_min(1))).float()


def balanced_accuracy(per_class_accuracy: list[float]) -> float:
    """The mean of the per-class accuracies (recalls) of the classes that have held-out images."""
    present = [a for a in per_class_accuracy if not math.isnan(a)]
    return sum(present) / max(len(present), 1)


def selection_note(counts: torch.Tensor, classes: list[str] | tuple[str, ...], balance: bool) -> str:
    largest, smallest = int(counts.argmax()), int(counts.argmin())
    ratio = int(counts[largest]) / max(int(counts[smallest]), 1)
    loss = (
        "--balance weights the loss of each class inversely to its images"
        if balance
        else "--balance would also weight the loss of each class inversely to its images"
    )
    return (
        f"the classes are imbalanced ({classes[largest]} has {int(counts[largest])} training images, "
        f"{classes[smallest]} {int(counts[smallest])}: {ratio:.1f}x, above {IMBALANCE_RATIO:g}x), so best.pt is the "
        "epoch of the best balanced accuracy (the mean of the per-class accuracies) on the held-out images, "
        f"test_balanced_accuracy in metrics.csv; {loss}"
    )


def score_of(row: dict[str, Any], balanced: bool) -> float | None:
    """What best.pt is chosen by: a metrics.csv row's held-out accuracy, or its balanced accuracy."""
    return row.get("test_balanced_accuracy") if balanced else row.get("test_accuracy")


def is_better(
    row: dict[str, Any], rows: list[dict[str, Any]], best_epoch: int, best_accuracy: float, balanced: bool
) -> bool:
    """Whether an epoch's row beats the best before it: its accuracy best_accuracy (the run's record, -1 for none
    yet), or the balanced accuracy of the row of best_epoch."""
    score = score_of(row, balanced)
    if score is None:
        return False
    if not balanced:
        return score > best_accuracy
    best = next((r for r in rows if r["epoch"] == best_epoch), None)
    best_score = score_of(best, balanced) if best is not None else None
    return best_score is None or score > best_score


def evaluations_since_best(rows: list[dict[str, Any]], best_epoch: int) -> int:
    """The evaluations after the best epoch's (the epochs with a test accuracy in metrics.csv)."""
    return sum(1 for row in rows if row["epoch"] > best_epoch and row.get("test_accuracy") is not None)


def patience_note(epoch: int, epochs: int, patience: int, best_epoch: int, best_score: float, balanced: bool) -> str:
    what = "balanced accuracy" if balanced else "accuracy"
    return (
        f"stopped early after epoch {epoch} of {epochs}: no better held-out {what} in the last {patience} "
        f"evaluations (--patience {patience}); best.pt is epoch {best_epoch} ({best_score:.2%})"
    )


def eval_every_within(eval_seconds: float, epoch_seconds: float) -> int:
    """--time-budget without --eval-every: every how many epochs to evaluate, so that evaluating costs at most
    EVAL_SHARE of training (1: after each)."""
    return max(1, math.ceil(eval_seconds / (EVAL_SHARE * max(epoch_seconds, 1e-9)) - 1e-9))


def epochs_within(
    seconds_left: float, epoch_seconds: float, eval_seconds: float, eval_every: int, cap: int | None
) -> tuple[int, float]:
    """--time-budget: the epochs (at least 1, at most cap) that fit BUDGET_SHARE of seconds_left, each training
    for epoch_seconds, evaluating every eval_every-th for eval_seconds, and saving; and the seconds of one epoch."""
    per_epoch = epoch_seconds + eval_seconds / eval_every + EPOCH_OVERHEAD_SECONDS
    epochs = max(1, math.floor(BUDGET_SHARE * seconds_left / per_epoch))
    return (min(epochs, cap) if cap else epochs), per_epoch


@dataclass(frozen=True)
class Budget:
    """--time-budget as planned before the first step, for the plans after each epoch: when the minutes run out
    (time.perf_counter), the seconds of one evaluation of the held-out images, and the --epochs given (a cap)."""

    deadline: float
    eval_seconds: float
    cap: int | None


@dataclass
class BudgetClock:
    """--time-budget: what the epochs since the first took, training and saving apart from evaluating."""

    epochs: int = 0
    epoch_total: float = 0.0  # training and saving
    evaluations: int = 0
    eval_total: float = 0.0
    changes: int = 0  # of the plan

    def add(self, seconds: float, eval_seconds: float | None) -> None:
        """One epoch that took `seconds` in all, eval_seconds of them evaluating (None: not evaluated)."""
        self.epochs += 1
        self.epoch_total += seconds - (eval_seconds or 0.0)
        if eval_seconds is not None:
            self.evaluations += 1
            self.eval_total += eval_seconds

    @property
    def train_seconds(self) -> float:
        return self.epoch_total / max(self.epochs, 1)

    def eval_seconds(self, budget: Budget) -> float:
        """The mean evaluation measured, or the one estimated before the first step while there is none."""
        return self.eval_total / self.evaluations if self.evaluations else budget.eval_seconds


def epochs_after(
    done: int, seconds_left: float, train_seconds: float, eval_seconds: float, eval_every: int, cap: int | None
) -> int:
    """--time-budget, after `done` epochs: the most epochs in all (at least one more, at most the cap) whose epochs
    still to come, each training and saving for train_seconds, with their evaluations (every eval_every-th epoch and
    the last) of eval_seconds each, and the calibration of best.pt at the end (one more evaluation), fit
    REPLAN_SHARE of seconds_left."""
    room = REPLAN_SHARE * seconds_left - eval_seconds

    def cost(epochs: int) -> float:
        evaluations = epochs // eval_every - done // eval_every + (epochs % eval_every != 0)
        return (epochs - done) * train_seconds + evaluations * eval_seconds

    epochs = done + 1
    while (cap is None or epochs < cap) and cost(epochs + 1) <= room:
        epochs += 1
    return epochs


def replans(planned: int, epochs: int, first: bool) -> bool:
    """Whether a time budget's plan of `planned` epochs changes to `epochs`: the first time after any difference;
    later, whenever fewer fit (the budget is a promise), but only for two more or above, so that a mean that wavers
    between two counts does not move the schedule back and forth."""
    return epochs != planned if first else epochs < planned or epochs >= planned + 2


def replan_note(
    done: int, planned: int, epochs: int, train_seconds: float, eval_seconds: float, seconds_left: float
) -> str:
    return (
        f"--time-budget: after epoch {done}, an epoch trains in {train_seconds:.1f} s with its saving and an "
        f"evaluation takes {eval_seconds:.1f} s, so {epochs} epochs in all fit the {seconds_left:.0f} s left, in "
        f"place of {planned}; the learning-rate schedule now spans them (checked again after each epoch, the epoch "
        "counter shows any later change)"
    )


def budget_note(
    minutes: float,
    epochs: int,
    per_epoch: float,
    step_seconds: float,
    spent: float,
    sized: int,
    cap: int | None,
    eval_every: tuple[int, float] | None = None,
) -> str:
    """eval_every: (N, the seconds of one evaluation) where the budget chose to evaluate every Nth epoch."""
    fits = "" if epochs > 1 or per_epoch <= minutes * 60 - spent else "; even 1 epoch takes longer than is left"
    capped = f", the --epochs {cap} given" if cap and epochs == cap else ""
    instead = f" (in place of {sized})" if sized != epochs else ""
    spaced = ""
    if eval_every and eval_every[0] > 1:
        spaced = (
            f"; it evaluates every {eval_every[0]} epochs and after the last (one evaluation of the held-out images "
            f"takes about {eval_every[1]:.1f} s), --eval-every 1 after each"
        )
    return (
        f"--time-budget {minutes:g} minutes: {epochs} epochs planned{capped}{instead}, so that the schedule ends "
        f"within it: an epoch takes about {per_epoch:.1f} s ({step_seconds * 1000:.0f} ms a step, measured on a few "
        f"steps, with its evaluation and saving), and {spent:.0f} s went into loading and measuring{fits}{spaced}"
    )
