"""predict --csv and --sort-into: a folder of photos put to work, read only, resumable, a chunk at a time."""

import csv
import errno
import hashlib
import json
import os

import numpy as np
import pytest
from fakedata import labels_for, pattern_images
from PIL import Image, PngImagePlugin

from resnetlab.cli import main
from resnetlab.inference import PredictorBase
from resnetlab.sorting import RECORD, folder_names

FP32 = ["--device", "cpu", "--precision", "fp32"]


def _photos(folder, n=12):
    """n photos, some in a subfolder, two with the same name in different folders."""
    (folder / "trip").mkdir(parents=True)
    images = pattern_images(labels_for(n), 28, 1)
    for i, image in enumerate(images):
        if i == 3:  # trip/1.png: the pixels of 1.png (so the same class), other bytes
            info = PngImagePlugin.PngInfo()
            info.add_text("Comment", "the same view again")
            Image.fromarray(images[1][..., 0]).save(folder / "trip" / "1.png", pnginfo=info)
            continue
        Image.fromarray(image[..., 0]).save((folder / "trip" if i % 3 == 0 else folder) / f"{i}.png")
    return folder


def _state(folder):
    """Every file under folder with its bytes' hash and modification time: the photos as the user left them."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _sorted_files(out):
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != RECORD)


def test_sort_into_copies_each_photo_into_its_class_and_the_csv_has_its_row(trained_run, tmp_path, capsys):
    photos = _photos(tmp_path / "photos")
    before = _state(photos)
    out, table = tmp_path / "sorted", tmp_path / "out.csv"
    assert main(["predict", str(trained_run), str(photos), "--sort-into", str(out), "--csv", str(table), *FP32]) == 0
    said = capsys.readouterr().out
    assert f"sorted 12 photos into {out} (copied)" in said and "1 under another name" in said
    assert _state(photos) == before  # read only: same bytes, same times, nothing added
    rows = _rows(table)
    assert [row["path"] for row in rows] == [str(p) for p in sorted(photos.rglob("*.png"))]
    assert list(rows[0]) == ["path", "class", "probability"] + [
        f"{what}_{k}" for k in (1, 2, 3) for what in ("class", "probability")
    ]
    # the class is predict's top class; the photo's copy is in that class's folder, byte for byte, times kept
    assert main(["predict", str(trained_run), str(photos), "--json", "--top", "3", *FP32]) == 0
    tops = {r["file"]: r["top"] for r in map(json.loads, capsys.readouterr().out.splitlines())}
    names = folder_names([r["class"] for r in next(iter(tops.values()))] + ["T-shirt/top"])
    assert names["T-shirt/top"] == "T-shirt_top"
    record = {row["path"]: row["sorted_to"] for row in _rows(out / RECORD)}
    for row in rows:
        top = tops[row["path"]]
        assert row["class"] == row["class_1"] == top[0]["class"]
        assert float(row["probability"]) == pytest.approx(top[0]["probability"], abs=1e-6)
        assert [row["class_2"], row["class_3"]] == [t["class"] for t in top[1:3]]
        copy = out / record[row["path"]]
        assert copy.parent.name == folder_names([row["class"]])[row["class"]]
        assert copy.read_bytes() == open(row["path"], "rb").read()
        assert copy.stat().st_mtime_ns == os.stat(row["path"]).st_mtime_ns
    assert len(_sorted_files(out)) == 12 and len(set(record.values())) == 12


def test_below_min_confidence_a_photo_goes_to_unknown(trained_run, tmp_path):
    photos = _photos(tmp_path / "photos")
    table = tmp_path / "all.csv"
    assert main(["predict", str(trained_run), str(photos), "--csv", str(table), *FP32]) == 0
    probabilities = sorted(float(row["probability"]) for row in _rows(table))
    threshold = (probabilities[5] + probabilities[6]) / 2  # six below, six above
    out = tmp_path / "sorted"
    args = ["--sort-into", str(out), "--csv", str(tmp_path / "t.csv"), "--min-confidence", f"{threshold}"]
    assert main(["predict", str(trained_run), str(photos), *args, *FP32]) == 0
    rows = _rows(tmp_path / "t.csv")
    unknown = [row for row in rows if row["class"] == "unknown"]
    assert len(unknown) == 6 and all(float(row["probability"]) < threshold for row in unknown)
    assert all(row["class"] == row["class_1"] for row in rows if row not in unknown)
    assert len(list((out / "unknown").iterdir())) == 6


def test_a_taken_name_gets_a_suffix_and_a_photo_already_there_is_left_alone(trained_run, tmp_path, capsys):
    photo = _photos(tmp_path / "photos", n=3) / "2.png"
    out = tmp_path / "sorted"
    assert main(["predict", str(trained_run), str(photo), "--csv", str(tmp_path / "p.csv"), *FP32]) == 0
    predicted = _rows(tmp_path / "p.csv")[0]["class"]
    folder = out / folder_names([predicted])[predicted]
    folder.mkdir(parents=True)
    (folder / "2.png").write_bytes(b"another photo of mine")
    assert main(["predict", str(trained_run), str(photo), "--sort-into", str(out), *FP32]) == 0
    assert (folder / "2.png").read_bytes() == b"another photo of mine"
    assert (folder / "2-2.png").read_bytes() == photo.read_bytes()
    assert "under another name, as theirs was taken by another file: " in capsys.readouterr().out
    # the same photo again, without OUT's record: found there (the same bytes), not copied a third time
    os.remove(out / RECORD)
    assert main(["predict", str(trained_run), str(photo), "--sort-into", str(out), *FP32]) == 0
    assert "1 photos were in their class folder already" in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == ["2-2.png", "2.png"]


def test_a_stopped_run_goes_on_with_only_what_is_left(trained_run, tmp_path, monkeypatch, capsys):
    photos = _photos(tmp_path / "photos")
    out, table = tmp_path / "sorted", tmp_path / "out.csv"
    args = ["predict", str(trained_run), str(photos), "--sort-into", str(out), "--csv", str(table), *FP32]
    monkeypatch.setattr(PredictorBase, "chunk_size", 5)
    decoded, real_decode = [], PredictorBase.decode_files

    def stop_at_the_second_chunk(self, paths):
        if len(decoded) == 1:
            raise KeyboardInterrupt
        decoded.append(len(paths))
        return real_decode(self, paths)

    monkeypatch.setattr(PredictorBase, "decode_files", stop_at_the_second_chunk)
    assert main(args) == 130
    assert len(_rows(table)) == 5 and len(_sorted_files(out)) == 5
    # killed after the copy, before its row: found there on the next run, not copied again
    lines = (out / RECORD).read_text().splitlines(keepends=True)
    (out / RECORD).write_text("".join(lines[:-1]))
    monkeypatch.setattr(
        PredictorBase, "decode_files", lambda self, paths: decoded.append(len(paths)) or real_decode(self, paths)
    )
    capsys.readouterr()
    assert main(args) == 0
    assert decoded == [5, 5, 3]  # 5, then the 7 left and the one copied but not recorded
    said = capsys.readouterr().out
    assert "4 photos done by a run before were skipped" in said and "1 photos were in their class folder" in said
    rows = _rows(table)
    assert len(rows) == len({row["path"] for row in rows}) == 12
    assert len(_sorted_files(out)) == 12 and len(_rows(out / RECORD)) == 12
    decoded.clear()
    assert main(args) == 0
    assert (
        decoded == []
        and f"nothing left to do: all 12 photos are in {out} and {table} from a run before" in capsys.readouterr().out
    )


def test_link_hard_links_and_across_devices_says_to_drop_it(trained_run, tmp_path, monkeypatch, capsys):
    photos = _photos(tmp_path / "photos", n=3)
    out = tmp_path / "linked"
    assert main(["predict", str(trained_run), str(photos), "--sort-into", str(out), "--link", *FP32]) == 0
    copies = [p for p in out.rglob("*.png")]
    assert len(copies) == 3 and all(p.stat().st_nlink == 2 for p in copies)
    assert {p.stat().st_ino for p in copies} == {p.stat().st_ino for p in photos.rglob("*.png")}

    def across_devices(source, target):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", across_devices)
    assert main(["predict", str(trained_run), str(photos), "--sort-into", str(tmp_path / "x"), "--link", *FP32]) == 2
    err = capsys.readouterr().err
    assert "they are on different devices); drop --link to copy the photos instead." in err and err.count("\n") == 1


def test_what_sorting_refuses(trained_run, tmp_path, capsys):
    photos = _photos(tmp_path / "photos", n=3)
    before = _state(photos)

    def refused(*args):
        assert main(["predict", str(trained_run), *args, *FP32]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        return err

    inside = photos / "sorted"
    assert f"--sort-into {inside} is inside the folder {photos} being sorted" in refused(
        str(photos), "--sort-into", str(inside)
    )
    assert "names an image file; give a file name ending in .csv" in refused(
        str(photos), "--csv", str(photos / "1.png")
    )
    (tmp_path / "notes.csv").write_text("my own notes\n")
    assert "is not a CSV of these predictions" in refused(str(photos), "--csv", str(tmp_path / "notes.csv"))
    assert (tmp_path / "notes.csv").read_text() == "my own notes\n"
    assert "--link goes with --sort-into" in refused(str(photos), "--link")
    assert "give image files or folders after the checkpoint" in refused("--csv", str(tmp_path / "t.csv"))
    assert "argument --min-confidence: must be from 0 up to" in refused(
        str(photos), "--csv", str(tmp_path / "t.csv"), "--min-confidence", "1.5"
    )
    assert main(["predict", str(trained_run), str(photos), "--csv", str(tmp_path / "t.csv"), "--top", "2", *FP32]) == 0
    assert "or the --top it was written with" in refused(str(photos), "--csv", str(tmp_path / "t.csv"))
    assert _state(photos) == before and not inside.exists()


def test_sorting_decodes_a_chunk_at_a_time(trained_run, tmp_path, monkeypatch):
    photos = tmp_path / "many"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(23):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(photos / f"{i:02d}.png")
    monkeypatch.setattr(PredictorBase, "chunk_size", 4)
    decoded, real_decode = [], PredictorBase.decode_files
    monkeypatch.setattr(
        PredictorBase, "decode_files", lambda self, paths: decoded.append(len(paths)) or real_decode(self, paths)
    )
    table = tmp_path / "t.csv"
    assert main(["predict", str(trained_run), str(photos), "--csv", str(table), "--quiet", *FP32]) == 0
    assert max(decoded) == 4 and sum(decoded) == 23 and len(_rows(table)) == 23
