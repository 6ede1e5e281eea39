"""Transfer from your own checkpoint (`train --init`): train on 5 CIFAR-10 classes, then fine-tune on a few
photographs of each of the 5 others, with and without --init, several seeds.

    python benchmarks/transfer.py CIFAR-10-images/ --per-class 50 --seeds 0 1 2

The source run trains `resnetlab train --dataset folder` (the defaults: resnet9, --recipe photo, 4 epochs at its
size) on all training photographs of --source-classes. Each target run trains on the first --per-class training
photographs of each --target-class, from random weights or from the source run (--init: a new head), with the
size-based defaults, and is tested on --test-per-class test photographs of each target class. Prints the best
test accuracy of each run and the means, in a markdown table.

--schedules also fine-tunes with other schedules than the tool's, to choose between them: `lr-X` (the backbone at X
times the head's learning rate, e.g. lr-0.1), and `frozen-N` (fastai's fine_tune: the backbone frozen for the first
N epochs, then trained at the head's learning rate). The benchmark sets them by patching the engine; the tool has
one (config.FINE_TUNE_BACKBONE_LR).

    python benchmarks/transfer.py CIFAR-10-images/ --schedules tool lr-0.1 frozen-1 frozen-10
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from pathlib import Path

from small_folder import seeds_row, table_head

from resnetlab import engine
from resnetlab.config import TrainConfig, fine_tune_rates
from resnetlab.engine import train
from resnetlab.transfer import HEAD

SOURCE = ["airplane", "automobile", "bird", "cat", "deer"]
TARGET = ["dog", "frog", "horse", "ship", "truck"]


def make_folder(source: Path, classes: list[str], per_class: int | None, test_per_class: int, root: Path) -> Path:
    for name in classes:
        for split, count in (("train", per_class), ("test", test_per_class)):
            (root / split / name).mkdir(parents=True)
            for path in sorted((source / split / name).glob("*.jpg"))[:count]:
                shutil.copy(path, root / split / name / path.name)
    return root


def describe_schedule(name: str) -> str:
    if name.startswith("frozen-"):
        return f"backbone frozen for {name.removeprefix('frozen-')} epochs, then at the head's lr"
    if name.startswith("lr-"):
        return f"backbone at {name.removeprefix('lr-')}x the head's lr"
    return f"the tool's: {fine_tune_rates()}"


@contextlib.contextmanager
def schedule(name: str):
    """Fine-tune with schedule `name` instead of the tool's (see the module's help)."""
    if name == "tool":
        yield None
        return
    initialize, scale = engine.initialize, engine.FINE_TUNE_BACKBONE_LR
    frozen_epochs = int(name.removeprefix("frozen-")) if name.startswith("frozen-") else 0
    backbone: list = []

    def initialize_frozen(net, card, start):
        initialize(net, card, start)
        backbone[:] = [p for n, p in net.named_parameters() if not n.startswith(HEAD)]
        for p in backbone:
            p.requires_grad_(False)  # no gradient: SGD skips them (no step, no decay, no momentum)

    def unfreeze(row, network):
        if row["epoch"] == frozen_epochs:
            for p in backbone:
                p.requires_grad_(True)

    engine.FINE_TUNE_BACKBONE_LR = float(name.removeprefix("lr-")) if name.startswith("lr-") else 1.0
    if frozen_epochs:
        engine.initialize = initialize_frozen
    try:
        yield unfreeze if frozen_epochs else None
    finally:
        engine.initialize, engine.FINE_TUNE_BACKBONE_LR = initialize, scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a folder with train/<class>/*.jpg and test/<class>/*.jpg")
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--source-per-class", type=int, default=None, help="default: all (5,000 in CIFAR-10)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--schedules",
        nargs="+",
        default=["tool"],
        help="fine-tuning schedules of the --init runs: tool, lr-X, frozen-N",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        cache = str(work / "cache")
        started = time.perf_counter()
        source_data = make_folder(args.source, SOURCE, args.source_per_class, args.test_per_class, work / "source")
        summary = train(
            TrainConfig(
                dataset="folder", data_dir=str(source_data), out=str(work / "source-run"), quiet=True, cache_dir=cache
            )
        )
        print(
            f"source run: {', '.join(SOURCE)}, all training photographs: {summary['model']}, "
            f"{summary['epochs']} epochs, best test accuracy {summary['best_test_accuracy']:.2%} "
            f"({time.perf_counter() - started:.0f} s)\n",
            flush=True,
        )
        target_data = make_folder(args.source, TARGET, args.per_class, args.test_per_class, work / "target")
        print(table_head(args.seeds).replace("setting", "start", 1))
        runs = [("random weights", None, "tool")] + [
            (f"--init the source run, {describe_schedule(name)}", str(work / "source-run"), name)
            for name in args.schedules
        ]
        for label, init, name in runs:
            configs = [
                TrainConfig(
                    dataset="folder",
                    data_dir=str(target_data),
                    seed=seed,
                    init=init,
                    quiet=True,
                    out=str(work / f"target-{seed}-{init is not None}-{name}"),
                    cache_dir=cache,
                )
                for seed in args.seeds
            ]
            with schedule(name) as on_epoch:
                print(seeds_row(label, configs, on_epoch), flush=True)
    print(
        f"\ntarget: {', '.join(TARGET)}, {args.per_class} training photographs each; tested on "
        f"{args.test_per_class} test photographs of each."
    )


if __name__ == "__main__":
    main()
