"""A user's own images: DIR/train/<class>/<image> and DIR/test/<class>/<image> (or DIR/val/...).

The rules, the same for every split: a class is a folder directly under the split; its images are the files
with an image suffix (imagefiles.IMAGE_SUFFIXES) anywhere below it, in nested folders too. Hidden files and
folders (names starting with ".", such as .ipynb_checkpoints or macOS's ._photo.jpg) are skipped. A file is
counted once, however many links lead to it, and a link that leads back into the dataset, or nowhere, is
skipped and named.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from tqdm import tqdm

from .batches import ImageData
from .errors import UserError
from .imagefiles import IMAGE_SUFFIXES, decode, file_is_grayscale, is_image_file

FOLDER_LAYOUT = ("train/<class>/<image>", "test/<class>/<image>")


def find_folder(root: Path) -> str | None:
    return str(root) if (root / "train").is_dir() else None


def _split_dir(root: Path, train: bool) -> Path:
    if not root.is_dir():
        raise UserError(f"the image folder {root} does not exist; give --data-dir a folder with train/ and test/ in it.")
    names = ["train"] if train else ["test", "val"]
    for name in names:
        if (root / name).is_dir():
            return root / name
    wanted = "train/" if train else "test/ (or val/)"
    raise UserError(f"{root} has no {wanted} folder; put images in {root}/{names[0]}/<class name>/.")


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class _Walk:
    """Lists a split's images by the rules above, remembering the links it skipped."""

    def __init__(self, root: Path) -> None:
        self.root = os.path.realpath(root)
        self.seen: set[str] = set()
        self.skipped: list[str] = []

    def _follow(self, entry: os.DirEntry) -> bool:
        """Whether a link may be followed: it leads somewhere, and (for a folder) outside the dataset."""
        target = os.path.realpath(entry.path)
        if not os.path.exists(target) or (os.path.isdir(target) and _inside(target, self.root)):
            self.skipped.append(entry.path)
            return False
        return True

    def images(self, folder: str) -> list[str]:
        found, pending, visited = [], [folder], set()
        while pending:
            current = pending.pop()
            if os.path.realpath(current) in visited:
                continue
            visited.add(os.path.realpath(current))
            try:
                entries = sorted(os.scandir(current), key=lambda e: e.name)
            except OSError as e:
                raise UserError(f"cannot read the folder {current} ({e.strerror}); fix its permissions.") from None
            for entry in entries:
                if entry.name.startswith(".") or (entry.is_symlink() and not self._follow(entry)):
                    continue
                if entry.is_dir():
                    pending.append(entry.path)
                elif entry.is_file() and is_image_file(entry.name) and os.path.realpath(entry.path) not in self.seen:
                    self.seen.add(os.path.realpath(entry.path))
                    found.append(entry.path)
        return sorted(found)

    def split(self, split: Path) -> tuple[list[str], list[tuple[str, int]]]:
        """The classes of a split (sorted) and its (file, class index) samples."""
        classes = []
        for entry in sorted(os.scandir(split), key=lambda e: e.name):
            if entry.name.startswith(".") or (entry.is_symlink() and not self._follow(entry)) or not entry.is_dir():
                continue
            classes.append(entry.name)
        samples = [(path, i) for i, name in enumerate(classes) for path in self.images(str(split / name))]
        empty = [name for i, name in enumerate(classes) if not any(label == i for _, label in samples)]
        if not classes or empty:
            where = f"the class folder{'s' if len(empty) > 1 else ''} {', '.join(empty)}" if empty else "no class folder"
            raise UserError(f"{split}: {where} has no images; every class folder needs at least one image "
                            f"({' '.join(IMAGE_SUFFIXES)}).")  # fmt: skip
        return classes, samples


def list_split(root: Path, train: bool) -> tuple[list[str], list[tuple[str, int]], list[str]]:
    """Classes, samples and skipped links of one split of an image folder."""
    walk = _Walk(root)
    classes, samples = walk.split(_split_dir(root, train))
    return classes, samples, walk.skipped


def _channels_of(root: Path) -> int:
    """1 when every image of the folder (all splits) is grayscale, else 3."""
    for name in ("train", "test", "val"):
        if (root / name).is_dir():
            for path, _ in _Walk(root).split(root / name)[1]:
                if not file_is_grayscale(path):
                    return 3
    return 1


def decode_all(paths: list[str], channels: int, size: int) -> torch.Tensor:
    """Decode image files into one uint8 tensor [N, C, size, size], on every core (Pillow's decoders release the
    GIL), with a progress bar on a terminal."""
    images = torch.empty(len(paths), channels, size, size, dtype=torch.uint8)

    def put(i: int) -> None:
        images[i] = decode(paths[i], channels, size)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        work = pool.map(put, range(len(paths)))
        for _ in tqdm(work, total=len(paths), desc="decoding images", unit="img", leave=False, file=sys.stderr,
                      disable=not sys.stderr.isatty() or len(paths) < 1000):  # fmt: skip
            pass
    return images


def load_folder_split(root: Path, train: bool, image_size: int, channels: int | None = None) -> ImageData:
    """Load one split of an image folder into memory.

    Images are grayscale when every image of the folder (all splits) is, RGB otherwise, unless channels is
    given. The mean and std are measured on this split; a test split is normalized with the train split's.
    """
    classes, samples, skipped = list_split(root, train)
    if not train:
        train_classes = list_split(root, True)[0]
        if classes != train_classes:
            split_dir = _split_dir(root, False)
            only_train = sorted(set(train_classes) - set(classes))
            only_test = sorted(set(classes) - set(train_classes))
            raise UserError(
                f"{root / 'train'} and {split_dir} must have the same class folders (only in train: "
                f"{only_train or '-'}; only in {split_dir.name}: {only_test or '-'}); rename or add folders so they "
                "match."
            )
    if channels is None:
        channels = _channels_of(root)
    images = decode_all([path for path, _ in samples], channels, image_size)
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    pixels = images.float().div_(255).transpose(0, 1).reshape(channels, -1)
    mean = tuple(pixels.mean(1).tolist())
    std = tuple(pixels.std(1).clamp_min(1e-3).tolist())
    notes = [f"skipped {len(skipped)} link(s) that lead back into the dataset or nowhere: "
             f"{', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}"] if skipped else []  # fmt: skip
    return ImageData(images, labels, classes, mean, std, source=str(_split_dir(root, train)), notes=notes)
