"""A user's own images: DIR/train/<class>/<image> and DIR/test/<class>/<image> (or DIR/val/...), or simply
DIR/<class>/<image>, of which a stratified share of each class is held out for validation.

The rules, the same for every split: a class is a folder directly under the split; its images are the files
with an image suffix (imagefiles.image_suffixes()) anywhere below it, in nested folders too. Hidden files and
folders (names starting with ".", such as .ipynb_checkpoints or macOS's ._photo.jpg) are skipped. A file is
counted once, however many links lead to it, and a link that leads back into the dataset, or nowhere, is
skipped and named.

Decoded images are cached on disk (imagecache.py, in config.user_cache_dir() or --cache-dir), never inside the
image folder, and read back memory-mapped while no file of the folder has changed.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import signal
import statistics
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import PIL
import torch
from tqdm import tqdm

from . import imagecache
from .batches import ImageData
from .config import user_cache_dir
from .errors import UserError
from .imagefiles import ImageFileError, decode, image_header, image_suffixes, is_image_file, readable_formats
from .screen import DAMAGED, HIDDEN, LINK, UNSUPPORTED, copies, inspect_chunk, refusal, some

FOLDER_LAYOUT = ("train/<class>/<image>", "test/<class>/<image>")
# What cached pixels depend on besides the files: imagefiles.decode's steps and preprocess.resize (antialiased
# bilinear), named here (change the number when either changes); the Pillow and the formats read (decoder()).
DECODER = "imagefiles.decode 2: EXIF rotation, 16 to 8 bits, JPEG draft 2x, reduce, centre square, resize"


def decoder() -> str:
    """DECODER with the Pillow and the formats read (a phone format's decoder installed is another screening)."""
    return f"{DECODER}; Pillow {PIL.__version__}; {' '.join(readable_formats())}"


@dataclass(frozen=True)
class Holdout:
    """How DIR/<class>/<image> is split: `fraction` of each class, drawn with `seed`, held out for validation;
    or exactly `files` (paths relative to DIR), as a checkpoint records them."""

    fraction: float = 0.2
    seed: int = 0
    files: tuple[str, ...] = ()


def has_splits(root: Path) -> bool:
    """Whether root is laid out as train/ and test/ (or val/): a train/ folder beside test/ or val/, or alone. A
    train/ beside other folders but no test/ or val/ is a class named train (told by _train_is_a_class)."""
    return (root / "train").is_dir() and not _train_is_a_class(root)


def _train_is_a_class(root: Path) -> bool:
    """train/ is one of several class folders: other folders beside it, and no test/ or val/."""
    if (root / "test").is_dir() or (root / "val").is_dir() or not (root / "train").is_dir():
        return False
    return any(e.is_dir() and not e.name.startswith(".") and e.name != "train" for e in os.scandir(root))


def find_folder(root: Path) -> str | None:
    """root when it holds images as train/ + test/ or as class folders, else None."""
    if has_splits(root):
        return str(root)
    if root.is_dir() and any(e.is_dir() and not e.name.startswith(".") for e in os.scandir(root)):
        return str(root)
    return None


def _split_dir(root: Path, train: bool) -> Path:
    if not root.is_dir():
        raise UserError(
            f"the image folder {root} does not exist; give --data-dir a folder of class folders (or with "
            "train/ and test/ in it)."
        )
    names = ["train"] if train else ["test", "val"]
    for name in names:
        if (root / name).is_dir():
            return root / name
    wanted = "train/" if train else "test/ (or val/)"
    raise UserError(f"{root} has no {wanted} folder; put images in {root}/{names[0]}/<class name>/.")


def _relative(path: str, folder: str | Path) -> str:
    """path under folder, as os.path.relpath gives it, without its cost for the paths the walk made from folder."""
    prefix = str(folder).rstrip(os.sep) + os.sep
    return path[len(prefix) :] if path.startswith(prefix) else os.path.relpath(path, folder)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class _Walk:
    """Lists a split's images by the rules above, remembering the links it skipped."""

    def __init__(self, root: Path) -> None:
        self.root = os.path.realpath(root)
        self.seen: set[str] = set()
        self.skipped: list[str] = []
        self.hidden: list[str] = []  # hidden files and folders under the class folders, skipped (for check)
        self.unsupported: list[str] = []  # files without an image suffix under the class folders (for check)

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
            real_current = os.path.realpath(current)
            if real_current in visited:
                continue
            visited.add(real_current)
            try:
                entries = sorted(os.scandir(current), key=lambda e: e.name)
            except OSError as e:
                raise UserError(f"cannot read the folder {current} ({e.strerror}); fix its permissions.") from None
            for entry in entries:
                if entry.name.startswith("."):
                    self.hidden.append(entry.path)
                    continue
                if entry.is_symlink() and not self._follow(entry):
                    continue
                if entry.is_dir():
                    pending.append(entry.path)
                elif entry.is_file() and not is_image_file(entry.name):
                    self.unsupported.append(entry.path)
                elif entry.is_file():
                    # a plain file's real path is its folder's real path and its name; only links need resolving
                    real = (
                        os.path.realpath(entry.path) if entry.is_symlink() else os.path.join(real_current, entry.name)
                    )
                    if real not in self.seen:
                        self.seen.add(real)
                        found.append(entry.path)
        return sorted(found)

    def classes(self, split: Path) -> list[str]:
        """The class folders of a split, sorted (their images not listed)."""
        return [
            entry.name
            for entry in sorted(os.scandir(split), key=lambda e: e.name)
            if not entry.name.startswith(".")
            and not (entry.is_symlink() and not self._follow(entry))
            and entry.is_dir()
        ]

    def split(self, split: Path) -> tuple[list[str], list[tuple[str, int]]]:
        """The classes of a split (sorted) and its (file, class index) samples."""
        classes = self.classes(split)
        if not classes:
            raise UserError(_no_class_folders(split))
        samples = [(path, i) for i, name in enumerate(classes) for path in self.images(str(split / name))]
        empty = [name for i, name in enumerate(classes) if not any(label == i for _, label in samples)]
        if empty:
            names = " and ".join([", ".join(empty[:-1]), empty[-1]] if len(empty) > 1 else empty)
            which = (
                f"class folders {names} in {split} have" if len(empty) > 1 else f"class folder {names} in {split} has"
            )
            suffixes = " ".join(image_suffixes())
            raise UserError(
                f"the {which} no images; every class folder needs at least one image ({suffixes}): add images, "
                f"or remove the empty folder{'s' if len(empty) > 1 else ''}."
            )
        return classes, samples


def _no_class_folders(split: Path) -> str:
    """What to do with a folder that has no class folders: empty, or its images not sorted into classes."""
    entries = [entry for entry in os.scandir(split) if not entry.name.startswith(".")]
    images = sum(1 for entry in entries if entry.is_file() and is_image_file(entry.name))
    what = (
        f"has {images} image(s) but no class folders"
        if images
        else "is empty"
        if not entries
        else "has no class folders and no images"
    )
    return (
        f"{split} {what}; put each class's images in a folder of its own, named after the class: "
        f"{split}/<class name>/<image>."
    )


def list_split(root: Path, train: bool) -> tuple[list[str], list[tuple[str, int]], list[str]]:
    """Classes, samples and skipped links of one split of an image folder."""
    walk = _Walk(root)
    classes, samples = walk.split(_split_dir(root, train))
    return classes, samples, walk.skipped


def held_out(root: Path, samples: list[tuple[str, int]], classes: list[str], holdout: Holdout) -> set[str]:
    """The validation files (relative to root): the recorded ones, or a stratified random share of each class."""
    if holdout.files:
        missing = [f for f in holdout.files if not (root / f).is_file()]
        if missing:
            raise UserError(
                f"{len(missing)} of the {len(holdout.files)} held-out images this model was validated "
                f"on are no longer in {root} (e.g. {missing[0]}); give the folder as it was when trained, "
                "or train again."
            )
        return set(holdout.files)
    generator = torch.Generator().manual_seed(holdout.seed)
    chosen = set()
    for label, name in enumerate(classes):
        files = [_relative(path, root) for path, i in samples if i == label]
        if len(files) < 2:
            raise UserError(
                f"the class {name} in {root} has only one image, and holding out a validation share "
                "needs at least two per class; add images, or give train/ and test/ folders."
            )
        count = min(max(1, round(len(files) * holdout.fraction)), len(files) - 1)
        chosen |= {files[i] for i in torch.randperm(len(files), generator=generator)[:count].tolist()}
    return chosen


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


def list_parts(root: Path, holdout: Holdout) -> tuple[list[str], list[tuple[str, int, str]], list[tuple[str, str]]]:
    """For `resnetlab check`: the classes; every image with its class index and part, split as train splits the
    folder (train, test or val; or train and held-out, with holdout's share and seed); and the files the rules
    above skip, with why (link, hidden, unsupported format)."""
    if not root.is_dir():
        _split_dir(root, True)  # says the folder does not exist
    walks, files = [], []
    if has_splits(root):
        for train in (True, False):
            walks.append(_Walk(root))
            split = _split_dir(root, train)
            split_classes, samples = walks[-1].split(split)
            if train:
                classes = split_classes
            else:
                _check_same_classes(root, split_classes)
            files += [(path, label, split.name) for path, label in samples]
    else:
        walks.append(_Walk(root))
        classes, samples = walks[0].split(root)
        held = held_out(root, samples, classes, holdout)
        files = [(path, label, "held-out" if _relative(path, root) in held else "train") for path, label in samples]
    skipped = [(path, why) for walk in walks for paths, why in _skipped_by(walk) for path in paths]
    return classes, files, skipped


def _skipped_by(walk: _Walk) -> list[tuple[list[str], str]]:
    return [(walk.skipped, LINK), (walk.hidden, HIDDEN), (walk.unsupported, UNSUPPORTED)]


@dataclass(frozen=True)
class _Listing:
    """One split as listed: every image of the folder it comes from, and which of them are the split's."""

    source: Path  # the folder listed: DIR/train, DIR/test (or DIR/val), or DIR itself
    classes: list[str]
    samples: list[tuple[str, int]]  # every image of source, with its class index
    rows: list[int] | None  # positions in samples of the split's images (held out, or not); None: all of them
    notes: list[str]
    held: tuple[str, ...]

    @property
    def selected(self) -> list[tuple[str, int]]:
        return self.samples if self.rows is None else [self.samples[i] for i in self.rows]


def _select(root: Path, train: bool, holdout: Holdout) -> _Listing:
    """One split: train/ or test/, or, without them, the images of DIR/<class> held out (or not) for validation."""
    if has_splits(root):
        source = _split_dir(root, train)
        classes, samples, skipped = list_split(root, train)
        if not train:
            _check_same_classes(root, classes)
        held, rows = (), None
    else:
        if not root.is_dir():
            _split_dir(root, train)  # says the folder does not exist
        source, walk = root, _Walk(root)
        classes, samples = walk.split(root)
        skipped = walk.skipped
        held = tuple(sorted(held_out(root, samples, classes, holdout)))
        keep = set(held)
        rows = [i for i, (path, _) in enumerate(samples) if (_relative(path, root) in keep) != train]
    notes = _layout_notes(root, holdout, held) if train else []
    if skipped:
        notes.append(
            f"skipped {len(skipped)} link(s) that lead back into the dataset or nowhere: "
            f"{', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}"
        )
    return _Listing(source, classes, samples, rows, notes, held)


@dataclass(frozen=True)
class Survey:
    """What a folder's training split holds, told before anything is decoded (train chooses its small-folder
    default from it): how many images, and the median of their shorter sides in pixels (None if none was read)."""

    images: int
    short_side: int | None


SURVEY_SAMPLE = 200  # images whose headers are read for the median size (drawn with a fixed seed)


def survey(root: Path, holdout: Holdout) -> Survey:
    """The training split's size, and the median shorter side of up to SURVEY_SAMPLE of its images (their headers
    only; unreadable files are left to the loader to report)."""
    files = [path for path, _ in _select(root, True, holdout).selected]
    sample = torch.randperm(len(files), generator=torch.Generator().manual_seed(0))[:SURVEY_SAMPLE].tolist()
    sides = []
    for i in sample:
        try:
            width, height, _ = image_header(files[i], files[i])
        except (ImageFileError, OSError):
            continue
        sides.append(min(width, height))
    return Survey(len(files), round(statistics.median(sides)) if sides else None)


def _layout_notes(root: Path, holdout: Holdout, held: tuple[str, ...]) -> list[str]:
    """How the folder was read, where a user could expect otherwise: a class named train, --val-split with
    train/ and test/ folders, the held-out share (given the training split's held-out files)."""
    notes = []
    if _train_is_a_class(root):
        notes.append(
            f"{root}/train is read as a class like the folders beside it, as {root} has no test/ or val/ folder; "
            f"for train/ and test/ parts, add {root}/test/<class name>/"
        )
    if has_splits(root) and holdout.fraction != Holdout.fraction:
        notes.append(
            f"--val-split {holdout.fraction:g} is not used: {root} has train/ and test/ folders, and the test "
            f"folder is the held-out part; --val-split is for a folder of class folders only"
        )
    if held:
        how = (
            "as the checkpoint records them"
            if holdout.files
            else f"{holdout.fraction:.0%} of each class, seed {holdout.seed}"
        )
        notes.append(
            f"{root} has no train/ and test/ folders: {len(held)} images ({how}) are held out for "
            "validation and reported as the test split; the list is kept in the checkpoint and in the run "
            "folder's split.json"
        )
    return notes


def _fingerprint(source: Path, samples: list[tuple[str, int]]) -> list[str]:
    """One line per image, for the cache key: its path under source, its class, its size and modification time,
    and its content print (imagecache.content_print)."""
    lines = []
    for path, label in samples:
        try:
            stat = os.stat(path)
        except OSError as e:
            raise UserError(f"cannot read {path} ({e.strerror}); fix its permissions or remove it.") from None
        content = imagecache.content_print(path, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        lines.append(f"{_relative(path, source)}\t{label}\t{stat.st_size}\t{stat.st_mtime_ns}\t{content}")
    return lines


@dataclass(frozen=True)
class Screening:
    """Every image file of a folder (all its splits) as screen.inspect found it: what the loader needs."""

    channels: int  # 1 when every usable image is grayscale, else 3
    bad: tuple[tuple[str, str, str], ...]  # (path relative to the folder, problem, detail) of unusable files
    copies: tuple[tuple[str, ...], ...]  # groups of usable files (relative to the folder) with the same bytes

    def to_json(self) -> str:
        return json.dumps({"channels": self.channels, "bad": self.bad, "copies": self.copies})

    @classmethod
    def from_json(cls, text: str | None) -> Screening | None:
        try:
            value = json.loads(text or "")
            bad = tuple(tuple(str(x) for x in item[:3]) for item in value["bad"])
            copies = tuple(tuple(str(x) for x in group) for group in value["copies"])
            return cls(int(value["channels"]), bad, copies) if value["channels"] in (1, 3) else None
        except (ValueError, KeyError, TypeError, IndexError):
            return None


def _screen_folder(
    root: Path, listing: _Listing, cache: Path | None, prints: list[str] | None, all_splits: bool = True
) -> tuple[Screening, imagecache.Entry | None]:
    """Screen every image file of the folder (all splits; screen.inspect in worker processes), or read the
    screening from the cache while no file of any split has changed. The split being loaded is not listed again.
    Without all_splits, only the split being loaded (its channels then come from the other split). Also returns
    the screening's cache entry (None without a cache), where damaged files found by decoding are added."""
    names = ("train", "test", "val")
    splits = [root / name for name in names if (root / name).is_dir()] if has_splits(root) else [root]
    splits = splits if all_splits else [listing.source]
    found = {listing.source: listing.samples}
    found.update({split: _Walk(root).split(split)[1] for split in splits if split != listing.source})
    entry = None
    if cache is not None:
        lines = (
            line
            for split, samples in sorted(found.items())  # in one order, whichever split is being loaded
            for line in [f"{split.name}/", *(prints if split == listing.source else _fingerprint(split, samples))]
        )
        entry = imagecache.entry_for(cache, os.path.realpath(root), ["screen", all_splits], [decoder()], lines)
        known = Screening.from_json(imagecache.read_value(entry))
        if known is not None:
            return known, entry
    paths = [path for samples in found.values() for path, _ in samples]
    tasks = [paths[start : start + DECODE_CHUNK] for start in range(0, len(paths), DECODE_CHUNK)]
    facts = [item for chunk in map_in_workers(inspect_chunk, tasks) for item in chunk]
    usable = [item for item in facts if not item.problem]
    screening = Screening(
        channels=1 if all(item.grayscale for item in usable) else 3,
        bad=tuple((_relative(item.path, root), item.problem, item.detail) for item in facts if item.problem),
        copies=tuple(tuple(_relative(path, root) for path in group) for group in copies(usable)),
    )
    _keep_screening(entry, screening)
    return screening, entry


def _keep_screening(entry: imagecache.Entry | None, screening: Screening) -> None:
    if entry is not None:
        with contextlib.suppress(OSError):  # a cache folder that cannot be written is told once, by the pixels
            imagecache.write_value(entry, screening.to_json())


def _other_files(root: Path, listing: _Listing, decoded: list[str]) -> list[str]:
    """The folder's image files (every split) other than those decoded: what the training split's decoding has not
    seen, to be checked when it finds damaged files, so that they are all told at once."""
    names = ("train", "test", "val")
    splits = [root / name for name in names if (root / name).is_dir()] if has_splits(root) else [root]
    found = [path for path, _ in listing.samples]
    found += [path for split in splits if split != listing.source for path, _ in _Walk(root).split(split)[1]]
    seen = set(decoded)
    return [path for path in found if path not in seen]


def _with_damaged(
    root: Path, screening: Screening, damaged: list[tuple[str, str]], entry: imagecache.Entry | None
) -> Screening:
    """The screening with the files decoding found damaged (paths as decode_all gives them), kept in the cache."""
    known = {path for path, _, _ in screening.bad}
    more = tuple((_relative(path, root), DAMAGED, why) for path, why in damaged if _relative(path, root) not in known)
    screening = replace(screening, bad=screening.bad + more)
    _keep_screening(entry, screening)
    return screening


def _without_bad(
    root: Path, listing: _Listing, prints: list[str] | None, screening: Screening, skip_bad: bool
) -> tuple[_Listing, list[str] | None]:
    """The listing (and its fingerprint lines) without the files that cannot be used; without skip_bad, a folder
    with such files is refused, with all of them (in every split) in one sentence."""
    if not screening.bad:
        return listing, prints
    if not skip_bad:
        raise UserError(refusal(root, [(path, problem) for path, problem, _ in screening.bad]))
    bad = {path for path, _, _ in screening.bad}
    keep = [i for i, (path, _) in enumerate(listing.samples) if _relative(path, root) not in bad]
    position = {old: new for new, old in enumerate(keep)}
    rows = None if listing.rows is None else [position[i] for i in listing.rows if i in position]
    held = tuple(path for path in listing.held if path not in bad)
    listing = replace(listing, samples=[listing.samples[i] for i in keep], rows=rows, held=held)
    return listing, None if prints is None else [prints[i] for i in keep]


def _skip_note(root: Path, screening: Screening) -> str:
    listed = [f"{path} ({problem})" for path, problem, _ in screening.bad]
    return (
        f"--skip-bad: trained without {len(listed)} file(s) of {root} that cannot be used: {some(listed)}; "
        "the list is in the run folder's skipped.txt"
    )


def _leak_note(root: Path, listing: _Listing, screening: Screening) -> str | None:
    """A note when the same bytes are both in the training part and in the held-out (test) part."""
    held = set(listing.held)

    def part(path: str) -> str:
        return path.split(os.sep)[0] if has_splits(root) else ("held" if path in held else "train")

    leaks = [group for group in screening.copies if len({part(path) for path in group}) > 1]
    if not leaks:
        return None
    return (
        f"{len(leaks)} image(s) are both in the training part and in the held-out part, byte for byte "
        f"({some([' = '.join(group) for group in leaks], 3)}), so the test accuracy counts them as unseen; "
        f"remove one copy of each (resnetlab check {root} finds resized copies too)"
    )


# Files decoded per task of decode_all. Loading the 60,000 CIFAR-10 JPEG files (32 px, 2 cores) took 33.7 s with one
# task per file in a thread pool, the threads mostly waiting on Python's lock (a small file spends most of its time
# in Python, not in Pillow's decoder, which releases the lock); 10.3 s with 256-file tasks in worker processes
# (benchmarks/README.md).
DECODE_CHUNK = 256


class Undecodable(UserError):
    """Image files whose header reads but whose pixels do not (truncated, damaged), all those of one decode_all."""

    def __init__(self, failures: list[tuple[str, str]]) -> None:
        self.failures = failures  # (path, the decoder's sentence)
        more = f" (and {len(failures) - 1} more file(s) like it)" if len(failures) > 1 else ""
        super().__init__(f"{failures[0][1]}{more}")


def decode_all(
    paths: list[str], channels: int, size: int, images: torch.Tensor | None = None, sums: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode image files into uint8 [N, C, size, size] (into `images` when given, such as a tensor mapped onto
    a cache file) on every core, DECODE_CHUNK files per task, with a progress bar on a terminal. Also returns, per
    image and channel, the sums of the pixels and of their squares (int64 [N, C, 2], see mean_std). Files that
    cannot be decoded do not stop it: once every file is done, Undecodable names all of them."""
    images = torch.empty(len(paths), channels, size, size, dtype=torch.uint8) if images is None else images
    sums = torch.empty(len(paths), channels, 2, dtype=torch.int64) if sums is None else sums
    tasks = [(paths[start : start + DECODE_CHUNK], channels, size) for start in range(0, len(paths), DECODE_CHUNK)]
    failures: list[tuple[str, str]] = []
    pool = _decoding_pool(len(tasks))
    try:
        with tqdm(
            total=len(paths),
            desc="decoding images",
            unit="img",
            leave=False,
            file=sys.stderr,
            disable=not sys.stderr.isatty() or len(paths) < 1000,
        ) as bar:
            start = 0
            for pixels, chunk_sums, chunk_failures in pool.map(_decode_chunk, tasks):
                images[start : start + len(pixels)] = torch.from_numpy(pixels)
                sums[start : start + len(pixels)] = torch.from_numpy(chunk_sums)
                failures += chunk_failures
                start += len(pixels)
                bar.update(len(pixels))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error or Ctrl-C, the files not begun are left
    if failures:
        raise Undecodable(failures)
    return images, sums


def undecodable(paths: list[str]) -> list[tuple[str, str]]:
    """The files of paths that cannot be decoded, with why (decoded small, in the pool, and thrown away)."""
    tasks = [(paths[start : start + DECODE_CHUNK], 1, 8) for start in range(0, len(paths), DECODE_CHUNK)]
    return [failure for _, _, failures in map_in_workers(_decode_chunk, tasks) for failure in failures]


def map_in_workers(function: Callable[[Any], Any], tasks: list) -> Iterator[Any]:
    """function(task) for each task, in order, in the decoding pool (worker processes where fork is safe)."""
    pool = _decoding_pool(len(tasks))
    try:
        yield from pool.map(function, tasks)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _decoding_pool(tasks: int) -> Executor:
    """Worker processes where fork is safe and there is more than one task (decoding small images is mostly
    Python, which threads cannot run in parallel); threads otherwise (Pillow's decoders release Python's lock)."""
    workers = max(1, min(os.cpu_count() or 1, tasks))
    if tasks > 1 and sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods():
        return ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("fork"), initializer=_decoding_worker
        )
    return ThreadPoolExecutor(workers)


def _decoding_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle, once
    torch.set_num_threads(1)  # one core per worker


def _decode_chunk(task: tuple[list[str], int, int]) -> tuple:
    """Pixels uint8 [n, C, size, size] and their per-channel sums and sums of squares int64 [n, C, 2], as numpy
    arrays (they cross from a worker process as bytes), and the files that could not be decoded, with why (their
    pixels left black)."""
    paths, channels, size = task
    pixels = torch.zeros(len(paths), channels, size, size, dtype=torch.uint8)
    failures = []
    for i, path in enumerate(paths):
        try:
            pixels[i] = decode(path, channels, size)
        except ImageFileError as e:
            failures.append((path, str(e)))
    flat = pixels.reshape(len(paths), channels, -1).to(torch.int64)
    return pixels.numpy(), torch.stack([flat.sum(2), (flat * flat).sum(2)], dim=2).numpy(), failures


def mean_std(sums: torch.Tensor, pixels_per_image: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per channel, the mean and std (with n - 1, as torch.std) of the pixels scaled to [0, 1], from the per-image
    sums of decode_all: exact, whatever the order, and without reading the pixels again."""
    n = len(sums) * pixels_per_image
    means, stds = [], []
    for total, squares in sums.sum(0).tolist():
        variance = (n * squares - total * total) / (n * (n - 1)) / 255**2 if n > 1 else 0.0  # exact integers first
        means.append(total / n / 255)
        stds.append(max(math.sqrt(max(variance, 0.0)), 1e-3))
    return tuple(means), tuple(stds)


def _cache_folder(cache_dir: str | None, root: Path) -> tuple[Path | None, list[str]]:
    """The folder to cache the decoded images in (None: no cache), and a note when the one given is refused."""
    if cache_dir == "":
        return None, []
    folder = Path(cache_dir).expanduser() if cache_dir is not None else Path(user_cache_dir())
    if _inside(os.path.realpath(folder), os.path.realpath(root)):
        note = (
            f"the cache folder {folder} is inside the image folder {root}, where resnetlab writes nothing, so "
            "the images were decoded into memory; give --cache-dir another folder"
        )
        return None, [note]
    blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        what = f"{folder} is" if blocker == folder else f"{folder} cannot be made, as {blocker} is"
        raise UserError(
            f"the cache folder {what} a file, not a folder; give --cache-dir a folder to keep the decoded images "
            "in, or pass --no-cache."
        )
    return folder, []


def _decode_cached(
    cache: Path, listing: _Listing, prints: list[str], channels: int, size: int, notes: list[str]
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Pixels and sums of every image of listing.source: from the cache, or decoded into it. None when the cache
    cannot be written (the notes get one line saying why): decode the split into memory instead."""
    shape = (len(listing.samples), channels, size, size)
    entry = imagecache.entry_for(
        cache, os.path.realpath(listing.source), [size, channels], [decoder(), listing.classes], prints
    )
    found = imagecache.read(entry, shape)
    if found is not None:
        return found
    if entry.pixels_path.exists():
        notes.append(
            f"the cached images {entry.pixels_path} were damaged (truncated, or not this folder's); decoded them again"
        )
    try:
        writer = imagecache.Writer(entry, shape)
    except OSError as e:
        notes.append(_cache_warning(cache, e))
        return None
    try:
        decode_all([path for path, _ in listing.samples], channels, size, writer.pixels, writer.sums)
        try:
            return writer.commit()
        except OSError as e:  # the decoded pixels stay mapped, from the deleted temporary file
            notes.append(_cache_warning(cache, e))
            return writer.pixels, writer.sums
    finally:
        writer.close()


def _cache_warning(folder: Path, error: OSError) -> str:
    return (
        f"could not cache the decoded images in {folder} ({error.strerror or error}), so they were decoded "
        "into memory this time; --cache-dir chooses another folder, --no-cache turns the cache off"
    )


def load_folder_split(
    root: Path,
    train: bool,
    image_size: int,
    channels: int | None = None,
    holdout: Holdout | None = None,
    cache_dir: str | None = None,
    skip_bad: bool = False,
) -> ImageData:
    """Load one split of an image folder.

    Images are grayscale when every image of the folder (all splits) is, RGB otherwise, unless channels is
    given. The mean and std are measured on this split; a test split is normalized with the train split's.
    Without train/ and test/ folders, the split is `holdout`'s (by default 20% of each class, seed 0).

    The decoded images are kept in cache_dir (None: config.user_cache_dir(); "": nowhere) and memory-mapped from
    there (imagecache.py): decoded once, until a file of the folder changes. For a folder without train/ and
    test/, the cache holds every image and the split is a selection of rows (ImageData.rows), not a copy. Where
    the cache cannot be written, a note says so and the split is decoded into memory, as it is without a cache.

    Every file of the folder is screened first (screen.py, cached too): a folder with files that cannot be used
    (empty, not images, too many pixels, unreadable) is refused with all of them, or with skip_bad loaded without
    them (the training split's `skipped` lists them); images with the same bytes in both splits get a note. Files
    whose pixels cannot be decoded (truncated) are found by decoding: the same, and the screening keeps them.
    """
    listing = _select(root, train, holdout or Holdout())
    cache, notes = _cache_folder(cache_dir, root)
    prints = _fingerprint(listing.source, listing.samples) if cache is not None else None
    if channels and cache is None and not skip_bad:  # the test split, after the training split screened every split
        screening, entry = Screening(channels, (), ()), None
    else:  # without a cache, the test split with skip_bad needs only its own files screened
        all_splits = channels is None or cache is not None
        screening, entry = _screen_folder(root, listing, cache, prints, all_splits)
    try:
        return _load_screened(root, train, image_size, channels, listing, screening, cache, prints, notes, skip_bad)
    except Undecodable as e:
        damaged = list(e.failures)
        if train:  # the files the training split did not decode: all of them told now, and all skipped
            seen = [path for path, _ in listing.selected] if cache is None else [path for path, _ in listing.samples]
            known = {path for path, _, _ in screening.bad}
            others = [path for path in _other_files(root, listing, seen) if _relative(path, root) not in known]
            damaged += undecodable(others)
        screening = _with_damaged(root, screening, damaged, entry)
        if not skip_bad:
            raise UserError(refusal(root, [(path, problem) for path, problem, _ in screening.bad])) from None
    return _load_screened(root, train, image_size, channels, listing, screening, cache, prints, notes, skip_bad)


def _load_screened(
    root: Path,
    train: bool,
    image_size: int,
    channels: int | None,
    listing: _Listing,
    screening: Screening,
    cache: Path | None,
    prints: list[str] | None,
    notes: list[str],
    skip_bad: bool,
) -> ImageData:
    """load_folder_split once the folder is screened: without the bad files (or refused), decoded (or cached)."""
    leak = _leak_note(root, listing, screening) if train else None
    listing, prints = _without_bad(root, listing, prints, screening, skip_bad)
    channels = channels or screening.channels
    notes = notes + ([leak] if leak else []) + ([_skip_note(root, screening)] if train and screening.bad else [])
    decoded = _decode_cached(cache, listing, prints, channels, image_size, notes) if cache is not None else None
    if decoded is None:
        pixels, sums = decode_all([path for path, _ in listing.selected], channels, image_size)
        rows = None
    else:
        (pixels, sums), rows = decoded, listing.rows
    mean, std = mean_std(sums if rows is None else sums[rows], image_size * image_size)
    labels = torch.tensor([label for _, label in listing.selected], dtype=torch.int64)
    return ImageData(
        pixels,
        labels,
        listing.classes,
        mean,
        std,
        source=str(listing.source),
        notes=listing.notes + notes,
        holdout=listing.held,
        rows=None if rows is None else torch.tensor(rows, dtype=torch.int64),
        skipped=tuple("\t".join(item) for item in screening.bad) if train else (),
        files=tuple(path for path, _ in listing.selected),
    )
