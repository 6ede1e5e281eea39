"""Photos that are not square: squash them to a square, or take the centre square of the shorter side first (what
ImageNet's evaluation does, and since this measurement the tool's), on real photographs cut to a phone camera's 4:3.

    python benchmarks/resize_policy.py CIFAR-10-images/ --per-class 500 --seeds 0 1 2

CIFAR-10's photographs are square, so the benchmark makes them the shape of phone photos first: each one is cut to
4:3, landscape (32 x 24) or portrait (24 x 32) at random, at a random offset. Then two folders of the same photos,
each already square, so that the tool's own policy plays no part: one squashed to 32 x 32 (preprocess.resize, the
tool's resize, as the tool did before), one cut to the centre square of the shorter side (24 x 24, which the tool
then scales to 32). Saved losslessly (PNG); each folder is trained with the defaults and each seed. Prints the best
test accuracy of each run and the means, in a markdown table.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import torchvision.transforms.v2.functional as TF
from PIL import Image
from small_folder import seeds_row, table_head

from resnetlab.config import TrainConfig
from resnetlab.imagefiles import centre_square
from resnetlab.preprocess import resize


def cut_to_phone_shape(image: Image.Image, rng: random.Random) -> Image.Image:
    """A 4:3 piece of the square image, landscape or portrait at random, at a random offset."""
    side = image.width
    short = side * 3 // 4
    offset = rng.randrange(side - short + 1)
    if rng.random() < 0.5:
        return image.crop((0, offset, side, offset + short))  # landscape
    return image.crop((offset, 0, offset + short, side))  # portrait


def make_folders(
    source: Path, classes: list[str], per_class: int, test_per_class: int, root: Path, seed: int
) -> tuple[Path, Path]:
    rng = random.Random(seed)
    squash, crop = root / "squash", root / "crop"
    for split, count in (("train", per_class), ("test", test_per_class)):
        for name in classes:
            for folder in (squash, crop):
                (folder / split / name).mkdir(parents=True)
            for path in sorted((source / split / name).glob("*.jpg"))[:count]:
                with Image.open(path) as image:
                    photo = cut_to_phone_shape(image.convert("RGB"), rng)
                squashed = resize(TF.pil_to_tensor(photo)[None], max(photo.size))[0]  # 32 x 24 -> 32 x 32
                TF.to_pil_image(squashed).save(squash / split / name / f"{path.stem}.png")
                centre_square(photo).save(crop / split / name / f"{path.stem}.png")
    return squash, crop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a folder with train/<class>/*.jpg and test/<class>/*.jpg")
    parser.add_argument("--classes", nargs="+", default=None, help="default: every class folder of train/")
    parser.add_argument("--per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    classes = args.classes or sorted(p.name for p in (args.source / "train").iterdir() if p.is_dir())
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        squash, crop = make_folders(args.source, classes, args.per_class, args.test_per_class, work, seed=0)
        print(table_head(args.seeds).replace("setting", "resize policy", 1))
        for label, folder in [("squash to a square", squash), ("centre square of the shorter side (the tool's)", crop)]:
            configs = [
                TrainConfig(
                    dataset="folder",
                    data_dir=str(folder),
                    seed=seed,
                    quiet=True,
                    out=str(work / f"run-{folder.name}-{seed}"),
                    cache_dir=str(work / "cache"),
                )
                for seed in args.seeds
            ]
            print(seeds_row(label, configs), flush=True)
    print(
        f"\n{len(classes)} classes, {args.per_class} training and {args.test_per_class} test photographs each, "
        "cut to 4:3 (CIFAR-10-images: JPEG copies of CIFAR-10)."
    )


if __name__ == "__main__":
    main()
