"""What one image file of a folder dataset is, before it is decoded: usable or not (and why), its size, whether
it is grayscale, and a hash of its bytes (for copies).

Folder training (folder.py) screens every file this way, so a folder with bad files is refused once with all of
them (or trained without them, --skip-bad), and `resnetlab check` (check.py) starts from the same facts.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from .imagefiles import PHONE_FORMATS, DecoderMissing, ImageFileError, ImageTooLarge, image_header

# Why a file is not used. The first four, and a phone format without its decoder ("HEIC needs pip install ..."), are
# refused by train (or skipped with --skip-bad); "damaged" is found only by decoding the whole file (check does, and
# train while it decodes, the same way); the last three are skipped by the folder's rules.
UNREADABLE, EMPTY, NOT_AN_IMAGE, TOO_LARGE = "unreadable", "zero bytes", "not an image", "too many pixels"
NO_DECODER = tuple(image_format.needs for image_format in PHONE_FORMATS)
DAMAGED = "damaged"
UNSUPPORTED, HIDDEN, LINK = "unsupported format", "hidden", "link"
REFUSED = (UNREADABLE, EMPTY, NOT_AN_IMAGE, TOO_LARGE, *NO_DECODER, DAMAGED)


@dataclass(frozen=True)
class Facts:
    """One file as screened. problem is "" for a usable image, else one of the reasons above."""

    path: str
    problem: str = ""
    detail: str = ""  # the reason in the decoder's or the system's words
    width: int = 0
    height: int = 0
    grayscale: bool = True
    digest: str = ""  # of the file's bytes; "" when they could not be read


def inspect(path: str) -> Facts:
    """Read the file once: its bytes' hash and its image header."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return Facts(path, UNREADABLE, e.strerror or str(e))
    if not data:
        return Facts(path, EMPTY, "the file is empty")
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    try:
        width, height, grayscale = image_header(path, path)  # by path: its errors then name the file
    except ImageTooLarge as e:
        return Facts(path, TOO_LARGE, str(e), digest=digest)
    except DecoderMissing as e:
        return Facts(path, e.format.needs, str(e), digest=digest)
    except ImageFileError as e:
        return Facts(path, NOT_AN_IMAGE, str(e), digest=digest)
    return Facts(path, "", "", width, height, grayscale, digest)


def inspect_chunk(paths: list[str]) -> list[Facts]:
    """inspect, for a worker process."""
    return [inspect(path) for path in paths]


def some(items: list[str], cap: int = 5) -> str:
    """The first `cap` items, comma-separated, and how many more there are."""
    shown = ", ".join(items[:cap])
    return f"{shown} and {len(items) - cap} more" if len(items) > cap else shown


def refusal(root: str | os.PathLike, bad: list[tuple[str, str]], cap: int = 20) -> str:
    """The one sentence train says about a folder with files it cannot use, given as (path under root, problem):
    all of them, up to cap."""
    listed = [f"{path} ({problem})" for path, problem in bad]
    more = "" if len(bad) <= cap else f" (resnetlab check {root} lists every one)"
    return (
        f"{len(bad)} file(s) in {root} cannot be used: {some(listed, cap)}{more}; remove or replace them, "
        "or pass --skip-bad to train without them."
    )


def copies(facts: list[Facts]) -> list[list[str]]:
    """Groups of files with the same bytes (two or more), each sorted, in the order of their first file."""
    groups: dict[str, list[str]] = {}
    for item in facts:
        if item.digest:
            groups.setdefault(item.digest, []).append(item.path)
    return sorted((sorted(paths) for paths in groups.values() if len(paths) > 1), key=lambda g: g[0])
