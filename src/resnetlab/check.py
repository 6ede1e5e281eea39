"""`resnetlab check DIR`: a folder of photos looked over before training, in one pass.

Every file is read once, in the folder's worker processes (folder.map_in_workers): screened as train screens it
(screen.inspect), decoded as train decodes it (imagefiles.decode, with its pixel limit), and reduced to a hash of
its bytes and a perceptual hash of its pixels (imagehash.phash), so memory holds hashes, never the images. From
those: the files train would refuse or skip, copies (same bytes) and near copies (the same photo resized or
recompressed) within a class, across classes and across the training and held-out parts, the count of each
class in each part, and the images smaller than the training size.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from .errors import UserError
from .folder import DECODE_CHUNK, Holdout, has_splits, list_parts, map_in_workers
from .imagefiles import ImageFileError, decode
from .plots import duplicate_sheet
from .screen import DAMAGED, REFUSED, Facts, inspect

# Two images whose 64-bit perceptual hashes differ in at most this many bits are near copies. Measured by
# benchmarks/near_duplicates.py on 22 photographs and elevation maps, 19 copies of each: resized (0.5x to 2x) and
# recompressed copies differ by at most 8 bits, except 64 px copies at JPEG quality 30 (14 and 16). On a real
# folder (the 4,317 photos of Kaggle's Flowers Recognition, the groups looked at by eye) 12 bits was too loose:
# 11 of 11 groups sampled at exactly 12 bits were different photos, 8 of 10 at 10 bits, while each of the 6 groups at
# 6 or 8 bits held a copy (recoloured, recompressed or cropped), 2 of them with a different photo chained on.
NEAR_BITS = 8
# Small images (a shorter side under SMALL_SIDE pixels, such as CIFAR-10's 32x32) hash less distinctly: different
# pictures of the same kind come closer. A pair with such an image in it is near at most SMALL_NEAR_BITS apart.
# Measured by benchmarks/near_threshold.py on the 60,000 CIFAR-10 JPEGs, 24 random pairs looked at by eye at each
# distance (benchmarks/README.md): at 4 bits 24 of 24 pairs across train and test were one photo, and the 4 pairs
# across classes were not (small dark shapes on a sky); at 6 bits about 21 of 24, and none of the 18 across classes;
# at 8 bits about 10 of 24, with 142 pairs across classes.
SMALL_SIDE = 64
SMALL_NEAR_BITS = 4
# Below TINY_SIDE pixels a perceptual hash does not tell pictures apart: on Fashion-MNIST's 28x28 product shots
# (dark background, centred), 39 pairs of different classes and 246 pairs across train and test hash identically,
# nearly all different items by eye. Such images are compared for exact copies only, and the summary says so.
TINY_SIDE = 32
HASH_PIXELS = 64  # the decoded size the perceptual hash starts from (it reduces to 32x32 itself)
IMBALANCE = 5  # a warning when the largest class has more than this many times the images of the smallest
SHOWN = 10  # entries of each list in the summary; the rest are counted ("and N more"); --json has them all


class FolderHasProblems(UserError):
    """check found something wrong: exit status 1 (the input was readable; its contents need attention)."""

    exit_code = 1


@dataclass
class Report:
    """What check found, in paths relative to the folder; to_json() is `--json`."""

    folder: str
    layout: str
    image_size: int
    classes: list[str]
    counts: dict[str, dict[str, int]]  # part -> class -> images
    refused: list[dict[str, str]] = field(default_factory=list)  # file, reason, detail
    skipped: list[dict[str, str]] = field(default_factory=list)  # file, reason
    copies: list[dict] = field(default_factory=list)  # kind (exact or near), where, files
    smaller_than_image_size: int = 0
    exact_copies_only: int = 0  # images under TINY_SIDE px: compared for exact copies only
    imbalance: dict | None = None  # largest, smallest, ratio: only when over IMBALANCE
    seconds: float = 0.0

    @property
    def problems(self) -> int:
        return len(self.refused) + len(self.copies) + (self.imbalance is not None)

    def to_json(self) -> dict:
        return {**asdict(self), "problems": self.problems}


def _examine(path: str) -> tuple[Facts, int | None]:
    """One file's facts and the perceptual hash of its pixels (None for a file train could not use)."""
    facts = inspect(path)
    if facts.problem:
        return facts, None
    try:
        pixels = decode(path, 1, HASH_PIXELS)
    except ImageFileError as e:
        return Facts(path, DAMAGED, str(e), digest=facts.digest), None
    return facts, int(str(imagehash.phash(Image.fromarray(pixels[0].numpy()))), 16)


def _examine_chunk(paths: list[str]) -> list[tuple[Facts, int | None]]:
    return [_examine(path) for path in paths]


def near_bits(width: int, height: int) -> int:
    """How many bits apart an image's hash may be from another's for the two to be near copies (the lower of the
    two images' limits applies to a pair)."""
    side = min(width, height)
    return -1 if side < TINY_SIDE else SMALL_NEAR_BITS if side < SMALL_SIDE else NEAR_BITS


def _near_pairs(hashes: np.ndarray, bits: np.ndarray) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, of hashes at most min(bits[i], bits[j]) apart, one row of the comparison at a time."""
    pairs = []
    for i in range(len(hashes) - 1):
        distance = np.bitwise_count(np.bitwise_xor(hashes[i + 1 :], hashes[i]))
        pairs += [(i, i + 1 + int(j)) for j in np.flatnonzero(distance <= np.minimum(bits[i + 1 :], bits[i]))]
    return pairs


def _groups(pairs: list[tuple[int, int]]) -> list[list[int]]:
    """The connected groups of the pairs (union-find), each sorted."""
    parent: dict[int, int] = {}

    def find(i: int) -> int:
        while parent.setdefault(i, i) != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        parent[find(i)] = find(j)
    members: dict[int, list[int]] = {}
    for i in parent:
        members.setdefault(find(i), []).append(i)
    return sorted(sorted(group) for group in members.values())


def _copy_groups(entries: list[dict], facts: list[Facts], hashes: list[int | None]) -> list[dict]:
    """Groups of exact copies (same bytes) and of near copies (hashes near_bits apart, not all the same bytes)."""
    usable = [i for i, h in enumerate(hashes) if h is not None]
    by_digest: dict[str, list[int]] = {}
    for i in usable:
        by_digest.setdefault(facts[i].digest, []).append(i)
    exact = [group for group in by_digest.values() if len(group) > 1]
    near_hashes = np.array([hashes[i] for i in usable], dtype=np.uint64)
    bits = np.array([near_bits(facts[i].width, facts[i].height) for i in usable], dtype=np.int64)
    near = [
        [usable[k] for k in group]
        for group in _groups(_near_pairs(near_hashes, bits))
        if len({facts[usable[k]].digest for k in group}) > 1
    ]
    found = []
    for kind, groups in (("exact", exact), ("near", near)):
        for group in groups:
            files = [entries[i] for i in group]
            where = []
            if len({f["class"] for f in files}) > 1:
                where.append("across classes")
            if len({f["part"] for f in files}) > 1:
                where.append("across the training and held-out parts")
            found.append({"kind": kind, "where": where or ["within a class"], "files": files})
    return found


def _imbalance(counts: dict[str, dict[str, int]], classes: list[str]) -> dict | None:
    totals = {name: sum(part.get(name, 0) for part in counts.values()) for name in classes}
    largest, smallest = max(totals, key=totals.get), min(totals, key=totals.get)
    ratio = totals[largest] / max(totals[smallest], 1)
    if ratio <= IMBALANCE:
        return None
    return {"largest": [largest, totals[largest]], "smallest": [smallest, totals[smallest]], "ratio": round(ratio, 1)}


def check_folder(root: Path, image_size: int, holdout: Holdout) -> Report:
    """Look over every file of an image folder, split as train would split it (see the module's docstring)."""
    started = time.monotonic()
    classes, files, skipped = list_parts(root, holdout)
    layout = (
        "train/ and test/ folders"
        if has_splits(root)
        else f"class folders; {holdout.fraction:.0%} of each class held out with seed {holdout.seed}"
    )
    paths = [path for path, _, _ in files]
    tasks = [paths[start : start + DECODE_CHUNK] for start in range(0, len(paths), DECODE_CHUNK)]
    results = [item for chunk in map_in_workers(_examine_chunk, tasks) for item in chunk]
    facts, hashes = [f for f, _ in results], [h for _, h in results]
    entries = [
        {"file": os.path.relpath(path, root), "class": classes[label], "part": part} for path, label, part in files
    ]
    counts: dict[str, dict[str, int]] = {}
    for entry, item in zip(entries, facts):
        part = counts.setdefault(entry["part"], dict.fromkeys(classes, 0))
        part[entry["class"]] += not item.problem
    report = Report(str(root), layout, image_size, classes, counts)
    report.refused = [
        {"file": entry["file"], "reason": item.problem, "detail": item.detail}
        for entry, item in zip(entries, facts)
        if item.problem in REFUSED
    ]
    report.skipped = [{"file": os.path.relpath(path, root), "reason": why} for path, why in sorted(skipped)]
    report.copies = _copy_groups(entries, facts, hashes)
    report.smaller_than_image_size = sum(1 for f in facts if not f.problem and min(f.width, f.height) < image_size)
    report.exact_copies_only = sum(1 for f in facts if not f.problem and min(f.width, f.height) < TINY_SIDE)
    report.imbalance = _imbalance(counts, classes)
    report.seconds = round(time.monotonic() - started, 2)
    return report


def _capped(lines: list[str], indent: str = "  ") -> list[str]:
    shown = [indent + line for line in lines[:SHOWN]]
    return shown + ([f"{indent}and {len(lines) - SHOWN} more (--json lists them all)"] if len(lines) > SHOWN else [])


def summary(report: Report) -> list[str]:
    """The report as lines for a person: counts first, then each kind of problem, worst first, capped."""
    total = sum(sum(part.values()) for part in report.counts.values())
    lines = [f"checked {report.folder} ({report.layout}): {total} usable images in {len(report.classes)} classes"]
    parts = list(report.counts)
    width = max(len(name) for name in report.classes) + 2
    lines.append("  " + "class".ljust(width) + "".join(part.rjust(10) for part in parts))
    for name in report.classes:
        lines.append("  " + name.ljust(width) + "".join(str(report.counts[p][name]).rjust(10) for p in parts))
    if report.refused:
        lines.append(f"{len(report.refused)} file(s) that train refuses (--skip-bad trains without them):")
        lines += _capped([f"{r['file']}: {r['reason']}" for r in report.refused])
    leaks = sorted(report.copies, key=lambda c: len(c["where"]) == 1 and c["where"][0] == "within a class")
    if leaks:
        lines.append(f"{len(leaks)} group(s) of copies (= same bytes, ~ the same photo resized or recompressed):")
        lines += _capped([_copy_line(group) for group in leaks])
    if report.exact_copies_only:
        lines.append(
            f"{report.exact_copies_only} image(s) under {TINY_SIDE} px were compared for exact copies only: at that "
            "size a perceptual hash does not tell different pictures apart"
        )
    if report.imbalance:
        (big, n_big), (small, n_small) = report.imbalance["largest"], report.imbalance["smallest"]
        lines.append(
            f"warning: the largest class ({big}, {n_big} images) has {report.imbalance['ratio']}x the images "
            f"of the smallest ({small}, {n_small}); over {IMBALANCE}x, a model learns to favour the large class"
        )
    if report.smaller_than_image_size:
        lines.append(
            f"{report.smaller_than_image_size} image(s) are smaller than the training size "
            f"({report.image_size} px; --image-size) and will be enlarged"
        )
    if report.skipped:
        lines.append(f"{len(report.skipped)} file(s) skipped by the folder rules (not a problem):")
        lines += _capped([f"{s['file']}: {s['reason']}" for s in report.skipped])
    verdict = f"{report.problems} problem(s) found" if report.problems else "nothing wrong found"
    lines.append(f"{verdict} in {report.seconds:.1f} s")
    return lines


def _copy_line(group: dict) -> str:
    sign = " = " if group["kind"] == "exact" else " ~ "
    files = [f"{f['file']} ({f['class']}, {f['part']})" for f in group["files"]]
    more = f" and {len(files) - 4} more" if len(files) > 4 else ""
    return f"{sign.join(files[:4])}{more} [{', '.join(group['where'])}]"


def write_sheet(report: Report, root: Path, path: Path, groups: int = 12, per_group: int = 6) -> Path | None:
    """A contact sheet (PNG) of the first groups of copies; None when there are none. Never inside the folder."""
    if not report.copies:
        return None
    rows = []
    for group in report.copies[:groups]:
        row = []
        for f in group["files"][:per_group]:
            pixels = decode(root / f["file"], 3, 96).permute(1, 2, 0).numpy()
            row.append((pixels, f"{f['file']}\n{f['class']}, {f['part']} ({group['kind']})"))
        rows.append(row)
    more = f" (first {groups} of {len(report.copies)})" if len(report.copies) > groups else ""
    return duplicate_sheet(rows, path, f"copies in {root}{more}")


def refuse_sheet_inside(root: Path, path: Path) -> None:
    """Nothing check writes may land in the user's photo folder."""
    real_root, real_path = os.path.realpath(root), os.path.realpath(path)
    if real_path.startswith(real_root.rstrip(os.sep) + os.sep):
        raise UserError(
            f"--sheet {path} is inside the image folder {root}, where resnetlab writes nothing; give a path outside it."
        )
