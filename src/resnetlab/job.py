"""What a training job is made of, and where it stands: shared by the engine, which runs it, and the run
recorder, which saves it."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .batches import TensorBatches
from .card import ModelCard
from .distributed import Distributed
from .preprocess import PixelClassifier
from .runtime import Runtime


@dataclass
class Progress:
    """Where a run stands; last.pt keeps it (as train_state) so that --resume continues exactly."""

    epoch: int = 0  # epochs finished
    step: int = 0  # steps finished in the next epoch (one that was interrupted)
    totals: dict[str, float] | None = None  # running sums of that interrupted epoch
    rows: list[dict[str, Any]] = field(default_factory=list)  # metrics.csv so far
    best_accuracy: float = -1.0
    best_epoch: int = 0
    elapsed: float = 0.0  # seconds of training before this process started


@dataclass
class Job:
    """Everything `fit` runs: the network, its training and evaluation wrappers, data, optimizer and schedule."""

    card: ModelCard
    net: nn.Module  # the network whose weights are saved
    train_module: nn.Module  # what trains: net behind normalization (and DistributedDataParallel under torchrun)
    evaluator: PixelClassifier  # net behind normalization and the card's test-time flip
    train_batches: TensorBatches
    test_batches: TensorBatches
    optimizer: torch.optim.Optimizer
    scheduler: Any
    runtime: Runtime
    dist: Distributed
    epochs: int
    label_smoothing: float
    lookahead: Any = None  # engine.Lookahead, for recipes that use it
    eval_every: int = 1  # evaluate after every Nth epoch and after the last
    class_weights: torch.Tensor | None = None  # --balance: each class's weight in the loss
    select_balanced: bool = False  # best.pt by balanced accuracy (imbalanced classes; stopping.is_imbalanced)
    patience: int | None = None  # stop after this many evaluations without a better score
    budget: Any = None  # stopping.Budget: --time-budget, planned again after each epoch from the second (engine.fit)

    def evaluates_after(self, epoch: int) -> bool:
        return epoch % self.eval_every == 0 or epoch == self.epochs

    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.net.state_dict().items()}

    def train_state(self, progress: Progress) -> dict[str, Any]:
        """What --resume needs, as last.pt stores it."""
        data = {
            "class_names": names_digest(self.card.classes),
            "train_images": len(self.train_batches.data),
            "held_out": names_digest(self.card.holdout),
        }
        return {
            "epochs": self.epochs,  # the length the schedule is planned for
            "data": data,  # what the run trains on, to tell when the files changed before --resume
            "epoch": progress.epoch,
            "step": progress.step,
            "totals": progress.totals,
            "model": self.weights(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "rows": progress.rows,
            "best_accuracy": progress.best_accuracy,
            "best_epoch": progress.best_epoch,
            "elapsed": progress.elapsed,
            "select_balanced": self.select_balanced,  # kept, so a resumed run chooses best.pt as it began
            **({"lookahead": self.lookahead.state_dict()} if self.lookahead is not None else {}),
        }

    def restore(self, state: dict[str, Any]) -> Progress:
        """Load a train_state saved by `train_state`; returns where it stood."""
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("epochs", self.epochs) == self.epochs:
            self.scheduler.load_state_dict(state["scheduler"])
        else:  # resumed with another --epochs: the schedule built for it, at the step the run reached
            self._advance_schedule(state["scheduler"]["last_epoch"])
        if self.lookahead is not None:
            self.lookahead.load_state_dict(state["lookahead"])
        torch.set_rng_state(state["torch_rng"])
        self.select_balanced = state.get("select_balanced", False)  # runs saved before chose by accuracy
        return Progress(
            state["epoch"],
            state["step"],
            state.get("totals"),
            list(state["rows"]),
            state["best_accuracy"],
            state["best_epoch"],
            state.get("elapsed", 0.0),
        )

    def respan(self, epochs: int, build_scheduler: Callable[[int], Any]) -> None:
        """Make the run `epochs` long from where it stands (the end of an epoch): the schedule built again by
        build_scheduler(all steps) from the peak rates, stepped to the steps done, and the lookahead's length."""
        steps = len(self.train_batches)
        for group in self.optimizer.param_groups:  # the peak rate the schedule was built from
            group["lr"] = group.get("max_lr", group["initial_lr"])  # one-cycle keeps it as max_lr
        done = self.scheduler.last_epoch  # the steps taken so far
        self.scheduler = build_scheduler(epochs * steps)
        self._advance_schedule(done)
        if self.lookahead is not None:
            self.lookahead.total_steps = epochs * steps
        self.epochs = epochs

    def _advance_schedule(self, steps: int) -> None:
        """Step the freshly built schedule to `steps`, setting the learning rate (and momentum) its plan gives there
        in place of the saved optimizer's, which followed the old plan."""
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"]  # a step schedule scales the current rate: start it from the peak
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()": no step is skipped
            for _ in range(steps):
                self.scheduler.step()


def names_digest(names: tuple[str, ...] | list[str]) -> str:
    """A short digest of a list of names (classes, files held out), for last.pt to tell when they changed."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
