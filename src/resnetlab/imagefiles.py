"""Image files as model input: which files count as images, and how one is decoded into uint8 pixels.

One set of rules for training on folders, `predict`, `explain` and `serve`: the suffixes are torchvision's
(what ImageFolder reads), the rotation stored in EXIF is applied, 16-bit images are scaled to 8 bits, and an
image with more than MAX_IMAGE_PIXELS pixels is refused from its header, before it is decoded.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError
from .preprocess import resize

# torchvision.datasets.folder.IMG_EXTENSIONS, which folder training uses through ImageFolder's rules.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# A 36-megapixel phone photo is an ordinary image; a few hundred KB of PNG can claim billions of pixels.
MAX_IMAGE_PIXELS = 64_000_000
GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "La"}


def is_image_file(path: str | Path) -> bool:
    """An image by its suffix, and not a hidden file (macOS writes ._name.jpg beside every photo it copies)."""
    name = Path(path).name
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


class ImageFileError(UserError):
    """An image file that cannot be used: not an image, damaged, or too large."""


class ImageTooLarge(ImageFileError):
    """An image with more pixels than the limit, told from its header."""


def _open(source: str | Path | IO[bytes], name: str, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Image.open with the pixel limit checked from the header, as one sentence."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge(
            f"{name} has far too many pixels (over {max_pixels:,}); resize it to a smaller image."
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageFileError(
            f"{name} is not a readable image ({e}); remove it or replace it with a valid image."
        ) from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageTooLarge(
            f"{name} is {width}x{height} pixels, more than the {max_pixels:,} resnetlab reads; "
            "resize it to a smaller image."
        )
    return image


def is_grayscale(image: Image.Image) -> bool:
    """Whether an opened image holds gray levels only (a palette counts when all its colours are gray)."""
    if image.mode == "P":
        palette = np.asarray(image.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
        return bool((palette == palette[:, :1]).all())
    return image.mode in GRAYSCALE_MODES


def image_header(source: str | Path | IO[bytes], name: str) -> tuple[int, int, bool]:
    """Width, height and whether the image is grayscale, from its header (the pixel limit checked, as decode
    does); raises ImageFileError or ImageTooLarge."""
    with _open(source, name) as image:
        return image.size[0], image.size[1], is_grayscale(image)


def file_is_grayscale(path: str | Path) -> bool:
    """is_grayscale from the file's header, without decoding its pixels."""
    with _open(path, str(path)) as image:
        return is_grayscale(image)


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit gray images scaled to 8 bits (Pillow's own conversion clips them at 255)."""
    if image.mode.startswith("I;16"):
        array = np.asarray(image, dtype=np.uint16).astype(np.float32) / 257
    elif image.mode == "I":
        array = np.asarray(image, dtype=np.int64).astype(np.float32)
        array = array / 257 if array.max() > 255 else array  # 16-bit PNGs open as "I"
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float32)
        array = array * 255 if array.max() <= 1 else array
    else:
        return image
    return Image.fromarray(np.clip(array.round(), 0, 255).astype(np.uint8), mode="L")


def centre_square(image: Image.Image) -> Image.Image:
    """The centre square of the image's shorter side (the image itself when it is square)."""
    width, height = image.size
    if width == height:
        return image
    short = min(width, height)
    left, top = (width - short) // 2, (height - short) // 2
    return image.crop((left, top, left + short, top + short))


def decode(
    source: str | Path | IO[bytes],
    channels: int,
    size: int,
    name: str | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> torch.Tensor:
    """An image file (or file object) as uint8 pixels [channels, size, size].

    JPEGs are decoded at a reduced scale where that still leaves at least twice the target size (draft mode),
    and large images are box-reduced before the final antialiased resize, so memory follows the output size
    more than the file's. EXIF rotation is applied; the image is converted to grayscale or RGB. An image that is
    not square is cut to the centre square of its shorter side, then resized (measured against squashing the
    whole image to a square: benchmarks/resize_policy.py, 64.11% against 63.19% on 4:3 photographs, 3 seeds).
    """
    # A file object's name, a path's whole path (Path.name would drop its folder).
    name = name or str(source if isinstance(source, (str, Path)) else getattr(source, "name", source))
    image = _open(source, name, max_pixels)
    try:
        with image:
            image.draft("L" if channels == 1 else "RGB", (2 * size, 2 * size))  # JPEG only; others ignore it
            image.load()
            image = _to_8bit(image)
            ImageOps.exif_transpose(image, in_place=True)  # a copy would double the decoded image's memory
            if image.mode in ("1", "P", "PA"):
                # reduce() refuses these modes, and Pillow warns when a palette with alpha goes straight to RGB
                alpha = image.mode == "PA" or "transparency" in image.info
                image = image.convert("L" if image.mode == "1" else "RGBA" if alpha else "RGB")
            factor = min(image.size) // (2 * size)
            if factor >= 2:
                image = image.reduce(factor)
            image = centre_square(image).convert("L" if channels == 1 else "RGB")
    except ImageFileError:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageFileError(
            f"{name} is not a readable image ({e}); remove it or replace it with a valid image."
        ) from None
    array = np.asarray(image, dtype=np.uint8)
    pixels = torch.from_numpy(array.reshape(array.shape[0], array.shape[1], -1).copy()).permute(2, 0, 1)
    return resize(pixels[None], size)[0]


def expand_image_paths(inputs: list[str]) -> list[Path]:
    """Image files named directly, and the image files inside named folders (recursively, sorted, hidden files
    and folders skipped)."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(_images_under(path))
            if not found:
                raise UserError(f"the folder {path} has no image files ({', '.join(IMAGE_SUFFIXES)}).")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise UserError(f"{path} does not exist; give image files or folders of images.")
    return paths


def _images_under(folder: Path) -> Iterator[Path]:
    for path in folder.rglob("*"):
        hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
        if not hidden and path.is_file() and is_image_file(path):
            yield path
