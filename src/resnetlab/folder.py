"""A user's own images: DIR/train/<class>/<image> and DIR/test/<class>/<image> (or DIR/val/...), or simply
DIR/<class>/<image>, of which a stratified share of each class is held out for validation.

The rules, the same for every split: a class is a folder directly under the split; its images are the files
with an image suffix (imagefiles.IMAGE_SUFFIXES) anywhere below it, in nested folders too. Hidden files and
folders (names starting with ".", such as .ipynb_checkpoints or macOS's ._photo.jpg) are skipped. A file is
counted once, however many links lead to it, and a link that leads back into the dataset, or nowhere, is
skipped and named.

Decoded images are cached on disk (imagecache.py, in config.user_cache_dir() or --cache-dir), never inside the
image folder, and read back memory-mapped while no file of the folder has changed.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import signal
import sys
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import PIL
import torch
from tqdm import tqdm

from . import imagecache
from .batches import ImageData
from .config import user_cache_dir
from .errors import UserError
from .imagefiles import IMAGE_SUFFIXES, decode, file_is_grayscale, is_image_file

FOLDER_LAYOUT = ("train/<class>/<image>", "test/<class>/<image>")
# What cached pixels depend on besides the files: imagefiles.decode's steps, preprocess.resize (antialiased
# bilinear) and the Pillow that decodes. Change the number when either changes.
DECODER = (
    f"imagefiles.decode 2: EXIF rotation, 16 to 8 bits, JPEG draft 2x, reduce, centre square, resize; "
    f"Pillow {PIL.__version__}"
)


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
                if entry.name.startswith(".") or (entry.is_symlink() and not self._follow(entry)):
                    continue
                if entry.is_dir():
                    pending.append(entry.path)
                elif entry.is_file() and is_image_file(entry.name):
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
        samples = [(path, i) for i, name in enumerate(classes) for path in self.images(str(split / name))]
        empty = [name for i, name in enumerate(classes) if not any(label == i for _, label in samples)]
        if not classes or empty:
            plural = "s" if len(empty) > 1 else ""
            where = f"the class folder{plural} {', '.join(empty)}" if empty else "no class folder"
            raise UserError(
                f"{split}: {where} has no images; every class folder needs at least one image "
                f"({' '.join(IMAGE_SUFFIXES)})."
            )
        return classes, samples


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
    notes = (
        [
            f"skipped {len(skipped)} link(s) that lead back into the dataset or nowhere: "
            f"{', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}"
        ]
        if skipped
        else []
    )
    if held and train:
        how = (
            "as the checkpoint records them"
            if holdout.files
            else f"{holdout.fraction:.0%} of each class, seed {holdout.seed}"
        )
        notes.insert(
            0,
            f"{root} has no train/ and test/ folders: {len(held)} images ({how}) are held out for "
            "validation and reported as the test split; the list is kept in the checkpoint and in the run "
            "folder's split.json",
        )
    return _Listing(source, classes, samples, rows, notes, held)


def _fingerprint(source: Path, samples: list[tuple[str, int]]) -> list[str]:
    """One line per image: its path under source, its class, its size and modification time (for the cache key)."""
    lines = []
    for path, label in samples:
        try:
            stat = os.stat(path)
        except OSError as e:
            raise UserError(f"cannot read {path} ({e.strerror}); fix its permissions or remove it.") from None
        lines.append(f"{_relative(path, source)}\t{label}\t{stat.st_size}\t{stat.st_mtime_ns}")
    return lines


def _channels_of(root: Path, listing: _Listing, cache: Path | None, prints: list[str] | None) -> int:
    """1 when every image of the folder (all splits) is grayscale, else 3: from the images' headers, or from the
    cache while no file of any split has changed. The split being loaded is not listed a second time."""
    names = ("train", "test", "val")
    splits = [root / name for name in names if (root / name).is_dir()] if has_splits(root) else [root]
    found = {listing.source: listing.samples}  # first: an RGB image there ends the search soonest
    found.update({split: _Walk(root).split(split)[1] for split in splits if split != listing.source})
    entry = None
    if cache is not None:
        lines = (
            line
            for split, samples in found.items()
            for line in [f"{split.name}/", *(prints if split == listing.source else _fingerprint(split, samples))]
        )
        entry = imagecache.entry_for(cache, os.path.realpath(root), ["channels"], [DECODER], lines)
        known = imagecache.read_value(entry)
        if known in ("1", "3"):
            return int(known)
    channels = 3 if any(not file_is_grayscale(path) for samples in found.values() for path, _ in samples) else 1
    if entry is not None:
        with contextlib.suppress(OSError):  # a cache folder that cannot be written is told once, by the pixels
            imagecache.write_value(entry, str(channels))
    return channels


# Files decoded per task of decode_all. Loading the 60,000 CIFAR-10 JPEG files (32 px, 2 cores) took 33.7 s with one
# task per file in a thread pool, the threads mostly waiting on Python's lock (a small file spends most of its time
# in Python, not in Pillow's decoder, which releases the lock); 10.3 s with 256-file tasks in worker processes
# (benchmarks/README.md).
DECODE_CHUNK = 256


def decode_all(
    paths: list[str], channels: int, size: int, images: torch.Tensor | None = None, sums: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode image files into uint8 [N, C, size, size] (into `images` when given, such as a tensor mapped onto
    a cache file) on every core, DECODE_CHUNK files per task, with a progress bar on a terminal. Also returns, per
    image and channel, the sums of the pixels and of their squares (int64 [N, C, 2], see mean_std)."""
    images = torch.empty(len(paths), channels, size, size, dtype=torch.uint8) if images is None else images
    sums = torch.empty(len(paths), channels, 2, dtype=torch.int64) if sums is None else sums
    tasks = [(paths[start : start + DECODE_CHUNK], channels, size) for start in range(0, len(paths), DECODE_CHUNK)]
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
            for pixels, chunk_sums in pool.map(_decode_chunk, tasks):
                images[start : start + len(pixels)] = torch.from_numpy(pixels)
                sums[start : start + len(pixels)] = torch.from_numpy(chunk_sums)
                start += len(pixels)
                bar.update(len(pixels))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error or Ctrl-C, the files not begun are left
    return images, sums


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
    arrays (they cross from a worker process as bytes)."""
    paths, channels, size = task
    pixels = torch.stack([decode(path, channels, size) for path in paths])
    flat = pixels.reshape(len(paths), channels, -1).to(torch.int64)
    return pixels.numpy(), torch.stack([flat.sum(2), (flat * flat).sum(2)], dim=2).numpy()


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
    return folder, []


def _decode_cached(
    cache: Path, listing: _Listing, prints: list[str], channels: int, size: int, notes: list[str]
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Pixels and sums of every image of listing.source: from the cache, or decoded into it. None when the cache
    cannot be written (the notes get one line saying why): decode the split into memory instead."""
    shape = (len(listing.samples), channels, size, size)
    entry = imagecache.entry_for(
        cache, os.path.realpath(listing.source), [size, channels], [DECODER, listing.classes], prints
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
) -> ImageData:
    """Load one split of an image folder.

    Images are grayscale when every image of the folder (all splits) is, RGB otherwise, unless channels is
    given. The mean and std are measured on this split; a test split is normalized with the train split's.
    Without train/ and test/ folders, the split is `holdout`'s (by default 20% of each class, seed 0).

    The decoded images are kept in cache_dir (None: config.user_cache_dir(); "": nowhere) and memory-mapped from
    there (imagecache.py): decoded once, until a file of the folder changes. For a folder without train/ and
    test/, the cache holds every image and the split is a selection of rows (ImageData.rows), not a copy. Where
    the cache cannot be written, a note says so and the split is decoded into memory, as it is without a cache.
    """
    listing = _select(root, train, holdout or Holdout())
    cache, notes = _cache_folder(cache_dir, root)
    prints = _fingerprint(listing.source, listing.samples) if cache is not None else None
    channels = channels or _channels_of(root, listing, cache, prints)
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
        files=tuple(path for path, _ in listing.selected),
    )
