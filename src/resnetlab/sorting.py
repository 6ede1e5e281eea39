"""`resnetlab predict RUN DIR --csv FILE --sort-into OUT`: a folder of photos put to work. Each photo's prediction
becomes a row of the CSV and a copy (or, with --link, a hard link) in OUT/<class>/; the photos themselves are only
read, never changed, moved or overwritten.

The CSV and OUT's record (OUT/.resnetlab-sorted.csv) are journals, written a chunk of photos at a time: a run
stopped midway goes on where it stopped, as the photos they already name are skipped, and a photo found in its class
folder already (the same bytes) is not copied again. Prediction goes chunk by chunk (inference.CHUNK_SIZE photos),
so memory holds one chunk of images and the list of the folder's paths, whatever its size.
"""

from __future__ import annotations

import csv
import errno
import filecmp
import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from .answers import UNKNOWN, Top, is_unknown
from .errors import UserError
from .imagefiles import expand_image_paths, is_image_file
from .onnxlight import OnnxModel, is_onnx

if TYPE_CHECKING:
    from .inference import PredictorBase

RECORD = ".resnetlab-sorted.csv"  # OUT's record of the photos sorted into it (hidden, so never a class folder)


def csv_columns(top: int) -> list[str]:
    """The CSV's columns: the photo, the answer (a class, or unknown below min_confidence) and its probability, then
    the `top` likeliest classes with their probabilities."""
    ranked = [f"{what}_{rank}" for rank in range(1, top + 1) for what in ("class", "probability")]
    return ["path", "class", "probability", *ranked]


def folder_names(classes: list[str]) -> dict[str, str]:
    """The folder of each class in OUT (and of unknown): its name, with path separators made underscores (a class
    such as T-shirt/top) and a leading dot dropped; unknown is _unknown when a class is named unknown."""
    names = {}
    for name in classes:
        safe = name.replace("/", "_").replace("\\", "_").replace("\0", "_").lstrip(".")
        names[name] = safe or "_"
    names[UNKNOWN] = f"_{UNKNOWN}" if UNKNOWN in names.values() else UNKNOWN
    return names


class Journal:
    """A CSV file written row by row, flushed after each chunk; a later run appends to it, and `done` holds the
    first column of the rows already there (the photos a run before has done)."""

    def __init__(self, path: Path, columns: list[str], advice: str) -> None:
        self.path, self.done = path, set()
        if path.is_dir():
            raise UserError(f"{path} is a folder; {advice}.")
        exists = path.exists() and path.stat().st_size > 0
        if exists:
            self.done = self._read(path, columns, advice)
        try:
            self.file = open(path, "a" if exists else "w", newline="", encoding="utf-8")
        except OSError as e:
            raise UserError(f"cannot write {path} ({e.strerror}); {advice}.") from None
        self.writer = csv.writer(self.file)
        if not exists:
            self.writer.writerow(columns)

    @staticmethod
    def _read(path: Path, columns: list[str], advice: str) -> set[str]:
        """The first column of a journal written before; a UserError for any other file (a photo, another table)."""
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.reader(f)
                if next(reader, None) == columns:
                    return {row[0] for row in reader if row}
        except (UnicodeDecodeError, csv.Error):
            pass
        raise UserError(f"{path} is not a CSV of these predictions ({', '.join(columns[:4])}, ...); {advice}.")

    def write(self, rows: list[list[Any]]) -> None:
        self.writer.writerows(rows)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b) or (a.stat().st_size == b.stat().st_size and filecmp.cmp(a, b, shallow=False))
    except OSError:
        return False


def _candidates(folder: Path, name: str) -> Iterator[Path]:
    """name, then name-2, name-3, ... (before the suffix)."""
    yield folder / name
    stem, suffix = os.path.splitext(name)
    n = 2
    while True:
        yield folder / f"{stem}-{n}{suffix}"
        n += 1


def _put(source: Path, target: Path, link: bool) -> None:
    """A copy (with its times) or a hard link of source at target, which does not exist. A copy is written under a
    hidden name beside it, then renamed, so a stopped run leaves no half photo under a photo's name."""
    if link:
        try:
            os.link(source, target)
        except OSError as e:
            if e.errno in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                why = "they are on different devices" if e.errno == errno.EXDEV else e.strerror
                raise UserError(
                    f"--link cannot hard-link {source} into {target.parent} ({why}); drop --link to copy the photos "
                    "instead."
                ) from None
            raise
        return
    partial = target.with_name(f".{target.name}.resnetlab-partial")
    shutil.copy2(source, partial)
    os.rename(partial, target)


def place(source: Path, folder: Path, link: bool) -> tuple[Path, str]:
    """Put source into folder under its own name, or the first free name-N when a different file has it; the same
    file already there (a run before) is left as it is. Returns where it is and "placed", "renamed" or "there"."""
    folder.mkdir(parents=True, exist_ok=True)
    for n, target in enumerate(_candidates(folder, source.name)):
        if not os.path.lexists(target):
            _put(source, target, link)
            return target, "renamed" if n else "placed"
        if _same_file(source, target):
            return target, "there"
    raise AssertionError("unreachable")


def refuse_out_inside(sources: list[str], out: Path) -> None:
    """OUT inside a folder being sorted would be read again by the next run (and sorted into itself)."""
    resolved = out.resolve()
    for source in sources:
        folder = Path(source).resolve()
        if Path(source).is_dir() and (resolved == folder or folder in resolved.parents):
            raise UserError(
                f"--sort-into {out} is inside the folder {source} being sorted, where its copies would be read again; "
                "give a folder outside it."
            )


@dataclass
class Sorted:
    """What a run did: photos predicted, where they went, what a run before had done already."""

    predicted: int = 0
    skipped: int = 0  # named in the CSV or OUT's record already: done by a run before
    per_folder: Counter = field(default_factory=Counter)  # class folder -> photos put there now
    there: int = 0  # found in their class folder already (the same bytes)
    renamed: list[str] = field(default_factory=list)  # OUT/<class>/name-N: the name was another photo's

    def describe(self, out: Path | None, csv_path: Path | None, link: bool) -> list[str]:
        if self.skipped and not self.predicted:
            where = " and ".join(str(p) for p in (out, csv_path) if p is not None)
            return [f"nothing left to do: all {self.skipped} photos are in {where} from a run before"]
        lines = []
        if out is not None:
            how = "hard-linked" if link else "copied"
            counts = ", ".join(f"{name} {n}" for name, n in sorted(self.per_folder.items())) or "none"
            lines.append(f"sorted {sum(self.per_folder.values())} photos into {out} ({how}): {counts}")
            if self.there:
                lines.append(
                    f"{self.there} photos were in their class folder already, the same bytes: left as they were"
                )
            if self.renamed:
                shown = ", ".join(self.renamed[:5]) + (", ..." if len(self.renamed) > 5 else "")
                lines.append(f"{len(self.renamed)} under another name, as theirs was taken by another file: {shown}")
        if self.skipped:
            lines.append(f"{self.skipped} photos done by a run before were skipped")
        if csv_path is not None:
            lines.append(f"predictions of {self.predicted} photos added to {csv_path}")
        return lines


def _answer(top: Top, min_confidence: float | None) -> tuple[str, float]:
    name, probability = top[0]
    return (UNKNOWN if is_unknown(top, min_confidence) else name), probability


def _open_journals(
    csv_path: Path | None, out: Path | None, columns: list[str]
) -> tuple[Journal | None, Journal | None]:
    table = record = None
    if csv_path is not None:
        table = Journal(csv_path, columns, "give another --csv path, or the --top it was written with")
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot make the folder {out} ({e.strerror}); give another --sort-into folder.") from None
        record = Journal(
            out / RECORD, [*columns, "sorted_to"], "give another --sort-into folder, or the --top it was written with"
        )
    return table, record


def sort_files(
    predictor: PredictorBase | OnnxModel,
    paths: list[Path],
    csv_path: Path | None = None,
    out: Path | None = None,
    top: int = 3,
    link: bool = False,
    min_confidence: float | None = None,
    quiet: bool = True,
) -> Sorted:
    """Predict `paths` chunk by chunk, with a progress bar unless quiet; write each photo's row into csv_path, and
    put each into out/<class>/ (or out/unknown/ below min_confidence). A photo that the CSV names already gets no
    second row, one that OUT's record names is not sorted again, and one both name (or the one given) is not
    predicted again."""
    top = min(top, len(predictor.classes))
    table, record = _open_journals(csv_path, out, csv_columns(top))
    folders, result = folder_names(predictor.classes), Sorted()
    try:
        journals = [journal for journal in (table, record) if journal is not None]
        done = set.intersection(*(journal.done for journal in journals))
        todo = [path for path in paths if str(path.absolute()) not in done]
        result.skipped = len(paths) - len(todo)
        bar = tqdm(total=len(todo), unit="photo", disable=quiet or not sys.stderr.isatty(), file=sys.stderr)
        with bar:
            for chunk, _, probabilities in predictor.predict_files(todo):
                rows = [
                    _row(path, path_top, min_confidence)
                    for path, path_top in zip(chunk, predictor.top_classes(probabilities, top))
                ]
                if record is not None:
                    record.write(
                        [
                            [*row, _sort_one(path, row[1], out, folders, link, result)]
                            for path, row in zip(chunk, rows)
                            if row[0] not in record.done
                        ]
                    )
                if table is not None:
                    table.write([row for row in rows if row[0] not in table.done])
                result.predicted += len(chunk)
                bar.update(len(chunk))
    finally:
        for journal in (table, record):
            if journal is not None:
                journal.close()
    return result


def _row(path: Path, top: Top, min_confidence: float | None) -> list[Any]:
    answer, probability = _answer(top, min_confidence)
    ranked = [value for name, p in top for value in (name, round(p, 6))]
    return [str(path.absolute()), answer, round(probability, 6), *ranked]


def _sort_one(path: Path, answer: str, out: Path, folders: dict[str, str], link: bool, result: Sorted) -> str:
    folder = folders[answer]
    try:
        target, how = place(path, out / folder, link)
    except OSError as e:
        raise UserError(
            f"could not put {path} into {out / folder} ({e.strerror or e}); free some space or fix the folder, then "
            "run the same command again: the photos done are skipped."
        ) from None
    if how == "there":
        result.there += 1
    else:
        result.per_folder[folder] += 1
    if how == "renamed":
        result.renamed.append(f"{folder}/{target.name}")
    return str(target.relative_to(out))


def put_to_work(
    checkpoint: str | Path,
    images: list[str],
    csv_path: str | None = None,
    sort_into: str | None = None,
    top: int = 3,
    link: bool = False,
    min_confidence: float | None = None,
    device: str = "auto",
    precision: str = "auto",
    quiet: bool = False,
) -> list[str]:
    """predict --csv / --sort-into: predict the image files and folders `images` with a checkpoint, run folder or
    exported file, with a progress bar; returns the lines that say what was done."""
    if not images:
        raise UserError("--csv and --sort-into work on your photos; give image files or folders after the checkpoint.")
    if link and sort_into is None:
        raise UserError("--link goes with --sort-into OUT: it hard-links the photos into OUT instead of copying them.")
    if csv_path is not None and is_image_file(csv_path):
        raise UserError(f"--csv {csv_path} names an image file; give a file name ending in .csv.")
    out = Path(sort_into) if sort_into is not None else None
    if out is not None:
        refuse_out_inside(images, out)
        if out.exists() and not out.is_dir():
            raise UserError(f"--sort-into {out} is a file; give a folder to sort the photos into.")
    paths = expand_image_paths(images)
    predictor: PredictorBase | OnnxModel
    if is_onnx(checkpoint):  # onnxruntime and Pillow only: no PyTorch to import
        predictor = OnnxModel(checkpoint, device)
    else:
        from .inference import open_predictor

        predictor = open_predictor(checkpoint, device, precision)
    table = Path(csv_path) if csv_path is not None else None
    result = sort_files(predictor, paths, table, out, top, link, min_confidence, quiet)
    return result.describe(out, table, link)
