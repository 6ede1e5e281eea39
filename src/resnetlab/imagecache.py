"""Decoded images on disk: a split of an image folder kept as one uint8 array [N, C, H, W] in a .npy file and
memory-mapped when read, so a folder is decoded once, and one larger than memory trains from the page cache.

An entry is two files in the cache folder, named `<name>-<family>-<key>`:

- `.npy`: the pixels, uint8 [N, C, H, W] (`np.load(path, mmap_mode="r")` reads it);
- `.sums.npy`: per image and channel, the sum of the pixels and of their squares (int64 [N, C, 2]), from which
  the mean and std of any selection of the images follow without reading the pixels.

The key is a hash of everything the pixels depend on (the caller's details: files, sizes, times, a content print
of each file, classes, the decoder), so any change gives another key and a fresh entry. The content print (a hash
of a file's first and last PRINT_BYTES) catches a file replaced by another of the same size whose modification time
was restored, as `cp -p`, `rsync -a` and unzip do. The family is a hash of the source folder, the image
size and the channels: writing an entry deletes the older entries of its family (the same folder before it
changed, or an older format), and leaves the folder's entries at other sizes alone.

A writer decodes into a temporary file in the cache folder, preallocated so that a full disk is an OSError at
the start rather than a SIGBUS in the middle; it is fsynced, then the sums and then the pixels are moved into
place with os.replace. A reader finds the pixels only once both files are whole, and two writers of one key write
the same bytes, so either may win. Removing an entry that another process has mapped is harmless on POSIX: the
mapping keeps the file's data until it is closed.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FORMAT_VERSION = 1  # of the files and of the key; a new version makes new entries and prunes the old ones
STALE_TEMPORARY_SECONDS = 24 * 3600  # a temporary file this old was left by a writer that died
PRINT_BYTES = 64 * 1024  # of each end of a file, for its content print: all of a small photo, a JPEG's EXIF header


@functools.lru_cache(maxsize=1 << 18)
def content_print(path: str, size: int, mtime_ns: int, ctime_ns: int) -> str:
    """A hash of the file's first and last PRINT_BYTES (all of it, when smaller than twice that), or "unreadable".

    Given the file's size and times from os.stat, so that the print is read once a process while they stay as they
    were (the status change time moves with any write, and cannot be set back): loading a folder's two splits
    lists each file twice."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return "unreadable"
    try:
        data = os.pread(fd, PRINT_BYTES, 0)
        if size > 2 * PRINT_BYTES:
            data += os.pread(fd, PRINT_BYTES, size - PRINT_BYTES)
        elif size > PRINT_BYTES:
            data += os.pread(fd, size - PRINT_BYTES, PRINT_BYTES)
    except OSError:
        return "unreadable"
    finally:
        os.close(fd)
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def _hash(*parts: object, lines: Iterable[str] = ()) -> str:
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode())
    for line in lines:
        digest.update(line.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class Entry:
    """Where one decoded split lives in the cache folder (or one small value, see read_value/write_value)."""

    folder: Path
    name: str  # from the source folder's name, for people looking into the cache folder
    family: str
    key: str

    @property
    def stem(self) -> str:
        return f"{self.name}-{self.family}-{self.key}"

    @property
    def pixels_path(self) -> Path:
        return self.folder / f"{self.stem}.npy"

    @property
    def sums_path(self) -> Path:
        return self.folder / f"{self.stem}.sums.npy"

    @property
    def value_path(self) -> Path:
        return self.folder / f"{self.stem}.txt"

    def temporary(self, suffix: str) -> Path:
        """A name no other writer uses, hidden, in the same folder (so os.replace is a rename)."""
        return self.folder / f".{self.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{suffix}"


def entry_for(
    folder: Path, source: str, family: Iterable[object], details: Iterable[object], lines: Iterable[str] = ()
) -> Entry:
    """The entry of `source` (a folder's real path) in the cache folder: family, for instance the image size and
    channels, names what an entry replaces; details and lines (one per file) complete the key."""
    family = tuple(family)
    name = re.sub(r"[^A-Za-z0-9_.]+", "_", "-".join(Path(source).parts[-2:]))[-48:] or "folder"
    return Entry(
        Path(folder),
        name,
        _hash(source, *family)[:12],
        _hash(FORMAT_VERSION, source, *family, *details, lines=lines)[:32],
    )


def read(entry: Entry, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The entry's pixels (memory-mapped, copy-on-write: nothing written to them reaches the file) and sums, or
    None when it is missing or damaged: a bad header, another shape or type, a truncated file."""
    try:
        pixels = np.lib.format.open_memmap(entry.pixels_path, mode="c")
        sums = np.load(entry.sums_path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if pixels.dtype != np.uint8 or pixels.shape != tuple(shape) or not pixels.flags.c_contiguous:
        return None
    if sums.dtype != np.int64 or sums.shape != (shape[0], shape[1], 2):
        return None
    return torch.from_numpy(pixels), torch.from_numpy(sums)


def _preallocate(path: Path) -> None:
    """Reserve the file's blocks now: writing through a mapping into a sparse file on a full disk is a SIGBUS,
    which kills the process, where this is an OSError (ENOSPC) the caller can handle."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):  # a filesystem without it: go on
                raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Writer:
    """A new entry being written: fill `pixels` (mapped onto a temporary file) and `sums`, then commit().

    Raises OSError when the cache folder cannot be created or written, or the disk has no room for the pixels.
    close() removes its temporary files unless committed; the pixels stay mapped (and usable) after that, from
    the deleted file."""

    def __init__(self, entry: Entry, shape: tuple[int, ...]) -> None:
        self.entry, self.shape, self.committed = entry, tuple(shape), False
        entry.folder.mkdir(parents=True, exist_ok=True)
        self._pixels_file, self._sums_file = entry.temporary(".npy"), entry.temporary(".sums.npy")
        try:
            self._array = np.lib.format.open_memmap(self._pixels_file, mode="w+", dtype=np.uint8, shape=self.shape)
            _preallocate(self._pixels_file)
        except BaseException:
            self._remove_temporaries()
            raise
        self.pixels = torch.from_numpy(self._array)
        self.sums = torch.zeros(self.shape[0], self.shape[1], 2, dtype=torch.int64)

    def close(self) -> None:
        if not self.committed:
            self._remove_temporaries()

    def _remove_temporaries(self) -> None:
        for path in (self._pixels_file, self._sums_file):
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass

    def commit(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Make the entry whole on disk and move it into place; the entry's pixels and sums, as `read` gives them."""
        self._array.flush()
        _fsync(self._pixels_file)
        with open(self._sums_file, "wb") as f:
            np.save(f, self.sums.numpy())
            f.flush()
            os.fsync(f.fileno())
        os.replace(self._sums_file, self.entry.sums_path)  # first: whoever sees the pixels finds their sums
        os.replace(self._pixels_file, self.entry.pixels_path)
        self.committed = True
        prune(self.entry)
        return read(self.entry, self.shape) or (self.pixels, self.sums)


def prune(entry: Entry) -> None:
    """Delete the other entries of the entry's family, and temporary files of the family left by a writer that
    died (a day old). Whatever cannot be deleted stays."""
    prefix, now = f"{entry.name}-{entry.family}-", time.time()
    try:
        names = os.listdir(entry.folder)
    except OSError:
        return
    for name in names:
        path = entry.folder / name
        try:
            older = name.startswith(prefix) and not name.startswith(entry.stem + ".")
            left = name.startswith("." + prefix) and now - path.stat().st_mtime > STALE_TEMPORARY_SECONDS
            if older or left:
                path.unlink()
        except OSError:
            pass


def read_value(entry: Entry) -> str | None:
    """A small value kept for the entry (write_value), or None."""
    try:
        return entry.value_path.read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def write_value(entry: Entry, value: str) -> None:
    """Keep a small value for the entry, atomically, pruning its family's older ones. Raises OSError."""
    entry.folder.mkdir(parents=True, exist_ok=True)
    temporary = entry.temporary(".txt")
    try:
        temporary.write_text(value + "\n")
        os.replace(temporary, entry.value_path)
    finally:
        temporary.unlink(missing_ok=True)
    prune(entry)
