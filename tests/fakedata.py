"""Tiny datasets written in each dataset's real on-disk format, with a learnable pattern per class.

Class k draws a bright block in the k-th cell of a grid on a dark noisy background, so a small model
learns them in a few steps, and a label or normalization slip is visible as low accuracy.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def pattern_images(labels: np.ndarray, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """uint8 [N, size, size, channels] images whose bright block's position encodes the label."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    images = rng.integers(0, 60, size=(n, size, size, channels), dtype=np.uint8)
    cell = size // 4
    for i, label in enumerate(labels):
        r, c = divmod(int(label) % 16, 4)
        images[i, r * cell : (r + 1) * cell, c * cell : (c + 1) * cell, :] = 200 + rng.integers(0, 55)
    return images


def labels_for(n: int, num_classes: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed + 1).permutation(np.arange(n) % num_classes).astype(np.uint8)


def _write_idx_images(path: Path, images: np.ndarray) -> None:
    n, h, w = images.shape
    path.write_bytes(struct.pack(">IIII", 0x00000803, n, h, w) + images.tobytes())


def _write_idx_labels(path: Path, labels: np.ndarray) -> None:
    path.write_bytes(struct.pack(">II", 0x00000801, len(labels)) + labels.astype(np.uint8).tobytes())


def write_idx_files(folder: Path, n_train: int, n_test: int, gz: bool = False) -> dict[str, np.ndarray]:
    """The four MNIST-style IDX files in folder (plain, or gzipped as Debian ships them)."""
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 100)):
        labels = labels_for(n, seed=seed)
        images = pattern_images(labels, 28, 1, seed=seed)[..., 0]
        arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"] = images, labels
        _write_idx_images(folder / f"{prefix}-images-idx3-ubyte", images)
        _write_idx_labels(folder / f"{prefix}-labels-idx1-ubyte", labels)
    if gz:
        for path in list(folder.iterdir()):
            with open(path, "rb") as fin, gzip.open(f"{path}.gz", "wb") as fout:
                fout.write(fin.read())
            path.unlink()
    return arrays


def write_mnist_like(root: Path, torchvision_class: str, n_train: int = 200, n_test: int = 100) -> dict:
    """torchvision's layout: root/<Class>/raw/<idx files>."""
    return write_idx_files(root / torchvision_class / "raw", n_train, n_test)


def write_cifar10(root: Path, n_train: int = 100, n_test: int = 50) -> dict:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    per_batch = n_train // 5
    for i in range(5):
        labels = labels_for(per_batch, seed=i)
        images = pattern_images(labels, 32, 3, seed=i)
        arrays.setdefault("train_labels", []).extend(labels.tolist())
        # CIFAR stores each image as 3072 bytes: the red plane, then green, then blue.
        data = images.transpose(0, 3, 1, 2).reshape(per_batch, -1)
        with open(folder / f"data_batch_{i + 1}", "wb") as f:
            pickle.dump({"data": data, "labels": labels.tolist()}, f)
        if i == 0:
            arrays["first_train_image"] = images[0]
    labels = labels_for(n_test, seed=50)
    images = pattern_images(labels, 32, 3, seed=50)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": images.transpose(0, 3, 1, 2).reshape(n_test, -1), "labels": labels.tolist()}, f)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names}, f)
    arrays["test_labels"], arrays["first_test_image"] = labels, images[0]
    return arrays


def write_svhn(root: Path, n_train: int = 100, n_test: int = 50) -> dict:
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 7)):
        labels = labels_for(n, seed=seed)
        images = pattern_images(labels, 32, 3, seed=seed)
        # SVHN's .mat: X is [32, 32, 3, N]; y is [N, 1] with the digit 0 stored as 10.
        y = np.where(labels == 0, 10, labels).astype(np.uint8).reshape(-1, 1)
        savemat(root / f"{split}_32x32.mat", {"X": images.transpose(1, 2, 3, 0), "y": y})
        arrays[f"{split}_labels"], arrays[f"first_{split}_image"] = labels, images[0]
    return arrays


def write_stl10(root: Path, n_train: int = 30, n_test: int = 20) -> dict:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 3)):
        labels = labels_for(n, seed=seed)
        images = pattern_images(labels, 96, 3, seed=seed)
        # STL-10 stores images column-major: [N, 3, 96 (x), 96 (y)], labels 1..10 as bytes.
        images.transpose(0, 3, 2, 1).tofile(folder / f"{split}_X.bin")
        (labels + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
        arrays[f"{split}_labels"], arrays[f"first_{split}_image"] = labels, images[0]
    (folder / "unlabeled_X.bin").write_bytes(b"")
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    return arrays


def write_image_folder(
    root: Path,
    classes: tuple[str, ...] = ("cat", "dog", "fish"),
    per_class: int = 12,
    modes: tuple[str, ...] = ("RGB",),
    splits: tuple[str, ...] = ("train", "test"),
) -> Path:
    """root/<split>/<class>/<i>.<png|jpg> with images of mixed sizes, formats and the given modes."""
    for s, split in enumerate(splits):
        n = per_class if split == "train" else max(per_class // 2, 2)
        for k, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            labels = np.full(n, k)
            for i, image in enumerate(pattern_images(labels, 40, 3, seed=s * 100 + k)):
                mode = modes[i % len(modes)]
                picture = Image.fromarray(image).convert(mode).resize((40 + 8 * (i % 3), 40 + 4 * (i % 2)))
                suffix = ".png" if i % 2 == 0 or mode not in ("RGB", "L") else ".jpg"
                picture.save(folder / f"{i}{suffix}")
    return root
