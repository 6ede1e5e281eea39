"""Experiments of He et al. 2015 run on the user's own machine: the degradation of plain nets (Figures 1 and 6),
and two that look for its cause: the gradients of each layer at the start of training, and the responses of
each layer of trained nets (Figure 7).

The degradation experiment: plain and residual nets of the same depths are trained with the same recipe, data
and seed. A deeper plain net has a *higher training error* than a shallower one: it is not overfitting, it is
harder to optimize. With identity shortcuts the deeper net trains at least as well as the shallower one.

The training error the paper plots is the error on the training set. The `train_accuracy` that `train`
records is measured during each epoch, on the images as trained on (augmented when augmentation is on), while
the weights still change (degradation.csv keeps it as train_error_augmented); here each
epoch's weights (the run's last.pt) are evaluated again on a fixed sample of the training images, without
augmentation, which gives the clean curve of the paper.

The gradients experiment: the paper argues the degradation is "unlikely to be caused by vanishing gradients"
because BN keeps the forward signals and the backward gradients healthy. Here plainD and resnetD are built
with the same initial weights and the norm of each layer's loss gradient is measured on a few training
batches, before any step is taken. Where the gradient grows a lot towards the input (plain56), so do small
differences: the first layers' norms change by a tenth or more with the order in which floating-point sums are
taken (threads, memory layout), while the ratio between layers keeps its order of magnitude.

The responses experiment: the paper's "analysis of layer responses" (section 4.2, Figure 7). The response of
a 3x3 layer is the output of the BN after it, before the ReLU and before the shortcut is added; residual
functions are expected to be closer to zero than the plain nets' layers, so their responses smaller.
"""

from __future__ import annotations

import csv
import json
import re
import time
from dataclasses import asdict
from itertools import islice, pairwise
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .batches import ImageData, TensorBatches
from .checkpoint import load_checkpoint, resolve_path
from .config import (
    FULL_DEGRADATION,
    DegradationConfig,
    GradientsConfig,
    ResponsesConfig,
    TrainConfig,
    degradation_config,
)
from .data import load_train_test
from .engine import evaluate, train
from .errors import UserError
from .inference import TorchPredictor
from .models import block_3x3_layers, create_model, list_models, weighted_layers
from .plots import degradation_curves, gradient_norms_plot, layer_responses_plot
from .preprocess import PixelClassifier
from .runtime import Runtime, select_runtime

__all__ = [
    "FULL_DEGRADATION",
    "DegradationConfig",
    "degradation_config",
    "parse_depths",
    "run_degradation",
    "run_gradients",
    "run_responses",
]

CSV_COLUMNS = ["net", "kind", "depth", "epoch", "train_error", "train_error_augmented", "test_error", "lr", "seconds"]


def parse_depths(text: str) -> tuple[int, ...]:
    """Parse "20,56" into (20, 56); each depth must exist both as plainD and as resnetD."""
    try:
        depths = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise UserError(f"--depths takes whole numbers separated by commas, like 20,56, not {text!r}.") from None
    names = set(list_models())
    possible = sorted(
        int(n[len("plain") :]) for n in names if n.startswith("plain") and n[5:].isdigit() and f"resnet{n[5:]}" in names
    )
    wrong = [d for d in depths if d not in possible]
    if not depths or wrong:
        raise UserError(
            f"--depths {text!r}: each depth needs a plain and a residual net; choose from "
            f"{', '.join(map(str, possible))}."
        )
    return depths


def _comparable(train_config: TrainConfig) -> dict[str, Any]:
    settings = asdict(train_config)
    for key in ("overwrite", "quiet", "out", "cache_dir"):  # where a run is written or cached changes no result
        settings.pop(key)
    return settings


def training_sample(config: DegradationConfig) -> ImageData:
    """The training images the training error is measured on: a fixed random sample of those trained on."""
    train_data, _ = load_train_test(
        config.dataset,
        config.data_dir,
        None,
        config.subset,
        config.test_subset,
        config.seed,
        cache_dir=config.cache_dir,
    )
    return train_data.sample(config.train_eval_size, config.seed + 1)


def _train_one(config: DegradationConfig, net: str, sample: ImageData, label: str) -> list[dict[str, Any]]:
    """Train one net (or reuse a finished run with the same settings); one row per epoch."""
    train_config = config.train_config(net)
    out = Path(train_config.out)
    record = out / "degradation.json"
    if record.is_file() and not config.overwrite:
        saved = json.loads(record.read_text())
        if saved.get("settings") == _comparable(train_config) and saved.get("train_eval_size") == len(sample):
            _log(f"{label} {net}: reusing the finished run in {out}", config.quiet)
            return saved["rows"]
    runtime = select_runtime(config.device, config.precision)
    batches = TensorBatches(sample, 500, device=runtime.device)
    kind = "plain" if net.startswith("plain") else "residual"
    depth = int(net.removeprefix("plain").removeprefix("resnet"))
    rows: list[dict[str, Any]] = []

    def after_epoch(metrics: dict[str, Any], network: nn.Module) -> None:
        classifier = PixelClassifier(network, sample.mean, sample.std, memory_format=runtime.memory_format)
        stats = evaluate(classifier, batches, runtime, len(sample.classes))
        network.train()  # evaluate put it in eval mode; the next epoch trains it
        row = {
            "net": net,
            "kind": kind,
            "depth": depth,
            "epoch": metrics["epoch"],
            "train_error": round(1 - stats["accuracy"], 6),
            "train_error_augmented": round(1 - metrics["train_accuracy"], 6),
            "test_error": round(1 - metrics["test_accuracy"], 6),
            "lr": metrics["lr"],
            "seconds": round(metrics["seconds"] + stats["seconds"], 2),
        }
        rows.append(row)
        _log(
            f"{label} {net} epoch {row['epoch']}/{config.epochs}: training error {row['train_error']:.2%}, "
            f"test error {row['test_error']:.2%} ({row['seconds']:.0f} s)",
            config.quiet,
        )

    summary = train(train_config, on_epoch=after_epoch)
    saved = {
        "settings": _comparable(train_config),
        "train_eval_size": len(sample),
        "rows": rows,
        "num_params": summary["num_params"],
    }
    record.write_text(json.dumps(saved, indent=2) + "\n")
    return rows


def _log(message: str, quiet: bool) -> None:
    if not quiet:
        print(message, flush=True)


def run_degradation(config: DegradationConfig) -> dict[str, Any]:
    """Train plainD and resnetD for each depth; write degradation.csv, degradation.md and degradation.png
    into config.out. Returns {"rows", "table", "files", "seconds"}."""
    config.validate()
    parse_depths(",".join(map(str, config.depths)))
    started = time.perf_counter()
    out = Path(config.out)
    nets = [f"{kind}{depth}" for depth in config.depths for kind in ("plain", "resnet")]
    sample = training_sample(config)
    settings = describe_settings(config, len(sample))
    _log(f"degradation experiment: {', '.join(nets)} on {settings}; writing to {out}", config.quiet)
    rows: list[dict[str, Any]] = []
    for i, net in enumerate(nets):
        rows += _train_one(config, net, sample, f"[{i + 1}/{len(nets)}]")
    params = {net: json.loads((out / net / "degradation.json").read_text())["num_params"] for net in nets}
    table = markdown_table(rows, params)
    files = {
        "csv": write_csv(rows, out / "degradation.csv"),
        "table": out / "degradation.md",
        "plot": degradation_curves(rows, out / "degradation.png", settings),
    }
    seconds = time.perf_counter() - started
    minutes = sum(row["seconds"] for row in rows) / 60
    report = "\n\n".join(part for part in (table, verdict(rows)) if part)
    files["table"].write_text(f"{report}\n\n({settings}; {minutes:.1f} minutes of training and evaluation in all.)\n")
    _log(f"\n{report}\n\nfiles: {', '.join(str(p) for p in files.values())} ({seconds / 60:.1f} minutes)", config.quiet)
    return {"rows": rows, "table": table, "files": files, "seconds": seconds}


def final_rows(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last epoch's row of each net, in the order the nets were trained."""
    last: dict[str, dict[str, Any]] = {}
    for row in rows:
        last[row["net"]] = row
    return last


def markdown_table(rows: list[dict[str, Any]], params: dict[str, int] | None = None) -> str:
    """Final training and test error per net, as a markdown table."""
    lines = ["| net | layers | parameters | training error | test error |", "|---|--:|--:|--:|--:|"]
    for net, row in sorted(final_rows(rows).items(), key=lambda item: (item[1]["kind"], item[1]["depth"])):
        n = f"{params[net] / 1e6:.2f}M" if params and net in params else ""
        lines.append(f"| {net} | {row['depth']} | {n} | {row['train_error']:.2%} | {row['test_error']:.2%} |")
    return "\n".join(lines)


def verdict(rows: list[dict[str, Any]]) -> str:
    """One sentence per kind: does the deepest net train worse or better than the shallowest?"""
    last = final_rows(rows)
    sentences = []
    for kind, name in (("plain", "plain"), ("residual", "resnet")):
        depths = sorted(r["depth"] for r in last.values() if r["kind"] == kind)
        if len(depths) < 2:
            continue
        shallow, deep = last[f"{name}{depths[0]}"], last[f"{name}{depths[-1]}"]
        difference = deep["train_error"] - shallow["train_error"]
        change = "higher" if difference > 0 else "lower" if difference < 0 else "the same"
        sentences.append(
            f"{name}{deep['depth']} ends with {change} training error than {name}{shallow['depth']} "
            f"({deep['train_error']:.2%} vs {shallow['train_error']:.2%})."
        )
    return " ".join(sentences)


def write_csv(rows: list[dict[str, Any]], path: Path, columns: list[str] = CSV_COLUMNS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """degradation.csv back as rows with numbers."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["depth"], row["epoch"] = int(row["depth"]), int(row["epoch"])
        for key in ("train_error", "train_error_augmented", "test_error", "lr", "seconds"):
            row[key] = float(row[key])
    return rows


def describe_settings(config: DegradationConfig, sample_size: int) -> str:
    """One line saying how the nets were trained and measured."""
    batch = config.batch_size or "the recipe's"
    return (
        f"{config.dataset}: {config.epochs} epochs of {config.subset or 'all'} training images, batch {batch}, "
        f"recipe {config.recipe} {'with' if config.augment else 'without'} augmentation, seed {config.seed}; "
        f"test error on {config.test_subset or 'all'} test images, "
        f"training error on {sample_size} training images without augmentation"
    )


# The gradients experiment.

GRADIENT_COLUMNS = ["net", "layer", "name", "grad_norm"]
# The verdict calls a net's gradients vanishing where its first layer's gradient norm is below 1/VANISHING_FACTOR
# of its last conv layer's: two orders of magnitude (deep nets without BN lose many more).
VANISHING_FACTOR = 100


def fresh_network(net: str, num_classes: int, in_channels: int, seed: int) -> nn.Module:
    """A newly initialised net. plainD and resnetD with option-A shortcuts have the same weights in the same
    order, so with the same seed they start from the same weights and differ only by their shortcuts."""
    torch.manual_seed(seed)
    return create_model(net, num_classes, in_channels)


def gradient_norms(network: nn.Module, data: ImageData, batches: int, batch_size: int, runtime: Runtime) -> list[float]:
    """The L2 norm of the loss gradient of each weighted layer's weight (models.weighted_layers), the mean over
    the first `batches` batches of data (in order). The network is in training mode, as at the first step of
    training (BN normalizes with each batch's statistics), and runs in fp32; no weight is changed."""
    network = network.to(runtime.device, memory_format=runtime.memory_format)
    classifier = PixelClassifier(network, data.mean, data.std, memory_format=runtime.memory_format)
    classifier = classifier.to(runtime.device).train()
    weights = [module.weight for _, module in weighted_layers(network)]
    total, count = torch.zeros(len(weights), dtype=torch.float64), 0
    for images, labels in islice(zip(data.chunks(batch_size), data.labels.split(batch_size)), batches):
        network.zero_grad(set_to_none=True)
        F.cross_entropy(classifier(images.to(runtime.device)), labels.to(runtime.device)).backward()
        total += torch.stack([w.grad.detach().double().norm() for w in weights]).cpu()
        count += 1
    network.zero_grad(set_to_none=True)
    return (total / max(count, 1)).tolist()


def run_gradients(config: GradientsConfig) -> dict[str, Any]:
    """Build plainD and resnetD for each depth with the same seed, measure the gradient norm of each weighted
    layer on a few training batches, write gradients.csv and gradients.png into config.out and print what the
    numbers show. Returns {"rows", "verdict", "files", "seconds"}."""
    config.validate()
    parse_depths(config.depths_text)
    started = time.perf_counter()
    out = Path(config.out)
    runtime = select_runtime(config.device, "fp32")  # gradients measured in bf16 would carry its rounding
    data, _ = load_train_test(
        config.dataset,
        config.data_dir,
        None,
        config.batches * config.batch_size,
        None,
        config.seed,
        cache_dir=config.cache_dir,
    )
    batches = min(config.batches, -(-len(data) // config.batch_size))
    nets = [f"{kind}{depth}" for depth in config.depths for kind in ("plain", "resnet")]
    settings = (
        f"{config.dataset}: the mean over {batches} batches of {config.batch_size} training images, before "
        f"any training step; the same initial weights (seed {config.seed}) for plain and residual nets"
    )
    _log(f"gradients experiment: {', '.join(nets)} ({settings}); writing to {out}", config.quiet)
    rows: list[dict[str, Any]] = []
    for net in nets:
        network = fresh_network(net, len(data.classes), data.channels, config.seed)
        norms = gradient_norms(network, data, batches, config.batch_size, runtime)
        names = [name for name, _ in weighted_layers(network)]
        rows += [
            {"net": net, "layer": i, "name": name, "grad_norm": norm}
            for i, (name, norm) in enumerate(zip(names, norms), 1)
        ]
    report = gradients_verdict(rows)
    files = {
        "csv": write_csv(rows, out / "gradients.csv", GRADIENT_COLUMNS),
        "plot": gradient_norms_plot(rows, out / "gradients.png", settings),
    }
    seconds = time.perf_counter() - started
    _log(f"\n{report}\n\nfiles: {', '.join(str(p) for p in files.values())} ({seconds:.0f} s)", config.quiet)
    return {"rows": rows, "verdict": report, "files": files, "seconds": seconds}


def _by_net(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    nets: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        nets.setdefault(row["net"], []).append(row)
    return nets


def _two_digits(x: float) -> str:
    """x to two significant digits, without an exponent: 1825.3 -> "1,800", 0.0123 -> "0.012"."""
    return f"{float(f'{x:.2g}'):,g}"


def gradients_verdict(rows: list[dict[str, Any]]) -> str:
    """One sentence per net comparing its first conv layer's gradient norm with its last conv layer's, and one
    saying whether any net's gradients vanish towards the input."""
    sentences, vanishing = [], []
    for net, layers in _by_net(rows).items():
        convs = [row for row in layers if row["name"] != "fc"]
        first, last = convs[0]["grad_norm"], convs[-1]["grad_norm"]
        ratio = first / last
        way = "grows" if ratio > 1 else "shrinks" if ratio < 1 else "keeps its size"
        sentences.append(
            f"{net}: the first conv layer's gradient norm is {first:.3g}, the last conv layer's "
            f"{last:.3g}: {_two_digits(ratio)} times as large (from the output back to the input the "
            f"gradient {way})."
        )
        if first * VANISHING_FACTOR < last:
            vanishing.append(net)
    if vanishing:
        sentences.append(
            f"In {', '.join(vanishing)} the first layer's gradient is below 1/{VANISHING_FACTOR} of "
            "the last conv layer's: there the gradients vanish towards the input."
        )
    else:
        sentences.append(
            f"In no net is the first layer's gradient below 1/{VANISHING_FACTOR} of the last conv "
            "layer's: at the start of training the gradients do not vanish."
        )
    return "\n".join(sentences)


# The responses experiment.

RESPONSE_COLUMNS = ["net", "layer", "name", "response_std"]
RESPONSE_BATCH = 500  # test images per forward pass


@torch.no_grad()
def response_stds(predictor: TorchPredictor, data: ImageData) -> list[tuple[str, float]]:
    """(name, std) of each 3x3 layer of the blocks (models.block_3x3_layers, named by its convolution): the
    standard deviation of its response, the output of the BN after it, over every value of it (images, channels
    and positions) for data's images. The network runs as trained, in eval mode (BN with its running statistics);
    the predictor's network must not have BN folded into the convolutions."""
    layers = block_3x3_layers(predictor.network)
    moments = torch.zeros(len(layers), 3, dtype=torch.float64)  # count, sum, sum of squares

    def record(i: int):
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            # Read now: the ReLU after bn1 runs in place once the hook returns.
            values = output.detach().double()
            moments[i] += torch.stack([values.new_tensor(values.numel()), values.sum(), values.square().sum()]).cpu()

        return hook

    handles = [bn.register_forward_hook(record(i)) for i, (_, _, bn) in enumerate(layers)]
    try:
        for images in data.chunks(RESPONSE_BATCH):
            predictor.network(predictor.classifier.prepare(images.to(predictor.runtime.device)))
    finally:
        for handle in handles:
            handle.remove()
    count, total, squares = moments.unbind(1)
    stds = ((squares - total**2 / count) / (count - 1)).clamp_min(0).sqrt()
    return [(name, std) for (name, _, _), std in zip(layers, stds.tolist())]


def _labels(architectures: list[str], paths: list[Path]) -> list[str]:
    """Each checkpoint's architecture, with its path where two have the same one."""
    return [a if architectures.count(a) == 1 else f"{a} ({p})" for a, p in zip(architectures, paths)]


def run_responses(config: ResponsesConfig) -> dict[str, Any]:
    """The std of each 3x3 layer's response for each trained checkpoint (or run folder) on its test images; write
    responses.csv and responses.png into config.out and print each net's mean std and what the means show.
    Returns {"rows", "means", "verdict", "files", "seconds"}."""
    config.validate()
    started = time.perf_counter()
    out = Path(config.out)
    paths = [resolve_path(path) for path in config.checkpoints]  # every path checked before any work
    checkpoints = [load_checkpoint(path) for path in paths]
    labels = _labels([c.card.architecture for c in checkpoints], paths)
    runtime = select_runtime(config.device, "fp32")
    _log(f"responses experiment: {', '.join(labels)}; writing to {out}", config.quiet)
    rows: list[dict[str, Any]] = []
    means: dict[str, float] = {}
    test_sets = set()
    for label, path, checkpoint in zip(labels, paths, checkpoints):
        predictor = TorchPredictor(checkpoint, checkpoint.build_model(str(path)), runtime)  # BN not folded
        data = predictor.load_test_data(config.data_dir, cache_dir=config.cache_dir)
        data = data.sample(config.test_subset, config.seed)
        stds = response_stds(predictor, data)
        rows += [{"net": label, "layer": i, "name": name, "response_std": std} for i, (name, std) in enumerate(stds, 1)]
        means[label] = sum(std for _, std in stds) / len(stds)
        test_sets.add(f"{len(data)} {checkpoint.card.dataset} test images")
        _log(
            f"{label}: mean response std {means[label]:.3f} over its {len(stds)} 3x3 layers ({path}, "
            f"{len(data)} test images)",
            config.quiet,
        )
    report = responses_verdict(means)
    settings = (
        f"std of each 3x3 layer's response (its BN's output, before the ReLU and the addition) on "
        f"{', '.join(sorted(test_sets))}"
    )
    files = {
        "csv": write_csv(rows, out / "responses.csv", RESPONSE_COLUMNS),
        "plot": layer_responses_plot(rows, out / "responses.png", settings),
    }
    seconds = time.perf_counter() - started
    listing = f"files: {', '.join(str(p) for p in files.values())} ({seconds:.0f} s)"
    _log(f"\n{report}\n\n{listing}" if report else f"\n{listing}", config.quiet)
    return {"rows": rows, "means": means, "verdict": report, "files": files, "seconds": seconds}


def _compare(net: str, other: str, means: dict[str, float]) -> str:
    a, b = means[net], means[other]
    change = "smaller than" if a < b else "larger than" if a > b else "the same as"
    return f"{net}'s responses are {change} {other}'s (mean std {a:.3f} against {b:.3f})."


def responses_verdict(means: dict[str, float]) -> str:
    """What the mean response stds show: each resnetD against plainD, and each residual net against the next
    shallower one (the paper: residual functions respond less, and less still in deeper residual nets)."""
    named = {net: m for net in means if (m := re.fullmatch(r"(plain|resnet)(\d+)", net))}
    sentences = [
        _compare(net, f"plain{m[2]}", means) for net, m in named.items() if m[1] == "resnet" and f"plain{m[2]}" in means
    ]
    residual = sorted((int(m[2]), net) for net, m in named.items() if m[1] == "resnet")
    sentences += [_compare(deep, shallow, means) for (_, shallow), (_, deep) in pairwise(residual)]
    return "\n".join(sentences)
