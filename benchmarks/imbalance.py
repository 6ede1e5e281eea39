"""train --balance on a long-tailed folder: balanced accuracy with and without it, over seeds.

    python benchmarks/imbalance.py CIFAR-10-images/ --ratio 10 --max-per-class 500 --seeds 0 1 2

Cuts DIR's training part (DIR/train/<class>/, or DIR/<class>/) to a long-tailed subset, drawn with --subset-seed:
class k of K keeps max_per_class * ratio ** (-k / (K - 1)) images (Cui et al. 2019's exponential profile), so the
first class has --ratio times the images of the last; DIR/test/ is kept whole, so the held-out part stays balanced
(without it, --val-split holds out a share of the subset). The subset is made of hard links in a temporary folder
beside DIR (the originals are only linked, never changed), then `resnetlab train --dataset folder` runs each seed
with and without --balance. best.pt is chosen by balanced accuracy in both (the classes are imbalanced), and the
table gives it with the plain accuracy of that epoch: mean +- std over the seeds.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import random
import shutil
import statistics
import tempfile
from pathlib import Path

import torch

from resnetlab import __version__
from resnetlab.config import TrainConfig
from resnetlab.engine import train
from resnetlab.imagefiles import is_image_file


def long_tail_sizes(classes: list[str], max_per_class: int, ratio: float) -> dict[str, int]:
    last = max(len(classes) - 1, 1)
    return {name: max(1, round(max_per_class * ratio ** (-k / last))) for k, name in enumerate(classes)}


def link_subset(source: Path, target: Path, max_per_class: int, ratio: float, seed: int) -> dict[str, int]:
    """target/train/<class>/ (a long-tailed draw from source's training part) and target/test/ (source/test/
    whole), all hard links; returns the training images per class."""
    train = source / "train" if (source / "train").is_dir() else source
    classes = sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
    sizes = long_tail_sizes(classes, max_per_class, ratio)
    rng = random.Random(seed)
    parts = {"train": train} | ({"test": source / "test"} if (source / "test").is_dir() else {})
    drawn = {}
    for name in classes:
        images = sorted(p for p in (train / name).iterdir() if is_image_file(p))
        chosen = {"train": rng.sample(images, min(sizes[name], len(images)))}
        drawn[name] = len(chosen["train"])
        if "test" in parts:
            chosen["test"] = sorted(p for p in (parts["test"] / name).iterdir() if is_image_file(p))
        for part, paths in chosen.items():
            folder = target / part / name if "test" in parts else target / name
            folder.mkdir(parents=True)
            for path in paths:
                os.link(path, folder / path.name)
    return drawn


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2%} +- {spread:.2%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="DIR/train/<class>/ and DIR/test/<class>/, or DIR/<class>/")
    parser.add_argument("--ratio", type=float, default=10.0, help="images of the largest class / the smallest")
    parser.add_argument("--max-per-class", type=int, default=500, help="training images of the largest class")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--subset-seed", type=int, default=0, help="which images the subset draws")
    parser.add_argument("--epochs", type=int, default=None, help="default: train's, from the folder's size")
    parser.add_argument("--eval-every", type=int, default=None, help="evaluate after every Nth epoch (and the last)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    source = Path(args.folder).resolve()
    print(f"resnetlab {__version__}, torch {torch.__version__}, {platform.machine()}, device {args.device}")
    work = Path(tempfile.mkdtemp(prefix=".imbalance-", dir=source.parent))  # beside DIR: hard links need its device
    try:
        sizes = link_subset(source, work / "data", args.max_per_class, args.ratio, args.subset_seed)
        print(f"long-tailed subset of {source} ({args.ratio:g}:1): " + ", ".join(f"{k} {n}" for k, n in sizes.items()))
        print(
            "| --balance | final epoch: balanced accuracy | accuracy | best.pt: balanced accuracy | accuracy "
            "| seeds |\n|---|---|---|---|---|---|"
        )
        for balance in (False, True):
            balanced, plain, final_balanced, final_plain = [], [], [], []
            for seed in args.seeds:
                config = TrainConfig(
                    dataset="folder",
                    data_dir=str(work / "data"),
                    out=str(work / f"run-{balance}-{seed}"),
                    seed=seed,
                    balance=balance,
                    epochs=args.epochs,
                    eval_every=args.eval_every,
                    model=args.model,
                    image_size=args.image_size,
                    device=args.device,
                    cache_dir="",
                    quiet=True,
                )
                summary = train(config)
                balanced.append(summary.get("best_test_balanced_accuracy") or float("nan"))
                plain.append(summary["best_test_accuracy"])
                with open(work / f"run-{balance}-{seed}" / "metrics.csv", newline="") as f:
                    last = list(csv.DictReader(f))[-1]
                final_balanced.append(float(last.get("test_balanced_accuracy") or "nan"))
                final_plain.append(float(last["test_accuracy"]))
            print(
                f"| {'on' if balance else 'off'} | {mean_std(final_balanced)} | {mean_std(final_plain)} | "
                f"{mean_std(balanced)} | {mean_std(plain)} | {args.seeds} |"
            )
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
