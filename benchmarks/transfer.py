"""Transfer from your own checkpoint (`train --init`): train on 5 CIFAR-10 classes, then fine-tune on a few
photographs of each of the 5 others, with and without --init, several seeds.

    python benchmarks/transfer.py CIFAR-10-images/ --per-class 50 --seeds 0 1 2

The source run trains `resnetlab train --dataset folder` (the defaults: resnet9, --recipe photo, 4 epochs at its
size) on all training photographs of --source-classes. Each target run trains on the first --per-class training
photographs of each --target-class, from random weights or from the source run (--init: new head, backbone at
0.1x the learning rate), with the size-based defaults, and is tested on --test-per-class test photographs of each
target class. Prints the best test accuracy of each run and the means, in a markdown table.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from small_folder import seeds_row, table_head

from resnetlab.config import TrainConfig
from resnetlab.engine import train

SOURCE = ["airplane", "automobile", "bird", "cat", "deer"]
TARGET = ["dog", "frog", "horse", "ship", "truck"]


def make_folder(source: Path, classes: list[str], per_class: int | None, test_per_class: int, root: Path) -> Path:
    for name in classes:
        for split, count in (("train", per_class), ("test", test_per_class)):
            (root / split / name).mkdir(parents=True)
            for path in sorted((source / split / name).glob("*.jpg"))[:count]:
                shutil.copy(path, root / split / name / path.name)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a folder with train/<class>/*.jpg and test/<class>/*.jpg")
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--test-per-class", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        cache = str(work / "cache")
        started = time.perf_counter()
        source_data = make_folder(args.source, SOURCE, None, args.test_per_class, work / "source")
        summary = train(TrainConfig(dataset="folder", data_dir=str(source_data), out=str(work / "source-run"),
                                    quiet=True, cache_dir=cache))  # fmt: skip
        print(f"source run: {', '.join(SOURCE)}, all training photographs: {summary['model']}, "
              f"{summary['epochs']} epochs, best test accuracy {summary['best_test_accuracy']:.2%} "
              f"({time.perf_counter() - started:.0f} s)\n", flush=True)  # fmt: skip
        target_data = make_folder(args.source, TARGET, args.per_class, args.test_per_class, work / "target")
        print(table_head(args.seeds).replace("setting", "start", 1))
        for label, init in [("random weights", None), ("--init the source run", str(work / "source-run"))]:
            configs = [TrainConfig(dataset="folder", data_dir=str(target_data), seed=seed, init=init, quiet=True,
                                   out=str(work / f"target-{seed}-{init is not None}"), cache_dir=cache)
                       for seed in args.seeds]  # fmt: skip
            print(seeds_row(label, configs), flush=True)
    print(f"\ntarget: {', '.join(TARGET)}, {args.per_class} training photographs each; tested on "
          f"{args.test_per_class} test photographs of each.")


if __name__ == "__main__":
    main()
