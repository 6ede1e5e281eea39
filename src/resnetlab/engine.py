"""Training and evaluation: plain functions that return metric dicts, and `train` that runs a whole job."""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import __version__
from .checkpoint import FORMAT, VERSION, describe_model, save_atomic
from .config import RECIPES, Recipe, TrainConfig
from .data import ImageData, TensorBatches, get_spec, load_split
from .errors import UserError
from .models import count_parameters, create_model, list_models
from .runtime import Runtime, select_runtime

METRICS_COLUMNS = ["epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr", "seconds"]


def train_one_epoch(
    model: nn.Module,
    batches: TensorBatches,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    runtime: Runtime,
    label_smoothing: float = 0.0,
    ema: torch.optim.swa_utils.AveragedModel | None = None,
    progress: tqdm | None = None,
) -> dict[str, float]:
    """One pass over the training batches. Returns the mean loss, accuracy and throughput."""
    model.train()
    total_loss = torch.zeros((), dtype=torch.float64)
    correct = torch.zeros((), dtype=torch.int64)
    seen = 0
    start = time.perf_counter()
    for step, (x, y) in enumerate(batches):
        with runtime.autocast():
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        loss = loss.detach()
        if not torch.isfinite(loss):
            raise UserError(
                f"the training loss became {loss.item()} at step {step + 1}; lower the learning rate (--lr) and "
                "train again."
            )
        total_loss += loss.double() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if progress is not None:
            progress.update(1)
            if step % 10 == 0:
                elapsed = time.perf_counter() - start
                progress.set_postfix(loss=f"{total_loss.item() / seen:.4f}", img_s=f"{seen / elapsed:.0f}")
    seconds = time.perf_counter() - start
    return {
        "train_loss": total_loss.item() / seen,
        "train_accuracy": correct.item() / seen,
        "train_images_per_second": seen / seconds,
        "train_seconds": seconds,
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
    model: nn.Module, batches: TensorBatches, runtime: Runtime, num_classes: int, flip: bool = False
) -> dict[str, Any]:
    """Test loss and accuracy, per-class accuracy, the confusion matrix and throughput."""
    start = time.perf_counter()
    logits, labels = predict_logits(model, batches, runtime, flip)
    seconds = time.perf_counter() - start
    predictions = logits.argmax(1)
    confusion = torch.bincount(labels * num_classes + predictions, minlength=num_classes**2)
    confusion = confusion.reshape(num_classes, num_classes)
    per_class_total = confusion.sum(1)
    per_class = confusion.diag().double() / per_class_total.clamp_min(1)
    return {
        "test_loss": F.cross_entropy(logits, labels).item(),
        "test_accuracy": (predictions == labels).double().mean().item(),
        "per_class_accuracy": [a if n else float("nan") for a, n in zip(per_class.tolist(), per_class_total.tolist())],
        "confusion_matrix": confusion.tolist(),
        "images": len(labels),
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


def train(config: TrainConfig, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train a model as `config` says, writing best.pt, last.pt, metrics.csv and summary.json into the run
    folder. Returns the summary."""
    recipe, model_name = _validate(config)
    runtime = select_runtime(config.device, config.precision)
    spec = get_spec(config.dataset)
    out = choose_out_dir(config, model_name)
    torch.manual_seed(config.seed)

    train_data, test_data = load_train_test(config)
    num_classes, in_channels = len(train_data.classes), train_data.channels
    image_size = train_data.image_size
    options = {"shortcut": config.shortcut} if config.shortcut else {}
    model = create_model(model_name, num_classes, in_channels, image_size=image_size, **options)
    model_spec = describe_model(model_name, num_classes, in_channels, model)
    model = model.to(runtime.device, memory_format=runtime.memory_format)
    create_out_dir(out)

    batch_size = config.batch_size or recipe.batch_size
    # Linear scaling of the recipe's peak lr with the batch size (Goyal et al. 2017).
    lr = config.lr or recipe.lr * batch_size / recipe.batch_size
    flip_ok = spec.hflip
    train_batches = TensorBatches(
        train_data, batch_size, shuffle=True, augment=recipe.augment, crop_padding=spec.crop_padding,
        hflip=flip_ok, drop_last=len(train_data) > batch_size, seed=config.seed, device=runtime.device,
        memory_format=runtime.memory_format,
    )  # fmt: skip
    test_batches = TensorBatches(
        test_data, 500, device=runtime.device, memory_format=runtime.memory_format
    )
    optimizer = torch.optim.SGD(
        parameter_groups(model, recipe.weight_decay), lr=lr, momentum=recipe.momentum, nesterov=True
    )
    steps = config.epochs * len(train_batches)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=steps, pct_start=recipe.warmup_fraction, anneal_strategy="linear",
        div_factor=10.0, final_div_factor=100.0, three_phase=False,
    )  # fmt: skip
    ema = None
    if recipe.ema_decay is not None:
        ema = torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True
        )
    tta_flip = recipe.tta_flip and flip_ok

    num_params = count_parameters(model)
    _log(
        f"training {model_name} ({num_params / 1e6:.2f}M parameters) on {config.dataset}: {len(train_data)} train / "
        f"{len(test_data)} test images, {num_classes} classes, {in_channels}x{image_size}x{image_size}; "
        f"{config.epochs} epochs, batch {batch_size}, recipe {recipe.name}, {runtime.describe()}; "
        f"writing to {out}",
        config.quiet,
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
    rows: list[dict[str, Any]] = []
    best_accuracy, best_epoch = -1.0, 0
    interactive = sys.stderr.isatty() and not config.quiet
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        with tqdm(
            total=len(train_batches), desc=f"epoch {epoch}/{config.epochs}", disable=not interactive,
            leave=False, file=sys.stderr, dynamic_ncols=True,
        ) as progress:  # fmt: skip
            train_stats = train_one_epoch(
                model, train_batches, optimizer, scheduler, runtime, recipe.label_smoothing, ema, progress
            )
        eval_model = ema.module if ema is not None else model
        test_stats = evaluate(eval_model, test_batches, runtime, num_classes, flip=tta_flip)
        row = {
            "epoch": epoch,
            "train_loss": round(train_stats["train_loss"], 6),
            "train_accuracy": round(train_stats["train_accuracy"], 6),
            "test_loss": round(test_stats["test_loss"], 6),
            "test_accuracy": round(test_stats["test_accuracy"], 6),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - epoch_start, 2),
        }
        rows.append(row)
        _log(
            f"epoch {epoch}/{config.epochs}: train loss {row['train_loss']:.4f}, "
            f"{train_stats['train_images_per_second']:.0f} img/s | test average loss {row['test_loss']:.4f}, "
            f"accuracy {row['test_accuracy']:.2%} | {row['seconds']:.0f} s",
            config.quiet,
        )
        checkpoint = {
            **base,
            "epoch": epoch,
            "metrics": row,
            "state_dict": {k: v.detach().cpu() for k, v in eval_model.state_dict().items()},
        }
        if test_stats["test_accuracy"] > best_accuracy:
            best_accuracy, best_epoch = test_stats["test_accuracy"], epoch
            save_atomic({**checkpoint, "best_test_accuracy": best_accuracy}, out / "best.pt")
        save_atomic({**checkpoint, "best_test_accuracy": best_accuracy}, out / "last.pt")
        _write_metrics(out / "metrics.csv", rows)
        if on_epoch is not None:
            on_epoch(row)

    summary = {
        "model": model_name,
        "dataset": config.dataset,
        "recipe": recipe.name,
        "epochs": config.epochs,
        "best_test_accuracy": best_accuracy,
        "best_epoch": best_epoch,
        "final_test_accuracy": rows[-1]["test_accuracy"],
        "train_seconds": round(time.perf_counter() - started, 2),
        "num_params": num_params,
        "batch_size": batch_size,
        "lr": lr,
        "device": runtime.device.type,
        "precision": runtime.precision,
        "torch": torch.__version__,
        "out": str(out),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _log(
        f"best test accuracy {best_accuracy:.2%} at epoch {best_epoch}; weights in {out / 'best.pt'} "
        f"(predict with: resnetlab predict {out / 'best.pt'})",
        config.quiet,
    )
    return summary
