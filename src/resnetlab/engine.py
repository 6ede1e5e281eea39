"""Training and evaluation: plain functions that return metric dicts, and `train` that runs a whole job."""

from __future__ import annotations

import csv
import json
import math
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import __version__, distributed
from .checkpoint import FORMAT, VERSION, describe_model, save_atomic
from .config import RECIPES, Recipe, TrainConfig
from .data import ImageData, TensorBatches, get_spec, load_split
from .errors import Interrupted, UserError
from .models import count_parameters, create_model, list_models
from .plots import training_curves
from .runtime import Runtime, select_runtime
from .tensorboard_log import TensorBoardLog

METRICS_COLUMNS = ["epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr", "seconds"]


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
) -> dict[str, float]:
    """One pass over the training batches (from batches.start_step on). Returns the mean loss, accuracy and
    throughput, and the running totals. Stops early, with interrupted=True, when should_stop() says so."""
    model.train()
    totals = dict(totals or {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0})
    total_loss = torch.tensor(totals["loss_sum"], dtype=torch.float64)
    correct = torch.tensor(totals["correct"], dtype=torch.int64)
    seen = int(totals["seen"])
    step = batches.start_step
    interrupted = False
    last_lr = optimizer.param_groups[0]["lr"]
    start = time.perf_counter()
    if progress is not None:
        progress.update(step)
    for x, y in batches:
        if should_stop is not None and should_stop():
            interrupted = True
            break
        with runtime.autocast():
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        loss = loss.detach()
        if not torch.isfinite(loss):
            raise UserError(
                f"the training loss became {loss.item()} at step {step + 1}; lower the learning rate (--lr) and "
                "train again."
            )
        optimizer.step()
        last_lr = optimizer.param_groups[0]["lr"]  # the rate this step used; the scheduler moves on below
        scheduler.step()
        total_loss += loss.double() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        step += 1
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
    model: nn.Module, batches: TensorBatches, runtime: Runtime, flip: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (fp32) and labels for every batch; with flip, averaged with the mirrored image's logits."""
    model.eval()
    outputs, labels = [], []
    for x, y in batches:
        with runtime.autocast():
            logits = model(x).float()
            if flip:
                logits = (logits + model(x.flip(3)).float()) / 2
        outputs.append(logits.cpu())
        labels.append(y.cpu())
    return torch.cat(outputs), torch.cat(labels)


def evaluate(
    model: nn.Module,
    batches: TensorBatches,
    runtime: Runtime,
    num_classes: int,
    flip: bool = False,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Test loss and accuracy, per-class accuracy, the confusion matrix and throughput.

    reduce, if given, sums the counts over processes (each process evaluating its own shard)."""
    start = time.perf_counter()
    logits, labels = predict_logits(model, batches, runtime, flip)
    return score(logits, labels, num_classes, time.perf_counter() - start, reduce)


def score(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    seconds: float,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """The statistics `evaluate` returns, from logits and labels that took `seconds` to compute."""
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
        "test_loss": sums[-1].item() / max(count, 1),
        "test_accuracy": confusion.diag().sum().item() / max(count, 1),
        "per_class_accuracy": [a if n else float("nan") for a, n in zip(per_class.tolist(), per_class_total.tolist())],
        "confusion_matrix": confusion.tolist(),
        "images": count,
        "images_per_second": len(labels) / seconds,
        "seconds": seconds,
    }


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv and linear weights only; BN parameters and biases are not decayed."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        (decay if parameter.ndim > 1 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _new_run_dir(base: str) -> Path:
    path, n = Path(base), 2
    while path.exists():
        path, n = Path(f"{base}-{n}"), n + 1
    return path


def choose_out_dir(config: TrainConfig, model_name: str) -> Path:
    """The run folder: --out, or a fresh runs/<dataset>-<model>[-N]. Never silently replaces a best.pt."""
    if config.out is None:
        out = _new_run_dir(f"runs/{config.dataset}-{model_name}")
    else:
        out = Path(config.out)
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} is a file; give a folder for the run's files.")
        if (out / "best.pt").exists() and not config.overwrite:
            raise UserError(
                f"{out} already holds a trained run (best.pt); choose another --out, or pass --overwrite to "
                "replace it."
            )
    return out


def create_out_dir(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to the output folder {out} ({e.strerror}); choose another --out.") from None
    return out


def _validate(config: TrainConfig) -> tuple[Recipe, str]:
    spec = get_spec(config.dataset)
    if config.recipe not in RECIPES:
        raise UserError(f"unknown recipe {config.recipe!r}; choose one of: {', '.join(RECIPES)}.")
    model_name = config.model or spec.default_model
    if model_name not in list_models():
        raise UserError(f"unknown model {model_name!r}; choose one of: {', '.join(list_models())}.")
    if config.epochs < 1:
        raise UserError(f"--epochs must be at least 1, not {config.epochs}.")
    if config.batch_size is not None and config.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, not {config.batch_size}.")
    if config.lr is not None and not (0 < config.lr < 100 and math.isfinite(config.lr)):
        raise UserError(f"--lr must be a positive number below 100, not {config.lr}.")
    if config.image_size is not None and not 8 <= config.image_size <= 1024:
        raise UserError(f"--image-size must be between 8 and 1024 pixels, not {config.image_size}.")
    if config.subset is not None and config.subset < 1:
        raise UserError(f"--subset must be at least 1, not {config.subset}.")
    if config.test_subset is not None and config.test_subset < 1:
        raise UserError(f"--test-subset must be at least 1, not {config.test_subset}.")
    if config.shortcut not in (None, "A", "B"):
        raise UserError(f"--shortcut must be A or B, not {config.shortcut!r}.")
    return RECIPES[config.recipe], model_name


def load_train_test(config: TrainConfig) -> tuple[ImageData, ImageData]:
    train_data = load_split(config.dataset, config.data_dir, train=True, image_size=config.image_size)
    test_data = load_split(config.dataset, config.data_dir, train=False, image_size=config.image_size)
    if test_data.classes != train_data.classes:
        raise UserError("the train and test splits have different classes; make them match.")
    if config.subset is not None and config.subset < len(train_data):
        keep = torch.randperm(len(train_data), generator=torch.Generator().manual_seed(config.seed))[: config.subset]
        train_data = replace(train_data, images=train_data.images[keep], labels=train_data.labels[keep])
    if config.test_subset is not None and config.test_subset < len(test_data):
        keep = torch.randperm(len(test_data), generator=torch.Generator().manual_seed(config.seed))
        keep = keep[: config.test_subset]
        test_data = replace(test_data, images=test_data.images[keep], labels=test_data.labels[keep])
    # The test split is normalized with the statistics of the training split.
    return train_data, replace(test_data, mean=train_data.mean, std=train_data.std)


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRICS_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, flush=True)


class _StopRequests:
    """Turns SIGINT and SIGTERM into a flag the training loop checks between steps."""

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopRequests":
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


def _save(obj: Any, path: Path) -> None:
    try:
        save_atomic(obj, path)
    except OSError as e:
        raise UserError(
            f"could not write {path} ({e.strerror or e}); free some space or choose another --out (the files "
            "saved before are intact)."
        ) from None


def _build_scheduler(recipe: Recipe, optimizer: torch.optim.Optimizer, lr: float, steps: int):
    if recipe.schedule == "step":
        milestones = [round(fraction * steps) for fraction in recipe.milestones]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=steps, pct_start=recipe.warmup_fraction, anneal_strategy="linear",
        div_factor=10.0, final_div_factor=100.0, three_phase=False,
    )  # fmt: skip


def resume_config(out: str | Path) -> tuple[TrainConfig, dict[str, Any]]:
    """The configuration and training state saved in OUT/last.pt, to continue that run."""
    from .checkpoint import load_checkpoint

    out = Path(out)
    if not (out / "last.pt").is_file():
        raise UserError(f"{out} has no last.pt to resume from; give the --out folder of an earlier run.")
    checkpoint = load_checkpoint(out / "last.pt")
    if "train_state" not in checkpoint or "config" not in checkpoint:
        raise UserError(f"{out / 'last.pt'} has no training state to resume from; train again instead.")
    fields = set(TrainConfig.__dataclass_fields__)
    config = TrainConfig(**{k: v for k, v in checkpoint["config"].items() if k in fields})
    return replace(config, out=str(out), overwrite=True), checkpoint["train_state"]


def train(
    config: TrainConfig,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    resume_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a model as `config` says, writing best.pt, last.pt, metrics.csv and summary.json into the run
    folder. Returns the summary. With resume_state (from `resume_config`), continues that run.

    Under torchrun, each process trains on its own shard with DistributedDataParallel; metrics are summed
    over processes and only the first process writes files."""
    recipe, model_name = _validate(config)
    runtime = select_runtime(config.device, config.precision)
    dist = distributed.setup(runtime.device.type)
    try:
        return _train(config, recipe, model_name, runtime, dist, on_epoch, resume_state)
    finally:
        distributed.teardown(dist)


def _train(config, recipe, model_name, runtime, dist, on_epoch, resume_state) -> dict[str, Any]:
    spec = get_spec(config.dataset)
    main = dist.is_main
    quiet = config.quiet or not main
    out = choose_out_dir(config, model_name) if resume_state is None else Path(config.out)
    torch.manual_seed(config.seed)

    train_data, test_data = load_train_test(config)
    num_classes, in_channels = len(train_data.classes), train_data.channels
    image_size = train_data.image_size
    options = {"shortcut": config.shortcut} if config.shortcut else {}
    net = create_model(model_name, num_classes, in_channels, image_size=image_size, **options)
    model_spec = describe_model(model_name, num_classes, in_channels, net)
    net = net.to(runtime.device, memory_format=runtime.memory_format)
    if main:
        create_out_dir(out)
    tensorboard = TensorBoardLog(out / "tensorboard") if config.tensorboard and main else None

    batch_size = config.batch_size or recipe.batch_size
    if batch_size % dist.world_size:
        raise UserError(f"--batch-size {batch_size} must be divisible by the {dist.world_size} processes.")
    # Linear scaling of the recipe's peak lr with the batch size (Goyal et al. 2017).
    lr = config.lr or recipe.lr * batch_size / recipe.batch_size
    flip_ok = spec.hflip
    local_batch = batch_size // dist.world_size
    train_batches = TensorBatches(
        train_data, local_batch, shuffle=True,
        augment=recipe.augment if config.augment is None else config.augment,
        crop_padding=spec.crop_padding if recipe.translate else 0,
        hflip=flip_ok, drop_last=len(train_data) > batch_size, seed=config.seed, rank=dist.rank,
        world_size=dist.world_size, device=runtime.device, memory_format=runtime.memory_format,
    )  # fmt: skip
    test_shard = test_data
    if dist.enabled:
        keep = torch.arange(dist.rank, len(test_data), dist.world_size)
        test_shard = replace(test_data, images=test_data.images[keep], labels=test_data.labels[keep])
    test_batches = TensorBatches(test_shard, 500, device=runtime.device, memory_format=runtime.memory_format)
    optimizer = torch.optim.SGD(
        parameter_groups(net, recipe.weight_decay), lr=lr, momentum=recipe.momentum, nesterov=True
    )
    scheduler = _build_scheduler(recipe, optimizer, lr, config.epochs * len(train_batches))
    model = net
    if dist.enabled:
        device_ids = [dist.local_rank] if runtime.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(net, device_ids=device_ids)
    tta_flip = recipe.tta_flip and flip_ok

    rows: list[dict[str, Any]] = []
    best_accuracy, best_epoch, start_epoch, start_step, totals, elapsed = -1.0, 0, 1, 0, None, 0.0
    if resume_state is not None:
        net.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        torch.set_rng_state(resume_state["torch_rng"])
        rows = list(resume_state["rows"])
        best_accuracy, best_epoch = resume_state["best_accuracy"], resume_state["best_epoch"]
        start_epoch, start_step = resume_state["epoch"] + 1, resume_state["step"]
        totals, elapsed = resume_state.get("totals"), resume_state.get("elapsed", 0.0)

    num_params = count_parameters(net)
    processes = f", {dist.world_size} processes" if dist.enabled else ""
    action = f"resuming at epoch {start_epoch}" + (f" step {start_step}" if start_step else "") if resume_state \
        else "training"  # fmt: skip
    _log(
        f"{action} {model_name} ({num_params / 1e6:.2f}M parameters) on {config.dataset}: {len(train_data)} train / "
        f"{len(test_data)} test images, {num_classes} classes, {in_channels}x{image_size}x{image_size}; "
        f"{config.epochs} epochs, batch {batch_size}, recipe {recipe.name}, {runtime.describe()}{processes}; "
        f"writing to {out}",
        quiet,
    )
    base = {
        "format": FORMAT,
        "version": VERSION,
        "resnetlab_version": __version__,
        "model": model_spec,
        "dataset": config.dataset,
        "data_dir": str(Path(config.data_dir).resolve()),
        "classes": train_data.classes,
        "in_channels": in_channels,
        "image_size": image_size,
        "mean": list(train_data.mean),
        "std": list(train_data.std),
        "test_time_flip": tta_flip,
        "config": config.to_dict(),
    }

    def weights() -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in net.state_dict().items()}

    def train_state(epoch_done: int, step: int, totals: dict | None) -> dict[str, Any]:
        return {
            "epoch": epoch_done,
            "step": step,
            "totals": totals,
            "model": weights(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "rows": rows,
            "best_accuracy": best_accuracy,
            "best_epoch": best_epoch,
            "elapsed": elapsed + time.perf_counter() - started,
        }

    interactive = sys.stderr.isatty() and not quiet
    started = time.perf_counter()
    with _StopRequests() as stop_requested:
        should_stop = (lambda: dist.broadcast_flag(stop_requested())) if dist.enabled else stop_requested
        for epoch in range(start_epoch, config.epochs + 1):
            epoch_start = time.perf_counter()
            train_batches.set_epoch(epoch, start_step)
            with tqdm(
                total=len(train_batches), desc=f"epoch {epoch}/{config.epochs}", disable=not interactive,
                leave=False, file=sys.stderr, dynamic_ncols=True,
            ) as progress:  # fmt: skip
                train_stats = train_one_epoch(
                    model, train_batches, optimizer, scheduler, runtime, recipe.label_smoothing, progress,
                    should_stop, totals,
                )  # fmt: skip
            start_step, totals = 0, None
            if train_stats["interrupted"]:
                if main:
                    last = {**base, "epoch": epoch - 1, "metrics": rows[-1] if rows else {},
                            "best_test_accuracy": best_accuracy, "state_dict": weights(),
                            "train_state": train_state(epoch - 1, train_stats["steps"], train_stats["totals"])}
                    _save(last, out / "last.pt")  # fmt: skip
                name = signal.Signals(stop_requested.signal_number or signal.SIGINT).name
                raise Interrupted(
                    f"{name}: stopped in epoch {epoch} at step {train_stats['steps']}, saved {out / 'last.pt'}; "
                    f"continue with: resnetlab train --resume {out}",
                    stop_requested.signal_number or signal.SIGINT,
                )
            if dist.enabled:
                sums = dist.all_reduce_sum(torch.tensor(
                    [train_stats["totals"]["loss_sum"], train_stats["totals"]["correct"],
                     train_stats["totals"]["seen"]], dtype=torch.float64))  # fmt: skip
                train_stats["train_loss"] = (sums[0] / sums[2]).item()
                train_stats["train_accuracy"] = (sums[1] / sums[2]).item()
                train_stats["train_images_per_second"] *= dist.world_size
            dist.sync_buffers(net)
            reduce = dist.all_reduce_sum if dist.enabled else None
            test_stats = evaluate(net, test_batches, runtime, num_classes, flip=tta_flip, reduce=reduce)
            row = {
                "epoch": epoch,
                "train_loss": round(train_stats["train_loss"], 6),
                "train_accuracy": round(train_stats["train_accuracy"], 6),
                "test_loss": round(test_stats["test_loss"], 6),
                "test_accuracy": round(test_stats["test_accuracy"], 6),
                "lr": train_stats["lr"],
                "seconds": round(time.perf_counter() - epoch_start, 2),
            }
            rows.append(row)
            _log(
                f"epoch {epoch}/{config.epochs}: train loss {row['train_loss']:.4f}, "
                f"{train_stats['train_images_per_second']:.0f} img/s | test average loss {row['test_loss']:.4f}, "
                f"accuracy {row['test_accuracy']:.2%} | {row['seconds']:.0f} s",
                quiet,
            )
            improved = test_stats["test_accuracy"] > best_accuracy
            if improved:
                best_accuracy, best_epoch = test_stats["test_accuracy"], epoch
            if main:
                checkpoint = {**base, "epoch": epoch, "metrics": row, "best_test_accuracy": best_accuracy,
                              "state_dict": weights()}  # fmt: skip
                if improved:
                    _save(checkpoint, out / "best.pt")
                _save({**checkpoint, "train_state": train_state(epoch, 0, None)}, out / "last.pt")
                _write_metrics(out / "metrics.csv", rows)
                training_curves(rows, out / "curves.png", f"{model_name} on {config.dataset}")
                if tensorboard is not None:
                    tensorboard.log_epoch(row)
                if on_epoch is not None:
                    on_epoch({**row, "train_images_per_second": train_stats["train_images_per_second"]})
            dist.barrier()
    if tensorboard is not None:
        tensorboard.close()

    summary = {
        "model": model_name,
        "dataset": config.dataset,
        "recipe": recipe.name,
        "epochs": config.epochs,
        "best_test_accuracy": best_accuracy,
        "best_epoch": best_epoch,
        "final_test_accuracy": rows[-1]["test_accuracy"],
        "train_seconds": round(elapsed + time.perf_counter() - started, 2),
        "num_params": num_params,
        "batch_size": batch_size,
        "lr": lr,
        "device": runtime.device.type,
        "precision": runtime.precision,
        "processes": dist.world_size,
        "torch": torch.__version__,
        "out": str(out),
    }
    if main:
        try:
            (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        except OSError as e:
            raise UserError(f"could not write {out / 'summary.json'} ({e.strerror}); free some space.") from None
    _log(
        f"best test accuracy {best_accuracy:.2%} at epoch {best_epoch}; weights in {out / 'best.pt'} "
        f"(predict with: resnetlab predict {out / 'best.pt'})",
        quiet,
    )
    return summary
