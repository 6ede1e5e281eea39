"""`resnetlab check DIR` and `train --skip-bad`: a folder's bad files, copies and counts, told before training."""

import hashlib
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from resnetlab.cli import main

TRAIN = ["train", "--dataset", "folder", "--epochs", "1", "--image-size", "16", "--batch-size", "8", "--no-cache"]


def _photo(seed: int, size: int = 48) -> Image.Image:
    """A smooth random picture: different seeds give pictures a perceptual hash tells apart."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
    return Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)


def _class_folders(root, classes=("a", "b", "c"), per_class=5):
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            _photo(100 * k + i).save(root / name / f"{i}.png")
    return root


def _snapshot(root):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_check_names_every_bad_file_each_kind_of_copy_and_the_counts(tmp_path, capsys):
    photos = _class_folders(tmp_path / "photos")
    (photos / "a" / "empty.png").write_bytes(b"")
    (photos / "b" / "notes.jpg").write_text("not a picture")
    (photos / "c" / "readme.txt").write_text("about these photos")
    (photos / "c" / ".hidden.png").write_bytes((photos / "c" / "0.png").read_bytes())
    shutil.copy(photos / "a" / "1.png", photos / "b" / "copy-of-a1.png")  # the same photo with two labels
    _photo(201).resize((96, 96)).save(photos / "c" / "larger.jpg", quality=80)  # c/1.png resized, recompressed
    before = _snapshot(photos)
    assert main(["check", str(photos), "--json", "--seed", "3"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert {(r["file"], r["reason"]) for r in report["refused"]} == {
        ("a/empty.png", "zero bytes"),
        ("b/notes.jpg", "not an image"),
    }
    assert {(s["file"], s["reason"]) for s in report["skipped"]} == {
        ("c/readme.txt", "unsupported format"),
        ("c/.hidden.png", "hidden"),
    }
    groups = {(g["kind"], tuple(f["file"] for f in g["files"])): g["where"] for g in report["copies"]}
    assert "across classes" in groups[("exact", ("a/1.png", "b/copy-of-a1.png"))]
    assert groups[("near", ("c/1.png", "c/larger.jpg"))] in (
        ["within a class"],
        ["across the training and held-out parts"],
    )
    assert len(groups) == 2
    assert report["counts"]["train"]["b"] + report["counts"]["held-out"]["b"] == 6
    assert report["problems"] == 4 and report["imbalance"] is None
    assert _snapshot(photos) == before  # check writes nothing into the folder


def test_check_says_nothing_wrong_with_exit_status_0_and_warns_of_imbalance(tmp_path, capsys):
    photos = _class_folders(tmp_path / "photos", classes=("a", "b"), per_class=4)
    assert main(["check", str(photos)]) == 0
    out = capsys.readouterr().out
    assert "nothing wrong found" in out and "4 images are smaller" not in out
    assert "8 image(s) are smaller than the training size (64 px" in (
        main(["check", str(photos), "--image-size", "64"]) == 0 and capsys.readouterr().out
    )
    for i in range(4, 22):
        _photo(1000 + i).save(photos / "a" / f"{i}.png")
    assert main(["check", str(photos)]) == 1
    out, err = capsys.readouterr()
    assert "warning: the largest class (a, 22 images) has 5.5x the images of the smallest (b, 4)" in out
    assert err == f"resnetlab: error: 1 problem(s) in {photos}; fix them, or train knowing them.\n"


def test_check_holds_out_what_train_holds_out_and_finds_a_leak(tmp_path, capsys):
    photos = _class_folders(tmp_path / "photos", per_class=6)
    assert main([*TRAIN, "--data-dir", str(photos), "--out", str(tmp_path / "run"), "--seed", "5", "--quiet"]) == 0
    held = json.loads((tmp_path / "run" / "split.json").read_text())["validation"]
    assert main(["check", str(photos), "--seed", "5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["held-out"] == {"a": 1, "b": 1, "c": 1} and len(held) == 3
    # a training photo replaced by a copy of a held-out one (the same names, so the same draw): a leak
    name = held[0].split("/")[0]
    trained = next(p for p in sorted((photos / name).iterdir()) if f"{name}/{p.name}" not in held)
    shutil.copy(photos / held[0], trained)
    assert main(["check", str(photos), "--seed", "5"]) == 1
    assert "[across the training and held-out parts]" in capsys.readouterr().out
    assert main([*TRAIN, "--data-dir", str(photos), "--out", str(tmp_path / "run2"), "--seed", "5"]) == 0
    assert "1 image(s) are both in the training part and in the held-out part, byte for byte" in capsys.readouterr().out


def test_train_refuses_a_folder_with_bad_files_naming_all_and_skip_bad_trains_without_them(tmp_path, capsys):
    photos = _class_folders(tmp_path / "photos")
    (photos / "a" / "empty.png").write_bytes(b"")
    (photos / "c" / "notes.jpg").write_text("not a picture")
    assert main([*TRAIN, "--data-dir", str(photos), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "2 file(s) in" in err and "a/empty.png (zero bytes), c/notes.jpg (not an image)" in err
    assert "--skip-bad" in err and err.count("\n") == 1
    assert not (tmp_path / "run" / "best.pt").exists()
    assert main([*TRAIN, "--data-dir", str(photos), "--out", str(tmp_path / "run"), "--skip-bad"]) == 0
    assert "--skip-bad: trained without 2 file(s)" in capsys.readouterr().out
    skipped = (tmp_path / "run" / "skipped.txt").read_text().splitlines()
    assert [line.split("\t")[:2] for line in skipped] == [
        ["a/empty.png", "zero bytes"],
        ["c/notes.jpg", "not an image"],
    ]
    validation = json.loads((tmp_path / "run" / "split.json").read_text())["validation"]
    assert "a/empty.png" not in validation and "c/notes.jpg" not in validation


def test_check_draws_a_contact_sheet_but_never_inside_the_folder(tmp_path, capsys):
    photos = _class_folders(tmp_path / "photos", classes=("a", "b"), per_class=3)
    shutil.copy(photos / "a" / "0.png", photos / "b" / "dup.png")
    before = _snapshot(photos)
    assert main(["check", str(photos), "--sheet", str(photos / "sheet.png")]) == 2
    assert "is inside the image folder" in capsys.readouterr().err
    assert main(["check", str(photos), "--sheet", str(tmp_path / "sheet.png")]) == 1
    assert Image.open(tmp_path / "sheet.png").size[0] > 100
    assert _snapshot(photos) == before


def _truncated(path, seed: int) -> None:
    """A PNG whose header reads and whose pixels stop halfway."""
    _photo(seed, size=64).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("cache", [False, True])
def test_truncated_images_are_refused_all_at_once_and_skipped_with_skip_bad(tmp_path, capsys, cache):
    """Their headers read, so only decoding finds them: in the training part and in the test part."""
    photos = tmp_path / "photos"
    for part in ("train", "test"):
        _class_folders(photos / part, classes=("a", "b"), per_class=3)
    _truncated(photos / "train" / "a" / "cut.png", 7)
    _truncated(photos / "test" / "b" / "cut.png", 8)
    before = _snapshot(photos)
    train = [*TRAIN[:-1], "--cache-dir", str(tmp_path / "cache")] if cache else TRAIN
    train = [*train, "--data-dir", str(photos)]
    assert main([*train, "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert f"2 file(s) in {photos} cannot be used: train/a/cut.png (damaged), test/b/cut.png (damaged);" in err
    assert err.count("\n") == 1 and not (tmp_path / "refused" / "best.pt").exists()
    for run in ("run", "again"):  # the second from the cached screening, where there is a cache
        out = tmp_path / run
        assert main([*train, "--out", str(out), "--skip-bad"]) == 0
        assert "--skip-bad: trained without 2 file(s)" in capsys.readouterr().out
        skipped = [line.split("\t")[:2] for line in (out / "skipped.txt").read_text().splitlines()]
        assert skipped == [["train/a/cut.png", "damaged"], ["test/b/cut.png", "damaged"]]
    assert _snapshot(photos) == before


def test_small_images_must_be_closer_to_count_as_near_copies():
    from resnetlab.check import NEAR_BITS, SMALL_NEAR_BITS, SMALL_SIDE, _near_pairs, near_bits

    assert near_bits(SMALL_SIDE, 500) == NEAR_BITS and near_bits(32, 32) == SMALL_NEAR_BITS < NEAR_BITS
    assert near_bits(28, 28) < 0  # tiny: never near, whatever the distance
    # image 0 is SMALL_NEAR_BITS + 1 bits from image 1 and SMALL_NEAR_BITS from image 2; 1 and 2 are 1 bit apart
    hashes = np.array([0, (1 << SMALL_NEAR_BITS + 1) - 1, (1 << SMALL_NEAR_BITS) - 1], dtype=np.uint64)
    assert _near_pairs(hashes, np.full(3, NEAR_BITS)) == [(0, 1), (0, 2), (1, 2)]
    assert _near_pairs(hashes, np.array([NEAR_BITS, SMALL_NEAR_BITS, NEAR_BITS])) == [(0, 2), (1, 2)]  # 1 is small


def test_tiny_images_are_compared_for_exact_copies_only_and_the_summary_says_so(tmp_path, capsys):
    photos = _class_folders(tmp_path / "photos", classes=("a", "b"), per_class=3)
    for name in ("a", "b"):
        for path in (photos / name).iterdir():
            Image.open(path).resize((28, 28)).save(path)
    shutil.copy(photos / "a" / "0.png", photos / "b" / "same.png")  # an exact copy is still found
    Image.open(photos / "a" / "1.png").save(photos / "a" / "again.jpg", quality=70)  # a near copy is not looked for
    assert main(["check", str(photos), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [(g["kind"], [f["file"] for f in g["files"]]) for g in report["copies"]] == [
        ("exact", ["a/0.png", "b/same.png"])
    ]
    assert report["exact_copies_only"] == 8
    assert main(["check", str(photos)]) == 1
    assert "8 image(s) under 32 px were compared for exact copies only" in capsys.readouterr().out
