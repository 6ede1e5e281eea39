"""A user's own images: DIR/train/<class>/<image> and DIR/test/<class>/<image> (or DIR/val/...)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import UserError

GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "F", "P;L"}


def _split_dir(root: Path, train: bool) -> Path:
    if not root.is_dir():
        raise UserError(f"the image folder {root} does not exist; give --data-dir a folder with train/ and test/ in it.")
    names = ["train"] if train else ["test", "val"]
    for name in names:
        if (root / name).is_dir():
            return root / name
    wanted = "train/" if train else "test/ (or val/)"
    raise UserError(f"{root} has no {wanted} folder; put images in {root}/{names[0]}/<class name>/.")


def _list_images(split: Path) -> tuple[list[str], list[tuple[str, int]]]:
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS

    try:
        folder = ImageFolder(str(split), loader=lambda p: p, allow_empty=False)
    except FileNotFoundError as e:
        exts = " ".join(IMG_EXTENSIONS)
        raise UserError(f"{split}: {e} Every class folder needs at least one image ({exts}).") from None
    return folder.classes, folder.samples


def _is_grayscale(image: Image.Image) -> bool:
    if image.mode == "P":
        palette = np.asarray(image.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
        return bool((palette == palette[:, :1]).all())
    return image.mode in GRAYSCALE_MODES


def open_image(path: str | Path) -> Image.Image:
    """Open an image file fully (so a truncated file fails here, with its name)."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy() if image.mode != "P" else image.convert("RGBA" if "transparency" in image.info else "RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UserError(f"{path} is not a readable image ({e}); remove it or replace it with a valid image.") from None


def image_to_tensor(image: Image.Image, channels: int, size: int) -> torch.Tensor:
    """A PIL image as uint8 [C, size, size]: converted to grayscale or RGB and resized."""
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _channels_of(samples: list[tuple[str, int]]) -> int:
    for path, _ in samples:
        try:
            with Image.open(path) as image:
                gray = _is_grayscale(image)
        except (UnidentifiedImageError, OSError) as e:
            raise UserError(f"{path} is not a readable image ({e}); remove it or replace it with a valid image.") from None
        if not gray:
            return 3
    return 1


def _all_samples(root: Path) -> list[tuple[str, int]]:
    samples = []
    for name in ("train", "test", "val"):
        if (root / name).is_dir():
            samples += _list_images(root / name)[1]
    return samples


def load_folder_split(root: Path, train: bool, image_size: int, channels: int | None = None):
    """Load one split of an image folder into memory.

    Images are grayscale when every image of the folder (all splits) is, RGB otherwise, unless channels is
    given. The mean and std are measured on this split; a test split is normalized with the train split's.
    """
    from .data import ImageData

    train_dir = _split_dir(root, True)
    classes, samples = _list_images(train_dir)
    split_dir = train_dir
    if not train:
        split_dir = _split_dir(root, False)
        test_classes, samples = _list_images(split_dir)
        if test_classes != classes:
            only_train = sorted(set(classes) - set(test_classes))
            only_test = sorted(set(test_classes) - set(classes))
            raise UserError(
                f"{train_dir} and {split_dir} must have the same class folders (only in train: {only_train or '-'}; "
                f"only in {split_dir.name}: {only_test or '-'}); rename or add folders so they match."
            )
    if channels is None:
        channels = _channels_of(_all_samples(root))
    images = torch.stack([image_to_tensor(open_image(path), channels, image_size) for path, _ in samples])
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    pixels = images.float().div_(255).transpose(0, 1).reshape(channels, -1)
    mean = tuple(pixels.mean(1).tolist())
    std = tuple(pixels.std(1).clamp_min(1e-3).tolist())
    return ImageData(images, labels, classes, mean, std, source=str(split_dir))
