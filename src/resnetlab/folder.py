"""A user's own images: DIR/train/<class>/<image> and DIR/test/<class>/<image> (or DIR/val/...), or simply
DIR/<class>/<image>, of which a stratified share of each class is held out for validation.

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
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .batches import ImageData
from .errors import UserError
from .imagefiles import IMAGE_SUFFIXES, decode, file_is_grayscale, is_image_file

FOLDER_LAYOUT = ("train/<class>/<image>", "test/<class>/<image>")


@dataclass(frozen=True)
class Holdout:
    """How DIR/<class>/<image> is split: `fraction` of each class, drawn with `seed`, held out for validation;
    or exactly `files` (paths relative to DIR), as a checkpoint records them."""

    fraction: float = 0.2
    seed: int = 0
    files: tuple[str, ...] = ()


def has_splits(root: Path) -> bool:
    return (root / "train").is_dir()


def find_folder(root: Path) -> str | None:
    """root when it holds images as train/ + test/ or as class folders, else None."""
    if has_splits(root):
        return str(root)
    if root.is_dir() and any(e.is_dir() and not e.name.startswith(".") for e in os.scandir(root)):
        return str(root)
    return None


def _split_dir(root: Path, train: bool) -> Path:
    if not root.is_dir():
        raise UserError(f"the image folder {root} does not exist; give --data-dir a folder of class folders (or with "
                        "train/ and test/ in it).")  # fmt: skip
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

    def classes(self, split: Path) -> list[str]:
        """The class folders of a split, sorted (their images not listed)."""
        return [entry.name for entry in sorted(os.scandir(split), key=lambda e: e.name)
                if not entry.name.startswith(".") and not (entry.is_symlink() and not self._follow(entry))
                and entry.is_dir()]  # fmt: skip

    def split(self, split: Path) -> tuple[list[str], list[tuple[str, int]]]:
        """The classes of a split (sorted) and its (file, class index) samples."""
        classes = self.classes(split)
        samples = [(path, i) for i, name in enumerate(classes) for path in self.images(str(split / name))]
        empty = [name for i, name in enumerate(classes) if not any(label == i for _, label in samples)]
        if not classes or empty:
            plural = "s" if len(empty) > 1 else ""
            where = f"the class folder{plural} {', '.join(empty)}" if empty else "no class folder"
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
    names = ("train", "test", "val")
    splits = [root / name for name in names if (root / name).is_dir()] if has_splits(root) else [root]
    for split in splits:
        for path, _ in _Walk(root).split(split)[1]:
            if not file_is_grayscale(path):
                return 3
    return 1


def held_out(root: Path, samples: list[tuple[str, int]], classes: list[str], holdout: Holdout) -> set[str]:
    """The validation files (relative to root): the recorded ones, or a stratified random share of each class."""
    if holdout.files:
        missing = [f for f in holdout.files if not (root / f).is_file()]
        if missing:
            raise UserError(f"{len(missing)} of the {len(holdout.files)} held-out images this model was validated "
                            f"on are no longer in {root} (e.g. {missing[0]}); give the folder as it was when trained, "
                            "or train again.")  # fmt: skip
        return set(holdout.files)
    generator = torch.Generator().manual_seed(holdout.seed)
    chosen = set()
    for label, name in enumerate(classes):
        files = [os.path.relpath(path, root) for path, i in samples if i == label]
        if len(files) < 2:
            raise UserError(f"the class {name} in {root} has only one image, and holding out a validation share "
                            "needs at least two per class; add images, or give train/ and test/ folders.")  # fmt: skip
        count = min(max(1, round(len(files) * holdout.fraction)), len(files) - 1)
        chosen |= {files[i] for i in torch.randperm(len(files), generator=generator)[:count].tolist()}
    return chosen


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


def _check_same_classes(root: Path, classes: list[str]) -> None:
    train_classes = _Walk(root).classes(_split_dir(root, True))  # the names suffice: no second walk of the images
    if classes != train_classes:
        split_dir = _split_dir(root, False)
        only_train = sorted(set(train_classes) - set(classes))
        only_test = sorted(set(classes) - set(train_classes))
        raise UserError(
            f"{root / 'train'} and {split_dir} must have the same class folders (only in train: "
            f"{only_train or '-'}; only in {split_dir.name}: {only_test or '-'}); rename or add folders so they match."
        )


def _select(root: Path, train: bool, holdout: Holdout) -> tuple[list[str], list[tuple[str, int]], list[str], tuple]:
    """Classes, samples, notes and held-out files of one split: from train/ and test/, or held out of DIR/<class>."""
    if has_splits(root):
        classes, samples, skipped = list_split(root, train)
        if not train:
            _check_same_classes(root, classes)
        held: tuple[str, ...] = ()
    else:
        if not root.is_dir():
            _split_dir(root, train)  # says the folder does not exist
        walk = _Walk(root)
        classes, samples = walk.split(root)
        skipped = walk.skipped
        held = tuple(sorted(held_out(root, samples, classes, holdout)))
        keep = set(held)
        samples = [(p, i) for p, i in samples if (os.path.relpath(p, root) in keep) != train]
    notes = [f"skipped {len(skipped)} link(s) that lead back into the dataset or nowhere: "
             f"{', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}"] if skipped else []  # fmt: skip
    if held and train:
        how = "as the checkpoint records them" if holdout.files else \
            f"{holdout.fraction:.0%} of each class, seed {holdout.seed}"  # fmt: skip
        notes.insert(0, f"{root} has no train/ and test/ folders: {len(held)} images ({how}) are held out for "
                     "validation and reported as the test split; the list is kept in the checkpoint and in the run "
                     "folder's split.json")  # fmt: skip
    return classes, samples, notes, held


def load_folder_split(root: Path, train: bool, image_size: int, channels: int | None = None,
                      holdout: Holdout | None = None) -> ImageData:  # fmt: skip
    """Load one split of an image folder into memory.

    Images are grayscale when every image of the folder (all splits) is, RGB otherwise, unless channels is
    given. The mean and std are measured on this split; a test split is normalized with the train split's.
    Without train/ and test/ folders, the split is `holdout`'s (by default 20% of each class, seed 0).
    """
    classes, samples, notes, held = _select(root, train, holdout or Holdout())
    if channels is None:
        channels = _channels_of(root)
    images = decode_all([path for path, _ in samples], channels, image_size)
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    pixels = images.float().div_(255).transpose(0, 1).reshape(channels, -1)
    mean = tuple(pixels.mean(1).tolist())
    std = tuple(pixels.std(1).clamp_min(1e-3).tolist())
    source = str(_split_dir(root, train)) if has_splits(root) else str(root)
    return ImageData(images, labels, classes, mean, std, source=source, notes=notes, holdout=held)
