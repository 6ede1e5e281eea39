"""Image files as model input: which files count as images, and how one is decoded into uint8 pixels.

One set of rules for training on folders, `check`, `predict`, `explain` and `serve`: the suffixes are those of
the formats in FORMATS that the installed decoders read (image_suffixes), with the phone formats' suffixes always
among them, so that a HEIC photo without its decoder is named rather than left out; the rotation stored in EXIF is
applied, 16-bit images are scaled to 8 bits, and an image with more than MAX_FILE_PIXELS pixels is refused from
its header, before it is decoded.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

from .errors import NotARegularFile, UserError

if TYPE_CHECKING:
    import torch

# A 36-megapixel phone photo is an ordinary image; a few hundred KB of PNG can claim billions of pixels. This limits
# the user's own files (training folders, predict, explain, check), decoded one at a time, so it is the higher of
# two: serve passes its MAX_UPLOAD_PIXELS (40 M) for uploads from anyone, decoded several at once.
MAX_FILE_PIXELS = 64_000_000
GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "La"}


@dataclass(frozen=True)
class PhoneFormat:
    """A format phones save that Pillow may not read by itself, and the extra that installs its decoder."""

    name: str  # as people call it
    pillow: str  # Pillow's name of the format
    extra: str  # pip install 'resnetlab[extra]'
    suffixes: tuple[str, ...]  # known without the decoder, so that its files are named, not left out
    brands: tuple[bytes, ...]  # the brands of its ISO base media file header ("ftyp"), for files without a suffix

    @property
    def needs(self) -> str:
        return f"{self.name} needs pip install 'resnetlab[{self.extra}]'"


PHONE_FORMATS = (
    PhoneFormat("HEIC", "HEIF", "heic", (".heic", ".heif", ".hif"), (b"heic", b"heix", b"hevc", b"heim", b"heis")),
    PhoneFormat("AVIF", "AVIF", "avif", (".avif",), (b"avif", b"avis")),
)
# The formats read, by Pillow's names: those of torchvision's ImageFolder (its suffixes .jpg .png .ppm .pgm .bmp
# .tif .webp), and the phone formats where their decoder is installed.
FORMATS = ("JPEG", "PNG", "PPM", "BMP", "TIFF", "WEBP", *(f.pillow for f in PHONE_FORMATS))


@functools.cache
def _optional_decoders() -> frozenset[str]:
    """Register the phone formats' decoders that are installed (pillow-heif; pillow-avif-plugin where Pillow has
    no AVIF of its own); Pillow's names of the phone formats that can be read."""
    readable = set()
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        pass
    else:
        register_heif_opener()
        readable.add("HEIF")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a Pillow before 11.2 warns of an unknown feature
        pillow_reads_avif = features.check("avif")
    if pillow_reads_avif:
        readable.add("AVIF")
    else:
        try:
            import pillow_avif  # noqa: F401  (registers its decoder with Pillow)
        except ImportError:
            pass
        else:
            readable.add("AVIF")
    return frozenset(readable)


def readable_formats() -> tuple[str, ...]:
    """Pillow's names of the formats read here, as the decoders installed allow."""
    optional = _optional_decoders()
    phone = {f.pillow for f in PHONE_FORMATS}
    return tuple(name for name in FORMATS if name not in phone or name in optional)


@functools.cache
def _suffixes(readable: tuple[str, ...]) -> tuple[str, ...]:
    Image.init()
    known = {suffix for suffix, name in Image.registered_extensions().items() if name in readable}
    return tuple(sorted(known | {suffix for f in PHONE_FORMATS for suffix in f.suffixes}))


def image_suffixes() -> tuple[str, ...]:
    """The suffixes of image files: Pillow's suffixes of the formats read, and the phone formats' always."""
    return _suffixes(readable_formats())


def is_image_file(path: str | Path) -> bool:
    """An image by its suffix, and not a hidden file (macOS writes ._name.jpg beside every photo it copies)."""
    name = Path(path).name
    return not name.startswith(".") and name.lower().endswith(image_suffixes())


class ImageFileError(UserError):
    """An image file that cannot be used: not an image, damaged, or too large."""


class ImageTooLarge(ImageFileError):
    """An image with more pixels than the limit, told from its header."""


class DecoderMissing(ImageFileError):
    """An image of a phone format whose decoder is not installed."""

    def __init__(self, name: str, image_format: PhoneFormat) -> None:
        super().__init__(
            f"{name} is a {image_format.name} image, and {image_format.needs}; install it, or convert the image "
            "to JPEG."
        )
        self.format = image_format


def _head(source: str | Path | IO[bytes], size: int = 64) -> bytes:
    """The first bytes of a file or file object (its position kept), or b"" when they cannot be read."""
    try:
        if isinstance(source, (str, Path)):
            with open(source, "rb") as f:
                return f.read(size)
        position = source.tell()
        head = source.read(size)
        source.seek(position)
        return head
    except (OSError, ValueError):
        return b""


def _unreadable_phone_format(source: str | Path | IO[bytes], name: str) -> PhoneFormat | None:
    """The phone format of an image that the installed decoders cannot read, by its suffix or its header's brands
    (an ISO base media file: "ftyp", the major brand, then the compatible ones); else None."""
    unreadable = [f for f in PHONE_FORMATS if f.pillow not in readable_formats()]
    if not unreadable:
        return None
    suffix = Path(name).suffix.lower()
    head = _head(source)
    brands = {head[i : i + 4] for i in range(8, len(head) - 3, 4)} if head[4:8] == b"ftyp" else set()
    return next((f for f in unreadable if suffix in f.suffixes or brands & set(f.brands)), None)


def _open(source: str | Path | IO[bytes], name: str, max_pixels: int = MAX_FILE_PIXELS) -> Image.Image:
    """Image.open of the formats read, with the pixel limit checked from the header, as one sentence."""
    missing = _unreadable_phone_format(source, name)
    if missing is not None:
        raise DecoderMissing(name, missing)
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


def decode_square(
    source: str | Path | IO[bytes],
    channels: int,
    size: int,
    name: str | None = None,
    max_pixels: int = MAX_FILE_PIXELS,
) -> Image.Image:
    """An image file (or file object) as a square Pillow image in mode L (channels 1) or RGB, at least `size`
    pixels wide where the file is, before the final resize (decode's, or onnxlight's without PyTorch).

    JPEGs are decoded at a reduced scale where that still leaves at least twice the target size (draft mode),
    and large images are box-reduced before the final antialiased resize, so memory follows the output size
    more than the file's. EXIF rotation is applied; the image is converted to grayscale or RGB. An image that is
    not square is cut to the centre square of its shorter side (measured against squashing the whole image to a
    square: benchmarks/resize_policy.py, 64.11% against 63.19% on 4:3 photographs, 3 seeds).
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
            return centre_square(image).convert("L" if channels == 1 else "RGB")  # a loaded copy: outlives `with`
    except ImageFileError:
        raise
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageFileError(
            f"{name} is not a readable image ({e}); remove it or replace it with a valid image."
        ) from None


def as_array(image: Image.Image) -> np.ndarray:
    """A Pillow image in mode L or RGB as uint8 pixels [C, H, W]."""
    array = np.asarray(image, dtype=np.uint8)
    return array.reshape(array.shape[0], array.shape[1], -1).transpose(2, 0, 1).copy()  # contiguous, writable


def decode(
    source: str | Path | IO[bytes],
    channels: int,
    size: int,
    name: str | None = None,
    max_pixels: int = MAX_FILE_PIXELS,
) -> torch.Tensor:
    """An image file (or file object) as uint8 pixels [channels, size, size]: decode_square, then resized with
    torchvision's antialiased bilinear resize, as the training images are."""
    import torch

    from .preprocess import resize

    pixels = torch.from_numpy(as_array(decode_square(source, channels, size, name, max_pixels)))
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
                raise UserError(f"the folder {path} has no image files ({' '.join(image_suffixes())}).")
            paths += found
        elif path.is_file():
            paths.append(path)
        elif path.exists():
            raise NotARegularFile(path, "give image files or folders of images")
        else:
            raise UserError(f"{path} does not exist; give image files or folders of images.")
    return paths


def _images_under(folder: Path) -> Iterator[Path]:
    for path in folder.rglob("*"):
        hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
        if not hidden and path.is_file() and is_image_file(path):
            yield path
