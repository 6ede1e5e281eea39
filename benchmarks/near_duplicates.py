"""How far apart (in bits of the 64-bit perceptual hash) are copies of one photo, and different photos?

The photos: tiles of the photograph and the elevation maps that matplotlib ships (no download), each tile a
different picture. The copies: each tile resized (0.5x to 2x) and recompressed as JPEG (quality 30 to 95). The
hashes: imagehash.phash of the image as `resnetlab check` decodes it (imagefiles.decode, gray, 64 px), against
imagehash.dhash and average_hash. check.NEAR_BITS must lie above the largest copy distance and below the smallest
distance between different photos.

    python benchmarks/near_duplicates.py
"""

from __future__ import annotations

import io
import itertools
import platform

import imagehash
import numpy as np
import PIL
from matplotlib import cbook
from PIL import Image

from resnetlab.check import HASH_PIXELS, NEAR_BITS
from resnetlab.imagefiles import decode


def photos(tile: int = 128) -> list[Image.Image]:
    """Non-overlapping tiles of matplotlib's sample photograph and elevation maps."""
    images = [np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"))]
    for name, key in (("topobathy.npz", "topo"), ("jacksboro_fault_dem.npz", "elevation")):
        z = cbook.get_sample_data(name)[key].astype(np.float64)  # matplotlib opens .npz files itself
        images.append((255 * (z - z.min()) / (z.max() - z.min())).astype(np.uint8))
    tiles = []
    for array in images:
        height, width = array.shape[:2]
        for top, left in itertools.product(range(0, height - tile + 1, tile), range(0, width - tile + 1, tile)):
            tiles.append(Image.fromarray(array[top : top + tile, left : left + tile]).convert("RGB"))
    return tiles


def variants(image: Image.Image) -> list[Image.Image]:
    size = image.size[0]
    resized = [image.resize((int(size * f), int(size * f)), Image.Resampling.LANCZOS) for f in (0.5, 0.75, 1.5, 2)]
    out = []
    for candidate in [image, *resized]:
        for quality in (30, 60, 95):
            buffer = io.BytesIO()
            candidate.save(buffer, "JPEG", quality=quality)
            out.append(Image.open(io.BytesIO(buffer.getvalue())))
    return out + resized


def as_check_sees(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    buffer.seek(0)
    return Image.fromarray(decode(buffer, 1, HASH_PIXELS, "x")[0].numpy())


def main() -> None:
    tiles = photos()
    print(f"{len(tiles)} photos, {len(variants(tiles[0]))} copies of each")
    print(f"python {platform.python_version()}, Pillow {PIL.__version__}, imagehash {imagehash.__version__}")
    for name, function in (("phash", imagehash.phash), ("dhash", imagehash.dhash), ("ahash", imagehash.average_hash)):
        originals = [function(as_check_sees(t)) for t in tiles]
        copy = max(function(as_check_sees(v)) - h for t, h in zip(tiles, originals) for v in variants(t))
        different = sorted(a - b for a, b in itertools.combinations(originals, 2))
        print(
            f"{name}: copies differ by at most {copy} bits; different photos by at least {different[0]} "
            f"(1st percentile {different[len(different) // 100]}, {len(different)} pairs)"
        )
    print(f"check.NEAR_BITS = {NEAR_BITS}")


if __name__ == "__main__":
    main()
