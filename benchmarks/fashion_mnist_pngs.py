"""Fashion-MNIST as a folder of PNG files, for `resnetlab check`; and its exact duplicates counted on the arrays.

Writes OUT/train/<class>/<index>.png and OUT/test/<class>/<index>.png (index: the image's 0-based position in its
IDX file, the numbering of zalandoresearch/fashion-mnist issue #44, which listed 43 duplicated pairs in the
training set, 1 in the test set and 10 training images found in the test set, byte for byte, in the release of
August 2017; pull request #45 replaced them). Then prints the same count on these files' pixel arrays, so that
what `resnetlab check OUT` reports can be set against it.

    python benchmarks/fashion_mnist_pngs.py /usr/share/datasets/fashion-mnist fmnist-png/
    resnetlab check fmnist-png/ --json > check.json
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot")


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the folder with the four IDX .gz files")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(args.source / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(args.source / f"{prefix}-labels-idx1-ubyte.gz")
        splits[split] = images
        for name in CLASSES:
            (args.out / split / name).mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels)):
            path = args.out / split / CLASSES[label] / f"{i}.png"
            if not path.exists():
                Image.fromarray(image).save(path)
    where = defaultdict(list)
    for split, images in splits.items():
        for i, image in enumerate(images):
            where[hashlib.blake2b(image.tobytes(), digest_size=16).digest()].append((split, i))
    groups = [g for g in where.values() if len(g) > 1]
    within = {s: sum(1 for g in groups if {p for p, _ in g} == {s}) for s in splits}
    across = [g for g in groups if len({p for p, _ in g}) > 1]
    print(f"wrote {sum(len(x) for x in splits.values())} PNG files under {args.out}")
    print(
        f"identical pixel arrays: {within['train']} groups within train, {within['test']} within test, "
        f"{len(across)} across train and test"
    )


if __name__ == "__main__":
    main()
