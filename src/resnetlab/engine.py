"""Training and evaluation: `train_one_epoch` and `evaluate` return metric dicts, `fit` runs the epochs and hands
each one's results to a run recorder, and `train` sets up a whole job from a TrainConfig."""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import distributed
from .batches import ImageData, TensorBatches
from .card import ModelCard
from .checkpoint import load_checkpoint
from .confidence import calibration
from .config import FINE_TUNE_BACKBONE_LR, RECIPE_ALIASES, Recipe, TrainConfig, fine_tune_rates
from .data import get_spec, load_train_test
from .distributed import Distributed
from .errors import UserError
from .folder import Holdout, survey
from .job import Job, Progress, names_digest
from .metrics import accuracy_interval, score, with_prefix
from .models import count_parameters, list_models
from .preprocess import PixelClassifier
from .recorder import EpochCallback, RunRecorder, choose_out_dir
from .runtime import Runtime, select_runtime
from .stopping import (
    Budget,
    BudgetClock,
    balanced_accuracy,
    budget_note,
    class_counts,
    class_weights,
    epochs_after,
    epochs_within,
    eval_every_within,
    evaluations_since_best,
    is_better,
    is_imbalanced,
    patience_note,
    replan_note,
    replans,
    score_of,
    selection_note,
)
from .transfer import HEAD, Start, initialize, starting_point

TEST_BATCH_SIZE = 500


class Lookahead:
    """airbench's lookahead (after Zhang et al. 2019): every 5 optimizer steps (every) the weights (and BN
    statistics) move to an exponential moving average of themselves, whose decay rises from 0 to 0.95^5
    (decay^every) as (step / steps)^3 (power), so that late in training the weights average over the last few
    hundred steps; after the last step they become that average. The recipe's lookahead_* fields set them."""

    def __init__(
        self, net: nn.Module, total_steps: int, every: int = 5, decay: float = 0.95, power: float = 3.0
    ) -> None:
        self.net, self.total_steps, self.steps = net, total_steps, 0
        self.every, self.base, self.power = every, decay, power
        self.average = {k: v.detach().clone() for k, v in net.state_dict().items() if v.dtype.is_floating_point}

    def decay(self, step: int) -> float:
        return self.base**self.every * (step / self.total_steps) ** self.power

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        if self.steps % self.every and self.steps < self.total_steps:
            return
        decay = 1.0 if self.steps >= self.total_steps else self.decay(self.steps)
        state = self.net.state_dict()
        for name, average in self.average.items():
            average.lerp_(state[name], 1 - decay)
            state[name].copy_(average)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "average": {k: v.cpu() for k, v in self.average.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = state["steps"]
        for name, average in self.average.items():
            average.copy_(state["average"][name])


def train_one_epoch(
    model: nn.Module,
    batches: TensorBatches,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    runtime: Runtime,
    label_smoothing: float = 0.0,
    progress: tqdm | None = None,
    should_stop: Callable[[], bool] | None = None,
    totals: dict[str, float] | None = None,
    lookahead: Lookahead | None = None,
    class_weights: torch.Tensor | None = None,
) -> dict[str, Any]:
    """One pass over the training batches (uint8 images; from batches.start_step on). Returns the mean loss,
    accuracy and throughput, and the running totals. Stops early, with interrupted=True, when should_stop() says so.
    class_weights (--balance): each class's weight in the loss."""
    model.train()
    totals = dict(totals or {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0})
    total_loss = torch.tensor(totals["loss_sum"], dtype=torch.float64)
    correct = torch.tensor(totals["correct"], dtype=torch.int64)
    seen, step, interrupted = int(totals["seen"]), batches.start_step, False
    last_lr = optimizer.param_groups[0]["lr"]
    start = time.perf_counter()
    if progress is not None:
        progress.update(step)
    for images, y in batches:
        if should_stop is not None and should_stop():
            interrupted = True
            break
        with runtime.autocast():
            logits = model(images)
            loss = F.cross_entropy(logits.float(), y, weight=class_weights, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        loss = loss.detach()
        if not torch.isfinite(loss):
            raise UserError(
                f"the training loss became {loss.item()} at step {step + 1}; lower the learning rate "
                "(--lr) and train again."
            )
        optimizer.step()
        last_lr = optimizer.param_groups[0]["lr"]  # the rate this step used; the scheduler moves on below
        scheduler.step()
        if lookahead is not None:
            lookahead.step()
        total_loss += loss.double() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen, step = seen + len(y), step + 1
        if progress is not None:
            progress.update(1)
            if step % 10 == 0:
                elapsed = time.perf_counter() - start
                progress.set_postfix(loss=f"{total_loss.item() / seen:.4f}", img_s=f"{seen / elapsed:.0f}")
    seconds = totals["seconds"] + time.perf_counter() - start
    return {
        "train_loss": total_loss.item() / max(seen, 1),
        "train_accuracy": correct.item() / max(seen, 1),
        "train_images_per_second": seen / max(seconds, 1e-9),
        "train_seconds": seconds,
        "steps": step,
        "lr": last_lr,
        "interrupted": interrupted,
        "totals": {"loss_sum": total_loss.item(), "correct": correct.item(), "seen": seen, "seconds": seconds},
    }


@torch.no_grad()
def predict_logits(
    classifier: nn.Module, batches: TensorBatches, runtime: Runtime
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (fp32) and labels of every batch of uint8 images, from a PixelClassifier in eval mode."""
    classifier.eval()
    outputs, labels = [], []
    for images, y in batches:
        with runtime.autocast():
            outputs.append(classifier(images).float().cpu())
        labels.append(y.cpu())
    return torch.cat(outputs), torch.cat(labels)


def evaluate(
    classifier: nn.Module,
    batches: TensorBatches,
    runtime: Runtime,
    num_classes: int,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """metrics.score of a PixelClassifier on every batch: loss, accuracy, per-class accuracy, confusion matrix
    and throughput, under split-neutral names. reduce, if given, sums the counts over processes."""
    start = time.perf_counter()
    logits, labels = predict_logits(classifier, batches, runtime)
    return score(logits, labels, num_classes, time.perf_counter() - start, reduce)


def parameter_groups(
    model: nn.Module, weight_decay: float, lr: float, backbone_scale: float = 1.0, bn_scale: float = 1.0
) -> list[dict[str, Any]]:
    """Weight decay on conv and linear weights only; BN parameters and biases are not decayed. With a
    backbone_scale other than 1, every parameter but the head's (fc) trains at that fraction of lr. With a bn_scale
    other than 1 (airbench), BN parameters get a group of their own at that multiple of lr, decayed by the same
    share per step as the weights.

    Without either, the two groups are the ones every earlier last.pt has, so those runs still resume. Each group is
    named ("decay", "no_decay", "norm", prefixed "backbone." or "head." with a backbone_scale), for the resume."""
    named = list(model.named_parameters())
    parts = [(named, lr, "")]
    if backbone_scale != 1.0:
        parts = [
            ([(n, p) for n, p in named if not n.startswith(HEAD)], lr * backbone_scale, "backbone."),
            ([(n, p) for n, p in named if n.startswith(HEAD)], lr, "head."),
        ]
    norm = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    if bn_scale == 1.0:
        norm = set()
    groups = []
    for params, group_lr, part in parts:
        decayed = [p for _, p in params if p.ndim > 1]
        groups.append({"params": decayed, "weight_decay": weight_decay, "lr": group_lr, "name": f"{part}decay"})
        others = [p for _, p in params if p.ndim <= 1 and id(p) not in norm]
        groups.append({"params": others, "weight_decay": 0.0, "lr": group_lr, "name": f"{part}no_decay"})
        if norm:
            norms = [p for _, p in params if id(p) in norm]
            groups.append(
                {
                    "params": norms,
                    "weight_decay": weight_decay / bn_scale,
                    "lr": group_lr * bn_scale,
                    "name": f"{part}norm",
                }
            )
    return groups


# The optimizers a recipe names (Recipe.optimizer): each builds one from the parameter groups and the recipe.
OPTIMIZERS: dict[str, Callable[[list[dict[str, Any]], Recipe, float], torch.optim.Optimizer]] = {
    "sgd": lambda groups, recipe, lr: torch.optim.SGD(
        groups, lr=lr, momentum=recipe.momentum, nesterov=recipe.nesterov
    ),
    "adamw": lambda groups, recipe, lr: torch.optim.AdamW(groups, lr=lr, betas=(recipe.momentum, recipe.beta2)),
}


def build_optimizer(recipe: Recipe, groups: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    """The recipe's optimizer (OPTIMIZERS) over the parameter groups."""
    if recipe.optimizer not in OPTIMIZERS:
        raise ValueError(
            f"recipe {recipe.name}: optimizer must be one of {', '.join(OPTIMIZERS)}, not {recipe.optimizer!r}"
        )
    return OPTIMIZERS[recipe.optimizer](groups, recipe, lr)


def _one_cycle(recipe: Recipe, optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Warm-up from start_lr_factor of the peak, then a linear decay to end_lr_factor (Smith's one-cycle)."""
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[group["lr"] for group in optimizer.param_groups],
        total_steps=steps,
        pct_start=recipe.warmup_fraction,
        anneal_strategy="linear",
        div_factor=1 / recipe.start_lr_factor,
        final_div_factor=recipe.start_lr_factor / recipe.end_lr_factor,
        three_phase=False,
        cycle_momentum=recipe.cycle_momentum,
    )


def _step(recipe: Recipe, optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The lr divided by 10 at each of the milestones (fractions of all steps)."""
    milestones = [round(fraction * steps) for fraction in recipe.milestones]
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)


def _cosine(recipe: Recipe, optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """A linear warm-up from start_lr_factor of the peak over warmup_fraction of the steps, then a cosine decay to
    end_lr_factor of it at the last step."""
    warmup, start, end = round(recipe.warmup_fraction * steps), recipe.start_lr_factor, recipe.end_lr_factor

    def factor(step: int) -> float:
        if step < warmup:
            return start + (1 - start) * step / warmup
        done = min((step - warmup) / max(steps - 1 - warmup, 1), 1.0)
        return end + (1 - end) * (1 + math.cos(math.pi * done)) / 2

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# The schedules a recipe names (Recipe.schedule), each over all steps of the run, every group peaking at its lr.
SCHEDULES: dict[str, Callable[[Recipe, torch.optim.Optimizer, int], torch.optim.lr_scheduler.LRScheduler]] = {
    "onecycle": _one_cycle,
    "step": _step,
    "cosine": _cosine,
}


def build_scheduler(recipe: Recipe, optimizer: torch.optim.Optimizer, steps: int):
    """The recipe's schedule (SCHEDULES) over `steps`, each parameter group peaking at the lr it was given."""
    if recipe.schedule not in SCHEDULES:
        raise ValueError(
            f"recipe {recipe.name}: schedule must be one of {', '.join(SCHEDULES)}, not {recipe.schedule!r}"
        )
    return SCHEDULES[recipe.schedule](recipe, optimizer, steps)


def fit(job: Job, progress: Progress, recorder: RunRecorder, should_stop: Callable[[], bool]) -> Progress:
    """Train from `progress` to the last epoch, evaluating after each (or every eval_every-th and the last); the
    recorder writes what each epoch gives (and, on an interrupt, saves last.pt and raises Interrupted)."""
    started, before = time.perf_counter(), progress.elapsed
    epoch = progress.epoch
    timed = BudgetClock() if job.budget is not None and not job.dist.enabled else None  # --time-budget
    while epoch < job.epochs:  # a time budget may change job.epochs
        epoch += 1
        epoch_start = time.perf_counter()
        job.train_batches.set_epoch(epoch, progress.step)
        with recorder.progress_bar(epoch, job.epochs, len(job.train_batches)) as bar:
            stats = train_one_epoch(
                job.train_module,
                job.train_batches,
                job.optimizer,
                job.scheduler,
                job.runtime,
                job.label_smoothing,
                bar,
                should_stop,
                progress.totals,
                job.lookahead,
                job.class_weights,
            )
        elapsed = before + time.perf_counter() - started
        if stats["interrupted"]:
            recorder.interrupted(job, replace(progress, step=stats["steps"], totals=stats["totals"], elapsed=elapsed))
        stats = job.dist.reduce_train_stats(stats)
        job.dist.sync_buffers(job.net)
        reduce = job.dist.all_reduce_sum if job.dist.enabled else None
        test = {"test_loss": None, "test_accuracy": None}  # not evaluated after this epoch (--eval-every)
        if job.evaluates_after(epoch):
            test = with_prefix(
                evaluate(job.evaluator, job.test_batches, job.runtime, job.card.num_classes, reduce), "test"
            )
            test["test_balanced_accuracy"] = balanced_accuracy(test["per_class_accuracy"])
        row = {
            "epoch": epoch,
            "train_loss": round(stats["train_loss"], 6),
            "train_accuracy": round(stats["train_accuracy"], 6),
            "test_loss": _rounded(test["test_loss"]),
            "test_accuracy": _rounded(test["test_accuracy"]),
            "lr": stats["lr"],
            "seconds": round(time.perf_counter() - epoch_start, 2),
        }
        if job.select_balanced:
            row["test_balanced_accuracy"] = _rounded(test.get("test_balanced_accuracy"))
        improved = is_better(row, progress.rows, progress.best_epoch, progress.best_accuracy, job.select_balanced)
        best = (test["test_accuracy"], epoch) if improved else (progress.best_accuracy, progress.best_epoch)
        progress = Progress(epoch, 0, None, [*progress.rows, row], *best, elapsed)
        recorder.epoch_end(job, progress, row, improved, stats["train_images_per_second"])
        job.dist.barrier()
        if timed is not None and epoch > 1:  # the first epoch carries one-time costs
            timed.add(time.perf_counter() - epoch_start, test.get("seconds"))
            if epoch < job.epochs:
                _replan_for_budget(job, recorder, epoch, timed)
        if job.patience and evaluations_since_best(progress.rows, progress.best_epoch) >= job.patience:
            best_row = next(r for r in progress.rows if r["epoch"] == progress.best_epoch)
            score = score_of(best_row, job.select_balanced)
            recorder.say(
                "note: "
                + patience_note(epoch, job.epochs, job.patience, progress.best_epoch, score, job.select_balanced)
            )
            break
    return replace(progress, elapsed=before + time.perf_counter() - started)


def _replan_for_budget(job: Job, recorder: RunRecorder, done: int, timed: BudgetClock) -> None:
    """--time-budget, after epoch `done`: the epochs that fit the time left, at the times measured since the first
    epoch; where the plan should change (stopping.replans), the schedule is built again for them and stepped to where
    the run is (as a resume with another --epochs does), and last.pt records the new length."""
    left = job.budget.deadline - time.perf_counter()
    train_seconds, eval_seconds = timed.train_seconds, timed.eval_seconds(job.budget)
    epochs = epochs_after(done, left, train_seconds, eval_seconds, job.eval_every, job.budget.cap)
    if not replans(job.epochs, epochs, first=timed.epochs == 1):
        return
    planned = job.epochs
    job.respan(epochs, lambda steps: build_scheduler(recorder.config.recipe_settings, job.optimizer, steps))
    recorder.config = replace(recorder.config, epochs=epochs)
    timed.changes += 1
    if timed.changes == 1:  # later changes show in the epoch counter only: runs of short epochs make several
        recorder.say(f"note: {replan_note(done, planned, epochs, train_seconds, eval_seconds, left)}")


def calibrate(job: Job, recorder: RunRecorder) -> dict[str, Any] | None:
    """Temperature scaling (Guo et al. 2017; confidence.py) of best.pt, fitted on its logits of the held-out
    images; best.pt's card keeps the temperature. Returns the report (ECE before and after), None without best.pt."""
    weights = recorder.best_weights()
    if weights is None:
        return None
    job.net.load_state_dict(weights)  # training is over; last.pt keeps the last epoch's weights
    logits, labels = predict_logits(job.evaluator, job.test_batches, job.runtime)
    report = calibration(job.dist.gather(logits), job.dist.gather(labels))
    recorder.calibrated(report)
    return report


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


class _StopRequests:
    """Turns SIGINT and SIGTERM into a flag the training loop checks between steps."""

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signal_number: int, frame: Any) -> None:
        if self.signal_number is not None and signal_number == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signal_number = signal_number

    def __call__(self) -> bool:
        return self.signal_number is not None

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def resume_config(out: str | Path, requested: TrainConfig | None = None) -> tuple[TrainConfig, dict[str, Any]]:
    """The configuration and training state saved in OUT/last.pt, to continue that run.

    `requested`: the config the command line built; the fields it gives (those not at TrainConfig's defaults) are
    applied where a resumed run can take them (RESUME_APPLIES, RESUME_RUNS_ON), and refused in one sentence where it
    cannot. The state then carries `notes`: what changed, for the start of training."""
    out = Path(out)
    if not (out / "last.pt").is_file():
        raise UserError(f"{out} has no last.pt to resume from; give the --out folder of an earlier run.")
    checkpoint = load_checkpoint(out / "last.pt")
    if checkpoint.train_state is None or checkpoint.config is None:
        raise UserError(f"{out / 'last.pt'} has no training state to resume from; train again instead.")
    config = replace(TrainConfig.from_dict(checkpoint.config), out=str(out), overwrite=True)
    state = {"epochs": config.epochs, **checkpoint.train_state}  # the length the schedule was planned for
    if requested is None:
        return config, state
    config, notes = _resumed_with(config, requested, state["epoch"])
    _refuse_a_run_stopped_early(out, config, state)
    return config, {**state, "notes": notes}


def _refuse_a_run_stopped_early(out: Path, config: TrainConfig, state: dict[str, Any]) -> None:
    """A run that --patience stopped has finished: resuming it needs a larger --patience (counted from its best
    epoch, over the evaluations it made), or it would stop again after its next evaluation."""
    waited = evaluations_since_best(state["rows"], state["best_epoch"])
    if config.patience and state["epoch"] < config.epochs and state["step"] == 0 and waited >= config.patience:
        raise UserError(
            f"{out} stopped early at epoch {state['epoch']}: no better held-out score in {waited} evaluations "
            f"(--patience {config.patience}); give --patience above {waited} to train it on, or use its best.pt."
        )


# What a resumed run takes from the command line: how long it trains and how it evaluates (said in a note), and where
# and how it runs; every other setting is the run's own (refused when given otherwise: it would train another run).
RESUME_APPLIES = ("epochs", "eval_every", "tta", "patience")
RESUME_RUNS_ON = ("device", "precision", "quiet", "cache_dir", "tensorboard", "overwrite")
_EFFECTIVE = {
    "batch_size": "effective_batch_size",
    "lr": "effective_lr",
    "recipe": "recipe_name",
    "augment": "effective_augment",
    "tta": "effective_tta",
}


def _flag(field: str, value: Any) -> str:
    name = "--" + field.replace("_", "-")
    if isinstance(value, bool):
        return name if value else f"--no-{field}" if field == "augment" else f"no {name}"
    return f"{name} {'none' if value is None else value}"


def _resumed_with(run: TrainConfig, requested: TrainConfig, done: int) -> tuple[TrainConfig, list[str]]:
    """`run` with the fields `requested` gives that a resumed run can take, and notes on what changes; a UserError
    for a field it cannot take (the model, the data, the batch size, the recipe, ...)."""
    default, out = TrainConfig(), run.out
    given = {f: getattr(requested, f) for f in TrainConfig.__dataclass_fields__}
    given = {f: v for f, v in given.items() if v != getattr(default, f)}

    def differs(field: str) -> bool:
        if field in ("data_dir", "out"):
            return Path(given[field]).resolve() != Path(getattr(run, field)).resolve()
        if field == "recipe":  # a former name (RECIPE_ALIASES) is the same recipe
            return requested.recipe_name != run.recipe_name
        return given[field] != getattr(run, _EFFECTIVE.get(field, field))

    fixed = [f for f in given if f not in RESUME_APPLIES + RESUME_RUNS_ON and differs(f)]
    if fixed:
        shown = ", ".join(
            f"{_flag(f, given[f])} (the run's: {_flag(f, getattr(run, _EFFECTIVE.get(f, f)))})" for f in fixed
        )
        raise UserError(
            f"--resume {out} goes on with the run's own settings, which cannot change: {shown}; leave "
            f"{'it' if len(fixed) == 1 else 'them'} out, or train a new run into another --out."
        )
    notes = []
    if given.get("epochs", run.epochs) != run.epochs:
        if given["epochs"] <= done:
            raise UserError(
                f"{out} has already trained {done} epochs; give --epochs above {done} to train it longer, or leave "
                "--epochs out."
            )
        notes.append(_longer_note(run, given["epochs"]))
    later = [f for f in ("eval_every", "tta", "patience") if f in given and differs(f)]
    if later:
        notes.append(
            f"{' and '.join(_flag(f, given[f]) for f in later)} apply from epoch {done + 1} on; the epochs before were "
            "evaluated as the run began"
        )
    changes = {
        f: v for f, v in given.items() if f in RESUME_APPLIES + RESUME_RUNS_ON and f not in ("overwrite", "quiet")
    }
    return replace(run, **changes, quiet=requested.quiet), notes  # quiet: what this command prints


def _longer_note(run: TrainConfig, epochs: int) -> str:
    recipe = run.recipe_settings
    if recipe.schedule == "step":
        how = "its learning rate is now divided by 10 at " + " and ".join(f"{m:.0%}" for m in recipe.milestones) + " of"
    else:
        how = "its one-cycle schedule (warm-up, then decay to the end) is planned again for"
    return (
        f"--epochs {epochs}: the run was planned for {run.epochs} epochs; {how} {epochs} epochs, and goes on from "
        "the step it reached with the learning rate of the new plan there (higher than where the old plan had it, "
        "when the run is longer)"
    )


def _resumed_on(state: dict[str, Any], train_data: ImageData) -> list[str]:
    """A note when the training data differs from what the run began on (last.pt records digests of its classes and
    of the files held out, and the number of training images); a UserError when its classes differ."""
    saved = state.get("data")
    if saved is None:  # a last.pt written before it was recorded
        return []
    source = train_data.source
    if names_digest(train_data.classes) != saved["class_names"]:
        shown = ", ".join(train_data.classes[:5]) + (", ..." if len(train_data.classes) > 5 else "")
        raise UserError(
            f"the data in {source} now has the classes {shown}, not the ones this run trained on; give the data it "
            "began on, or train a new run."
        )
    changes = []
    if len(train_data) != saved["train_images"]:
        changes.append(f"{len(train_data)} training images now, {saved['train_images']} then")
    if names_digest(train_data.holdout) != saved["held_out"]:
        changes.append("other images held out for validation")
    if not changes:
        return []
    changed = "; ".join(changes)
    return [f"the data in {source} changed since this run began ({changed}); it goes on with the files as they are now"]


def _model_name(config: TrainConfig, start: Start | None = None) -> str:
    name = (
        start.architecture
        if start
        else config.model or config.recipe_settings.model or get_spec(config.dataset).default_model
    )
    if name not in list_models():
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}.")
    return name


def train(
    config: TrainConfig,
    on_epoch: EpochCallback | None = None,
    resume_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a model as `config` says, writing best.pt, last.pt, metrics.csv and summary.json into the run
    folder. Returns the summary. on_epoch(row, model) is called after each epoch with its metrics.csv row and
    the network. With resume_state (from `resume_config`), continues that run.

    Under torchrun, each process trains on its own shard with DistributedDataParallel; metrics are summed
    over processes and only the first process writes files."""
    config.validate()
    began, spec = time.perf_counter(), get_spec(config.dataset)
    start = starting_point(config)  # before the data: a missing weights file is told at once
    few_photos = None
    if not spec.classes and resume_state is None:
        found = survey(Path(config.data_dir), Holdout(config.val_split, config.seed))
        config, few_photos = config.for_few_photos(found.images, found.short_side)
    model_name = _model_name(config, start)
    image_size = config.image_size or (start.image_size_for(spec.image_size) if start else None)
    runtime = select_runtime(config.device, config.precision)
    dist = distributed.setup(runtime.device.type)
    try:
        out = choose_out_dir(config.out, config.dataset, model_name, config.overwrite or resume_state is not None)
        torch.manual_seed(config.seed)
        train_data, test_data = load_train_test(
            config.dataset,
            config.data_dir,
            image_size,
            config.subset,
            config.test_subset,
            config.seed,
            config.val_split,
            config.cache_dir,
            config.skip_bad,
        )
        given_epochs = config.epochs
        config, sizing = config.sized_for(len(train_data), folder=not spec.classes)
        budget = None
        if config.time_budget and resume_state is None:  # a resumed run goes on with the epochs it planned
            config, planned, budget = _plan_for_budget(
                config, given_epochs, model_name, train_data, test_data, runtime, start, began
            )
            sizing = "; ".join(filter(None, [sizing, planned]))
        changed = _resumed_on(resume_state, train_data) if resume_state is not None else []
        job = build_job(
            config, model_name, train_data, test_data, runtime, dist, start, _saved_backbone_scale(resume_state)
        )
        job.budget = budget
        progress = job.restore(resume_state) if resume_state is not None else Progress()
        recorder = RunRecorder(out, job.card, config, main=dist.is_main, on_epoch=on_epoch)
        notes = train_data.notes + [note for note in (few_photos, sizing) if note and resume_state is None]
        notes += [_start_note(start, job.card, train_data.channels)] if start else []
        notes += changed + (resume_state or {}).get("notes", [])
        notes += (
            [f"recipe {config.recipe} is now called {config.recipe_name}"] if config.recipe in RECIPE_ALIASES else []
        )
        if job.select_balanced and resume_state is None:
            counts = class_counts(train_data.labels, job.card.num_classes)
            notes.append(selection_note(counts, job.card.classes, config.balance))
        recorder.start(_describe_start(config, job, progress, train_data, test_data), notes, train_data.skipped)
        with _StopRequests() as stop_requested:
            should_stop = (lambda: dist.broadcast_flag(stop_requested())) if dist.enabled else stop_requested
            recorder.stop_signal = lambda: stop_requested.signal_number or signal.SIGINT
            progress = fit(job, progress, recorder, should_stop)
        return recorder.finish(
            {**_summary(recorder.config, job, progress, out, len(test_data)), "calibration": calibrate(job, recorder)}
        )
    finally:
        distributed.teardown(dist)


def _plan_for_budget(
    config: TrainConfig,
    given_epochs: int | None,
    model_name: str,
    train_data: ImageData,
    test_data: ImageData,
    runtime: Runtime,
    start: Start | None,
    began: float,
) -> tuple[TrainConfig, str, Budget]:
    """--time-budget: config with the epochs that fit the minutes left, the note that says so, and the budget to plan
    again after each epoch. A one-cycle (or any) schedule needs its length before the first step, so a few
    steps of a throw-away job are timed first, and the evaluation of a few hundred held-out images; the run's own
    weights then start as they would have without it.
    began: when the command began (time.perf_counter), as the budget counts the loading too."""
    probe = build_job(config, model_name, train_data, test_data, runtime, Distributed(), start)
    step_seconds = _seconds_per_step(probe)
    sample = test_data.select(slice(0, min(len(test_data), 2 * TEST_BATCH_SIZE)))
    eval_start = time.perf_counter()
    predict_logits(probe.evaluator, TensorBatches(sample, TEST_BATCH_SIZE, device=runtime.device), runtime)
    eval_seconds = (time.perf_counter() - eval_start) * len(test_data) / max(len(sample), 1)
    steps = len(probe.train_batches)
    del probe
    torch.manual_seed(config.seed)
    spent = time.perf_counter() - began
    eval_every = config.eval_every or eval_every_within(eval_seconds, step_seconds * steps)
    epochs, per_epoch = epochs_within(
        config.time_budget * 60 - spent, step_seconds * steps, eval_seconds, eval_every, given_epochs
    )
    chosen = None if config.eval_every else (eval_every, eval_seconds)
    note = budget_note(config.time_budget, epochs, per_epoch, step_seconds, spent, config.epochs, given_epochs, chosen)
    budget = Budget(began + config.time_budget * 60, eval_seconds, given_epochs)
    return replace(config, epochs=epochs, eval_every=eval_every if eval_every > 1 else config.eval_every), note, budget


def _seconds_per_step(job: Job, warmup: int = 2, timed: int = 8) -> float:
    """The seconds of one training step (forward, backward, optimizer step), timed over `timed` steps after `warmup`
    steps, on as many passes over the training batches as that takes."""
    job.train_module.train()
    done, start, epoch = 0, 0.0, 0
    while done < warmup + timed:
        epoch += 1
        job.train_batches.set_epoch(epoch, 0)
        for images, y in job.train_batches:
            if done == warmup:
                start = time.perf_counter()
            with job.runtime.autocast():
                loss = F.cross_entropy(job.train_module(images).float(), y, weight=job.class_weights)
            job.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            job.optimizer.step()
            loss.item()  # waits for the device
            done += 1
            if done == warmup + timed:
                break
    return (time.perf_counter() - start) / timed


def _with_start_channels(
    train_data: ImageData, test_data: ImageData, start: Start | None
) -> tuple[ImageData, ImageData]:
    """Both splits with the channels the starting weights take: grayscale repeated into RGB for RGB weights."""
    if start is None or start.in_channels == train_data.channels:
        return train_data, test_data
    if start.in_channels == 1:
        raise UserError(
            f"--init {start.source} takes grayscale images, but {train_data.source} holds color ones; "
            "start from a checkpoint trained on color images, or train without --init."
        )
    return train_data.with_channels(start.in_channels), test_data.with_channels(start.in_channels)


def _card(config: TrainConfig, model_name: str, train_data: ImageData, start: Start | None) -> ModelCard:
    """What the run's model will promise: the data's classes and size; the starting weights' options, channels
    and, for ImageNet weights, normalization; otherwise the data's own."""
    spec, tta = get_spec(config.dataset), config.effective_tta
    return ModelCard(
        architecture=model_name,
        classes=tuple(train_data.classes),
        in_channels=train_data.channels,
        image_size=train_data.image_size,
        mean=tuple(start.mean if start and start.mean else train_data.mean),
        std=tuple(start.std if start and start.std else train_data.std),
        test_time_flip=tta != "none" and spec.hflip,
        test_time_translate=tta == "translate",
        shortcut=start.shortcut if start else config.shortcut,
        stem=start.stem if start else None,
        dataset=config.dataset,
        data_dir=str(Path(config.data_dir).resolve()),
        holdout=train_data.holdout,
    )


def build_job(
    config: TrainConfig,
    model_name: str,
    train_data: ImageData,
    test_data: ImageData,
    runtime: Runtime,
    dist: Distributed,
    start: Start | None = None,
    backbone_scale: float | None = None,
) -> Job:
    """The network, its card, batches, optimizer and schedule for a run; with `start`, the network begins from those
    weights and its backbone trains at backbone_scale (default FINE_TUNE_BACKBONE_LR) of the head's learning
    rate."""
    spec, recipe = get_spec(config.dataset), config.recipe_settings
    train_data, test_data = _with_start_channels(train_data, test_data, start)
    card = _card(config, model_name, train_data, start)
    try:
        net = card.build_model()
    except ValueError as e:
        raise UserError(f"{e}; choose another --model or --image-size.") from None
    card = replace(card, shortcut=net.shortcut, stem=net.stem)  # the defaults it was built with, for the record
    if start is not None:
        initialize(net, card, start)
    else:  # the model's data-dependent set-up (resnet9w's whitening stem); a resumed run then loads its own weights
        net.prepare(lambda: PixelClassifier(net, card.mean, card.std).prepare(_prepare_sample(train_data, config)))
    net = net.to(runtime.device, memory_format=runtime.memory_format)
    batch_size = config.effective_batch_size
    if batch_size % dist.world_size:
        raise UserError(f"--batch-size {batch_size} must be divisible by the {dist.world_size} processes.")
    train_batches = TensorBatches(
        train_data,
        batch_size // dist.world_size,
        shuffle=True,
        augment=config.effective_augment,
        crop_padding=(recipe.translate_pixels or spec.crop_padding) if recipe.translate else 0,
        crop_scale=recipe.crop_scale,
        jitter=recipe.jitter,
        hflip=spec.hflip,
        reflect=recipe.reflect,
        alternate_flips=recipe.alternate_flips,
        drop_last=len(train_data) > batch_size,
        seed=config.seed,
        rank=dist.rank,
        world_size=dist.world_size,
        device=runtime.device,
    )
    test_batches = TensorBatches(dist.shard(test_data), TEST_BATCH_SIZE, device=runtime.device)
    classifier = PixelClassifier(net, card.mean, card.std, memory_format=runtime.memory_format).to(runtime.device)
    evaluator = PixelClassifier.from_card(net, card, memory_format=runtime.memory_format).to(runtime.device)
    if backbone_scale is None:
        backbone_scale = FINE_TUNE_BACKBONE_LR if start is not None else 1.0
    groups = parameter_groups(net, recipe.weight_decay, config.effective_lr, backbone_scale, recipe.bn_lr_scale)
    optimizer = build_optimizer(recipe, groups, config.effective_lr)
    steps = config.epochs * len(train_batches)
    scheduler = build_scheduler(recipe, optimizer, steps)
    lookahead = None
    if recipe.lookahead:
        lookahead = Lookahead(net, steps, recipe.lookahead_every, recipe.lookahead_decay, recipe.lookahead_power)
    counts = class_counts(train_data.labels, card.num_classes)
    weights = class_weights(counts).to(runtime.device) if config.balance else None
    return Job(
        card,
        net,
        dist.wrap(classifier, runtime.device),
        evaluator,
        train_batches,
        test_batches,
        optimizer,
        scheduler,
        runtime,
        dist,
        config.epochs,
        recipe.label_smoothing,
        lookahead,
        config.eval_every or 1,
        weights,
        is_imbalanced(counts) and not spec.classes,  # folders: the named datasets keep their accuracy
        config.patience,
    )


def _prepare_sample(train_data: ImageData, config: TrainConfig) -> torch.Tensor:
    """The training images (uint8) a model's data-dependent set-up sees: the recipe's prepare_images of them,
    drawn with the seed (airbench: 5,000)."""
    return train_data.sample(config.recipe_settings.prepare_images, config.seed).images


def _saved_backbone_scale(state: dict[str, Any] | None) -> float | None:
    """The backbone's share of the learning rate in the run that `state` resumes: its "backbone.decay" group's
    against its "head.decay" group's (parameter_groups). Runs saved before the groups were named, when fine-tuning
    trained the backbone at 0.1x, have four unnamed groups, the backbone's first and the head's last."""
    if state is None:
        return None
    groups = state["optimizer"]["param_groups"]
    rates = {group["name"]: group["initial_lr"] for group in groups if "name" in group}
    if rates:
        return rates["backbone.decay"] / rates["head.decay"] if "head.decay" in rates else 1.0
    return groups[0]["initial_lr"] / groups[-1]["initial_lr"] if len(groups) == 4 else 1.0


def _start_note(start: Start, card: ModelCard, data_channels: int) -> str:
    gray = ", grayscale images repeated into RGB" if data_channels < card.in_channels else ""
    return f"{start.describe_weights(card.classes)}{gray}; {fine_tune_rates()}"


def _describe_start(
    config: TrainConfig, job: Job, progress: Progress, train_data: ImageData, test_data: ImageData
) -> str:
    card, batch = job.card, config.effective_batch_size
    if progress.epoch or progress.step:
        action = f"resuming at epoch {progress.epoch + 1}" + (f" step {progress.step}" if progress.step else "")
    else:
        action = "training"
    processes = f", {job.dist.world_size} processes" if job.dist.enabled else ""
    return (
        f"{action} {card.architecture} ({count_parameters(job.net) / 1e6:.2f}M parameters) on {config.dataset}: "
        f"{len(train_data)} train / {len(test_data)} test images, {card.num_classes} classes, "
        f"{card.in_channels}x{card.image_size}x{card.image_size}; {config.epochs} epochs, batch {batch}, "
        f"recipe {config.recipe_name}, {job.runtime.runs_on}{processes}"
    )


def _stopping_summary(config: TrainConfig, job: Job, progress: Progress) -> dict[str, Any]:
    """How best.pt was chosen and how long the run trained: --balance, --patience, --time-budget."""
    best_row = next((row for row in progress.rows if row["epoch"] == progress.best_epoch), {})
    balanced = {"best_test_balanced_accuracy": best_row.get("test_balanced_accuracy")} if job.select_balanced else {}
    return {
        "selected_by": "test_balanced_accuracy" if job.select_balanced else "test_accuracy",
        **balanced,
        "balance": config.balance,
        "patience": config.patience,
        "stopped_early": progress.epoch < job.epochs,
        "time_budget_minutes": config.time_budget,
        "epochs_planned": job.epochs,
        "epochs_run": progress.epoch,
    }


def _summary(config: TrainConfig, job: Job, progress: Progress, out: Path, test_images: int) -> dict[str, Any]:
    """summary.json: the run's settings and results; each accuracy with its 95% interval below 10,000 images."""
    final = progress.rows[-1]["test_accuracy"]
    return {
        "model": job.card.architecture,
        "dataset": config.dataset,
        "recipe": config.recipe_name,
        "epochs": config.epochs,
        "best_test_accuracy": progress.best_accuracy,
        "best_test_accuracy_ci95": accuracy_interval(round(progress.best_accuracy * test_images), test_images),
        "best_epoch": progress.best_epoch,
        "final_test_accuracy": final,
        "final_test_accuracy_ci95": None
        if final is None
        else accuracy_interval(round(final * test_images), test_images),
        "test_images": test_images,
        **_stopping_summary(config, job, progress),
        "train_seconds": round(progress.elapsed, 2),
        "num_params": count_parameters(job.net),
        "batch_size": config.effective_batch_size,
        "lr": config.effective_lr,
        "device": job.runtime.device.type,
        "precision": job.runtime.precision,
        "processes": job.dist.world_size,
        "torch": torch.__version__,
        "out": str(out),
    }
