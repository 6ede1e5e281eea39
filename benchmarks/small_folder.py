"""A small folder of real photographs: the first fixed default (4 epochs at batch 128), the size-based one with the
model and recipe of before (resnet20, fast), and today's default (size-based, resnet9, photo).

    python benchmarks/small_folder.py CIFAR-10-images/ --classes cat dog --per-class 120 --seeds 0 1 2

Builds DIR/train/<class> from the first --per-class training photographs of each class and DIR/test/<class>
from all of that class's test photographs (1,000 each in CIFAR-10-images), then trains `resnetlab train
--dataset folder` with each setting and seed and prints the best test accuracy of each run and their mean.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path

from resnetlab.config import TrainConfig
from resnetlab.engine import train

SETTINGS = {
    "fixed: 4 epochs, batch 128, resnet20, fast (first)": {
        "epochs": 4,
        "batch_size": 128,
        "model": "resnet20",
        "recipe": "fast",
    },
    "size-based, resnet20, fast (before)": {"model": "resnet20", "recipe": "fast"},
    "size-based, resnet9, photo (the default now)": {},
}


def table_head(seeds: list[int]) -> str:
    return (
        "| setting | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " | mean | epochs, batch |\n|---|"
        + "---|" * (len(seeds) + 2)
    )


def seeds_row(label: str, configs: list[TrainConfig], on_epoch=None) -> str:
    """Train each config (one per seed); a markdown row of their best test accuracies and the mean."""
    summaries = [train(config, on_epoch=on_epoch) for config in configs]
    accuracies = [summary["best_test_accuracy"] for summary in summaries]
    cells = " | ".join(f"{a:.2%}" for a in accuracies)
    shape = f"{summaries[-1]['epochs']}, {summaries[-1]['batch_size']}"
    return f"| {label} | {cells} | **{statistics.mean(accuracies):.2%}** | {shape} |"


def make_folder(source: Path, classes: list[str], per_class: int, root: Path) -> Path:
    for name in classes:
        (root / "train" / name).mkdir(parents=True)
        for path in sorted((source / "train" / name).glob("*.jpg"))[:per_class]:
            shutil.copy(path, root / "train" / name / path.name)
        shutil.copytree(source / "test" / name, root / "test" / name)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a folder with train/<class>/*.jpg and test/<class>/*.jpg")
    parser.add_argument("--classes", nargs="+", default=["cat", "dog"])
    parser.add_argument("--per-class", type=int, default=120)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--model", default=None, help="train this model in every setting")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        data = make_folder(args.source, args.classes, args.per_class, Path(temp) / "photos")
        print(table_head(args.seeds))
        for index, (label, setting) in enumerate(SETTINGS.items()):
            setting = {**setting, "model": args.model} if args.model else setting
            configs = [
                TrainConfig(
                    dataset="folder",
                    data_dir=str(data),
                    seed=seed,
                    quiet=True,
                    out=str(Path(temp) / f"run-{index}-{seed}"),
                    **setting,
                )
                for seed in args.seeds
            ]
            print(seeds_row(label, configs), flush=True)
    print(
        f"\n{len(args.classes)} classes ({', '.join(args.classes)}), {args.per_class} training photographs each; "
        "tested on all their test photographs."
    )


if __name__ == "__main__":
    main()
