"""How many near copies `resnetlab check` would report on a real folder at each threshold, by the images' size.

Hashes every image of FOLDER as check does (check._examine: the file screened, decoded gray at check.HASH_PIXELS,
imagehash.phash), once; then, for each threshold of 0 to --max-bits bits, counts the pairs of images whose hashes are
at most that far apart: within a class, across classes, across the training and held-out parts, and the held-out
images with a near copy among the training images (the leak a user cares about). With --sheets DIR it also draws,
for each exact distance, up to 24 random pairs of each kind side by side (DIR/bits<d>_<kind>.png), to be looked at
by eye: what check.NEAR_BITS and check.SMALL_NEAR_BITS were chosen by.

    python benchmarks/near_threshold.py CIFAR-10-images/ --sheets near-sheets/
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from resnetlab.check import _examine_chunk
from resnetlab.folder import DECODE_CHUNK, Holdout, list_parts, map_in_workers

KINDS = ("within a class", "across classes", "across parts")


def pairs_within(hashes: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (i < j) at most `bits` apart, with its distance, one row at a time."""
    first, second, distance = [], [], []
    for i in range(len(hashes) - 1):
        d = np.bitwise_count(np.bitwise_xor(hashes[i + 1 :], hashes[i]))
        close = np.flatnonzero(d <= bits)
        first.append(np.full(len(close), i))
        second.append(i + 1 + close)
        distance.append(d[close])
    return np.concatenate(first), np.concatenate(second), np.concatenate(distance)


def pair_sheet(paths: list[str], pairs: list[tuple[int, int]], out: Path, cell: int = 96) -> None:
    sheet = Image.new("RGB", (4 * 2 * cell + 3 * 16, 6 * cell), "white")
    for k, (i, j) in enumerate(pairs[:24]):
        x, y = (k % 4) * (2 * cell + 16), (k // 4) * cell
        for dx, path in ((0, paths[i]), (cell, paths[j])):
            with Image.open(path) as image:
                tile = ImageOps.exif_transpose(image).convert("RGB")
                tile.thumbnail((cell - 4, cell - 4), Image.Resampling.NEAREST if max(tile.size) < cell else None)
                sheet.paste(tile, (x + dx + 2, y + 2))
    sheet.save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--max-bits", type=int, default=10)
    parser.add_argument("--sheets", type=Path, default=None, help="draw random pairs at each distance here")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    started = time.monotonic()
    classes, files, _ = list_parts(args.folder, Holdout())
    paths = [path for path, _, _ in files]
    tasks = [paths[start : start + DECODE_CHUNK] for start in range(0, len(paths), DECODE_CHUNK)]
    results = [item for chunk in map_in_workers(_examine_chunk, tasks) for item in chunk]
    keep = [k for k, (_, h) in enumerate(results) if h is not None]
    hashes = np.array([results[k][1] for k in keep], dtype=np.uint64)
    labels = np.array([files[k][1] for k in keep])
    parts = np.array([files[k][2] != "train" for k in keep])
    side = np.array([min(results[k][0].width, results[k][0].height) for k in keep])
    hashed = time.monotonic() - started
    first, second, distance = pairs_within(hashes, args.max_bits)
    kind = np.where(
        parts[first] != parts[second], 2, np.where(labels[first] != labels[second], 1, 0)
    )  # across parts wins: a leak
    print(
        f"{len(keep)} images of {args.folder} hashed in {hashed:.1f} s; median shorter side {int(np.median(side))} px"
    )
    print("| bits | " + " | ".join(f"pairs {k}" for k in KINDS) + " | held-out images with a near copy in train |")
    print("|---|" + "---|" * (len(KINDS) + 1))
    rows = []
    for bits in range(args.max_bits + 1):
        close = distance <= bits
        counts = [int((close & (kind == k)).sum()) for k in range(len(KINDS))]
        leak = close & (kind == 2)
        held = np.where(parts[first[leak]], first[leak], second[leak])
        leaked = len(np.unique(held))
        rows.append({"bits": bits, **dict(zip(KINDS, counts)), "held_out_with_a_copy_in_train": leaked})
        print(f"| {bits} | " + " | ".join(f"{c:,}" for c in counts) + f" | {leaked:,} of {int(parts.sum()):,} |")
    if args.sheets:
        args.sheets.mkdir(parents=True, exist_ok=True)
        chosen = random.Random(0)
        for bits in range(args.max_bits + 1):
            for k, name in enumerate(KINDS):
                at = np.flatnonzero((distance == bits) & (kind == k))
                sample = chosen.sample(list(at), min(24, len(at)))
                if sample:
                    pair_sheet(
                        [paths[i] for i in keep],
                        [(int(first[s]), int(second[s])) for s in sample],
                        args.sheets / f"bits{bits}_{name.replace(' ', '-')}.png",
                    )
    if args.json:
        args.json.write_text(json.dumps({"folder": str(args.folder), "images": len(keep), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
