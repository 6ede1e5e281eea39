"""Hostile inputs, round 2 (issue 16): links that loop, runs that must not be overwritten, decompression bombs,
unusual image modes, crafted checkpoints, hidden files and CJK class names; round 3 (issue 27): files that are not
checkpoints, flags given with --resume, special files, runs with only last.pt, serve's query and class names that
cannot be drawn. Each mistake gets one sentence,
exit status 2, no traceback, and files saved before stay as they were."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fakedata import pattern_images, write_image_folder
from PIL import Image

from resnetlab.card import MAX_CLASSES
from resnetlab.checkpoint import FORMAT, load_checkpoint, read_checkpoint, save_atomic
from resnetlab.cli import main
from resnetlab.errors import UserError
from resnetlab.folder import list_split
from resnetlab.imagefiles import MAX_FILE_PIXELS, decode

TRAIN_FOLDER = ["--dataset", "folder", "--epochs", "1", "--image-size", "16", "--batch-size", "8"]


def _fails_clearly(capsys, args: list[str], *expected: str) -> str:
    """main(args) exits 2 with one line on stderr holding every expected fragment, and no traceback or warning."""
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and "Warning" not in err and len(err.strip().splitlines()) == 1, err
    for fragment in expected:
        assert fragment in err, err
    return err


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _predict_json(capsys, checkpoint: Path, images: list[Path], tmp_path: Path) -> dict[str, list]:
    """predict --json on image files: each file's top classes (the picture goes to tmp_path, not the run)."""
    code = main(
        [
            "predict",
            str(checkpoint),
            *map(str, images),
            "--json",
            "--top",
            "10",
            "--save",
            str(tmp_path / "predictions.png"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Warning" not in err, err
    return {Path(row["file"]).name: row["top"] for row in map(json.loads, out.splitlines())}


def _probabilities(top: list[dict]) -> dict[str, float]:
    return {entry["class"]: entry["probability"] for entry in top}


# 5. Links in folder datasets


def test_links_that_lead_back_into_the_dataset_or_nowhere_add_nothing_and_are_named(tmp_path, capsys):
    root = write_image_folder(tmp_path / "data", classes=("a", "b"), per_class=4)
    train = root / "train"
    os.symlink(".", train / "fake")  # a "class" that is the split itself
    os.symlink("..", train / "a" / "back")  # a loop: train/a/back/a/back/...
    os.symlink("loop.png", train / "a" / "loop.png")  # a link to itself leads nowhere
    os.symlink("0.png", train / "b" / "again.png")  # a second name for an image of the dataset
    out = tmp_path / "run"
    assert main(["train", *TRAIN_FOLDER, "--data-dir", str(root), "--out", str(out)]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:") and "link(s)" in line]
    assert load_checkpoint(out / "best.pt").card.classes == ("a", "b")
    classes, samples, skipped = list_split(root, train=True)
    assert classes == ["a", "b"] and len(samples) == 8  # 4 images per class, again.png counted once
    assert sorted(Path(p).name for p in skipped) == ["back", "fake", "loop.png"]
    assert len(notes) == 1 and all(name in notes[0] for name in ("fake", "back", "loop.png")), notes


# 6. An interrupted run (last.pt, no best.pt yet)


@pytest.fixture
def interrupted_run(trained_run: Path, tmp_path: Path) -> Path:
    """A run folder as an interrupt in the first epoch leaves it: last.pt and metrics.csv, no best.pt."""
    run = tmp_path / "interrupted"
    run.mkdir()
    for name in ("last.pt", "metrics.csv"):
        shutil.copy(trained_run / name, run / name)
    return run


def test_train_into_an_interrupted_run_is_refused_and_says_how_to_resume(interrupted_run, tiny_fashion, capsys):
    before = {name: _digest(interrupted_run / name) for name in ("last.pt", "metrics.csv")}
    _fails_clearly(
        capsys,
        ["train", "--data-dir", str(tiny_fashion), "--epochs", "1", "--out", str(interrupted_run)],
        "last.pt",
        "metrics.csv",
        f"resnetlab train --resume {interrupted_run}",
        "--overwrite",
    )
    assert {name: _digest(interrupted_run / name) for name in before} == before
    assert sorted(p.name for p in interrupted_run.iterdir()) == ["last.pt", "metrics.csv"]


def test_export_onto_the_last_pt_of_a_run_is_refused(interrupted_run, trained_run, capsys):
    before = _digest(interrupted_run / "last.pt")
    _fails_clearly(
        capsys,
        ["export", str(trained_run), "--format", "torchscript", "-o", str(interrupted_run / "last.pt")],
        "last.pt",
        "file of a training run",
    )
    assert _digest(interrupted_run / "last.pt") == before


# 7. Decompression bombs


def _blank_png(path: Path, width: int, height: int) -> Path:
    """A valid black 1-bit PNG of any size, written row block by row block: Pillow would hold the whole image
    in memory at a byte per pixel (400 MB for 20000x20000) to write the same few tens of KB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), b"\0" * (1 + (width + 7) // 8)  # a row: its filter byte, then the bits
    idat = b"".join(packer.compress(row * min(500, height - top)) for top in range(0, height, 500)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit per pixel, grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


# Above Pillow's twice-the-limit error, between its warning and error, and between our limit and Pillow's.
BOMB_SIZES = [(20000, 20000), (10000, 10000), (9000, 8000)]


@pytest.mark.parametrize("width,height", BOMB_SIZES)
def test_predict_on_an_image_with_too_many_pixels(trained_run, tmp_path, capsys, recwarn, width, height):
    bomb = _blank_png(tmp_path / "bomb.png", width, height)
    _fails_clearly(
        capsys,
        ["predict", str(trained_run), str(bomb), "--save", str(tmp_path / "p.png")],
        str(bomb),
        f"{MAX_FILE_PIXELS:,}",
    )
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_train_on_a_folder_with_an_image_with_too_many_pixels(tmp_path, capsys):
    root = write_image_folder(tmp_path / "data", classes=("a", "b"), per_class=4)
    _blank_png(root / "train" / "a" / "bomb.png", 20000, 20000)
    _fails_clearly(  # refused with the folder's other unusable files, from the header (screen.py)
        capsys,
        ["train", *TRAIN_FOLDER, "--data-dir", str(root), "--out", str(tmp_path / "run")],
        f"1 file(s) in {root} cannot be used: train/a/bomb.png (too many pixels);",
    )


# 8. 16-bit, CMYK, palette, alpha, EXIF rotation


def _gradient16(path: Path, width: int = 64) -> Path:
    """A 16-bit grayscale PNG whose columns run from 0 to 65535."""
    Image.fromarray(np.tile(np.linspace(0, 65535, width).astype(np.uint16), (width, 1))).save(path)
    with Image.open(path) as image:
        assert image.mode in ("I;16", "I")
    return path


def test_a_16_bit_gradient_keeps_its_gray_levels(tmp_path):
    row = decode(_gradient16(tmp_path / "gradient16.png"), channels=1, size=64)[0, 32].int()
    assert row[0] <= 2 and row[-1] >= 253  # the full range, not clipped to white
    assert (row.diff() >= 0).all() and abs(int(row[32]) - 128) <= 4


def test_predict_a_16_bit_image_as_its_8_bit_twin(trained_run, tmp_path, capsys):
    sixteen = _gradient16(tmp_path / "gradient16.png", width=28)
    eight = tmp_path / "gradient8.png"
    Image.fromarray((np.asarray(Image.open(sixteen), dtype=np.float64) / 257).round().astype(np.uint8)).save(eight)
    tops = _predict_json(capsys, trained_run, [sixteen, eight], tmp_path)
    sixteen_p, eight_p = _probabilities(tops["gradient16.png"]), _probabilities(tops["gradient8.png"])
    assert all(abs(sixteen_p[name] - p) < 0.02 for name, p in eight_p.items()), (sixteen_p, eight_p)


def _palette_png(path: Path, size: int, transparency: Any) -> Path:
    """A palette PNG: left half red, right half blue, a (partly) transparent green square in the middle."""
    image = Image.new("P", (size, size), 0)
    image.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0] + [0] * 759)
    image.paste(1, (size // 2, 0, size, size))
    image.paste(2, (size * 3 // 8, size * 3 // 8, size * 5 // 8, size * 5 // 8))
    image.save(path, transparency=transparency)
    return path


@pytest.mark.parametrize("size", [32, 400])  # 400: large enough to be reduced before the final resize
@pytest.mark.parametrize("transparency", [2, bytes([255, 255, 128])], ids=["one_index", "alpha_per_entry"])
def test_palette_png_with_transparency(tmp_path, size, transparency):
    path = _palette_png(tmp_path / "palette.png", size, transparency)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow warns when such a palette goes straight to RGB
        rgb, gray = decode(path, channels=3, size=16), decode(path, channels=1, size=16)
    assert rgb.shape == (3, 16, 16) and gray.shape == (1, 16, 16)
    assert rgb[:, 8, 1].tolist() == [255, 0, 0] and rgb[:, 8, 14].tolist() == [0, 0, 255]
    assert abs(int(gray[0, 8, 1]) - 76) <= 2  # red's luma


@pytest.mark.parametrize("size", [32, 400])
def test_one_bit_png(tmp_path, size):
    image = Image.new("1", (size, size), 0)
    image.paste(1, (size // 2, 0, size, size))
    image.save(tmp_path / "bits.png")
    pixels = decode(tmp_path / "bits.png", channels=1, size=16)
    assert pixels[0, 8, 1] == 0 and pixels[0, 8, 14] == 255


def test_cmyk_jpeg_and_rgba_png_decode_to_their_colours(tmp_path):
    Image.new("CMYK", (48, 48), (0, 255, 255, 0)).save(tmp_path / "red.jpg")  # cyan 0, magenta and yellow full
    Image.new("RGBA", (48, 48), (0, 200, 0, 128)).save(tmp_path / "green.png")
    red, green = decode(tmp_path / "red.jpg", 3, 16), decode(tmp_path / "green.png", 3, 16)
    assert red.shape == green.shape == (3, 16, 16)
    assert (red[:, 8, 8].int() - torch.tensor([255, 0, 0])).abs().max() <= 8
    assert green[:, 8, 8].tolist() == [0, 200, 0]
    assert decode(tmp_path / "red.jpg", 1, 16).shape == (1, 16, 16)


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((32, 64), dtype=np.uint8)
    stored[:16, 16:32] = 255  # a wide picture, white at the top of the left half of its centre square only
    picture = Image.fromarray(stored).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: shown turned 90 degrees clockwise
    picture.save(tmp_path / "turned.jpg", exif=exif, quality=95)
    picture.transpose(Image.Transpose.ROTATE_270).save(tmp_path / "upright.png")  # clockwise: white top right
    picture.save(tmp_path / "as_stored.png")
    turned = decode(tmp_path / "turned.jpg", 3, 16).float()
    assert (turned - decode(tmp_path / "upright.png", 3, 16).float()).abs().mean() < 8
    assert (turned - decode(tmp_path / "as_stored.png", 3, 16).float()).abs().mean() > 50


def test_a_photo_that_is_not_square_is_cut_to_the_centre_square_of_its_shorter_side(tmp_path):
    """Not squashed: the outer thirds of a 3:1 picture (red, green) are cut off, the blue middle fills the input."""
    wide = np.zeros((30, 90, 3), dtype=np.uint8)
    wide[:, :30], wide[:, 30:60], wide[:, 60:] = (255, 0, 0), (0, 0, 255), (0, 255, 0)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    Image.fromarray(wide.transpose(1, 0, 2).copy()).save(tmp_path / "tall.png")
    for name in ("wide.png", "tall.png"):
        pixels = decode(tmp_path / name, 3, 8)
        assert pixels.shape == (3, 8, 8)
        assert pixels.reshape(3, -1).T.unique(dim=0).tolist() == [[0, 0, 255]], name


# 9. Crafted checkpoints


def _set(field: str, value: Any) -> Callable[[dict], None]:
    def change(saved: dict) -> None:
        *parents, key = field.split(".")
        target = saved
        for parent in parents:
            target = target[parent]
        target[key] = value

    return change


def _too_many_classes(saved: dict) -> None:
    saved["classes"] = [f"c{i}" for i in range(MAX_CLASSES + 1)]
    saved["model"]["num_classes"] = MAX_CLASSES + 1


CRAFTED = {
    "too_many_classes": (_too_many_classes, "classes must be a list of 1 to"),
    "num_classes": (_set("model.num_classes", 5_000_000), "model.num_classes says 5000000"),
    "image_size": (_set("image_size", 30000), "image_size is 30000"),
    "mean": (_set("mean", "abc"), "mean is 'abc'"),
    "no_classes": (_set("classes", []), "classes must be a list of 1 to"),
    "in_channels": (_set("in_channels", 7), "in_channels is 7"),
    "model_name": (_set("model.name", "resnet9000"), "model.name is 'resnet9000'"),
}


@pytest.mark.parametrize("command", ["eval", "predict"])
@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_model_description_is_refused_before_anything_is_built(
    trained_run, tmp_path, capsys, monkeypatch, command, case
):
    import resnetlab.models

    change, expected = CRAFTED[case]
    saved = read_checkpoint(trained_run / "best.pt")
    change(saved)
    crafted = tmp_path / "crafted.pt"
    save_atomic(saved, crafted)

    def build_nothing(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was built from a damaged description")

    monkeypatch.setattr(resnetlab.models, "create_model", build_nothing)  # card.py imports it when it builds
    image = tmp_path / "image.png"
    Image.new("L", (28, 28), 128).save(image)
    args = ["eval", str(crafted)] if command == "eval" else ["predict", str(crafted), str(image)]
    _fails_clearly(capsys, args, str(crafted), "damaged model description", expected)


def _deflate_bomb(path: Path, unpacked: int) -> Path:
    """A torch archive whose weights record is `unpacked` bytes of zeros, deflated to about a thousandth."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": 1, "weights": torch.zeros(4)}, buffer)
    with zipfile.ZipFile(buffer) as original, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bomb:
        for info in original.infolist():
            if info.filename.endswith("/data/0"):
                with bomb.open(info.filename, "w", force_zip64=True) as record:
                    for _ in range(unpacked // 2**20):
                        record.write(bytes(2**20))
            else:
                bomb.writestr(info.filename, original.read(info.filename))
    return path


def test_a_deflate_bomb_checkpoint_is_refused_without_unpacking_it(tmp_path):
    bomb = _deflate_bomb(tmp_path / "bomb.pt", 300 * 2**20)
    assert bomb.stat().st_size < 2 * 2**20
    # In a fresh process, so that the peak memory measured is this load's, not an earlier test's.
    script = (
        "import resource, sys\n"
        "from resnetlab.checkpoint import read_checkpoint\n"
        "from resnetlab.errors import UserError\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    read_checkpoint(sys.argv[1])\n"
        "except UserError as e:\n"
        "    print(e)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"  # KB on Linux
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(bomb)], capture_output=True, text=True, timeout=120, check=False
    )
    message, grown_mb = result.stdout.strip().rsplit("\n", 1)
    assert "would unpack to" in message and str(bomb) in message, result
    assert int(grown_mb) < 100, result


def _old_layout(trained_run: Path, stem: bool) -> dict:
    """A checkpoint as the engine wrote it before the model card (optionally from before the stem option)."""
    now = read_checkpoint(trained_run / "best.pt")
    options = {"shortcut": now["model"]["options"]["shortcut"]}
    if stem:
        options["stem"] = now["model"]["options"]["stem"]
    return {
        "format": FORMAT,
        "version": 1,
        "model": {
            "name": now["model"]["name"],
            "num_classes": len(now["classes"]),
            "in_channels": 1,
            "options": options,
        },
        "classes": list(now["classes"]),
        "in_channels": 1,
        "image_size": 28,
        "mean": list(now["mean"]),
        "std": list(now["std"]),
        "test_time_flip": False,
        "dataset": "fashion-mnist",
        "data_dir": now["data_dir"],
        "state_dict": now["state_dict"],
        "epoch": now["epoch"],
        "metrics": now["metrics"],
        "best_test_accuracy": now["best_test_accuracy"],
        "config": now["config"],
    }


@pytest.mark.parametrize("stem", [True, False], ids=["before_the_card", "before_the_stem_option"])
def test_checkpoints_from_before_the_model_card_still_load_and_predict(trained_run, tmp_path, capsys, stem):
    old = tmp_path / "old.pt"
    save_atomic(_old_layout(trained_run, stem), old)
    image = tmp_path / "image.png"
    Image.fromarray(pattern_images(np.array([3]), 28, 1)[0, :, :, 0]).save(image)
    uncalibrated = tmp_path / "now.pt"  # an old card has no temperature: the plain softmax of the same weights
    save_atomic({**read_checkpoint(trained_run / "best.pt"), "temperature": 1.0}, uncalibrated)
    assert _predict_json(capsys, old, [image], tmp_path) == _predict_json(capsys, uncalibrated, [image], tmp_path)
    assert main(["eval", str(old), "--json", "--save", str(tmp_path / "cm.png")]) == 0
    assert json.loads(capsys.readouterr().out)["classes"] == list(load_checkpoint(trained_run).card.classes)


# 11. Hidden files and folders


def test_hidden_folders_and_macos_resource_files_are_skipped(tmp_path, capsys):
    root = write_image_folder(tmp_path / "data", classes=("a", "b"), per_class=4)
    (root / "train" / ".ipynb_checkpoints").mkdir()
    shutil.copy(root / "train" / "a" / "0.png", root / "train" / ".ipynb_checkpoints" / "0.png")
    for split in ("train", "test"):
        # What macOS writes beside each file it copies to a foreign disk: AppleDouble metadata, not an image.
        (root / split / "a" / "._0.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    out = tmp_path / "run"
    assert main(["train", *TRAIN_FOLDER, "--data-dir", str(root), "--out", str(out), "--quiet"]) == 0
    assert load_checkpoint(out / "best.pt").card.classes == ("a", "b")
    capsys.readouterr()

    folder = root / "train" / "a"
    (folder / ".thumbnails").mkdir()
    shutil.copy(folder / "0.png", folder / ".thumbnails" / "0.png")
    shutil.copy(folder / "0.png", folder / ".hidden.png")
    tops = _predict_json(capsys, out, [folder], tmp_path)
    assert sorted(tops) == ["0.png", "1.jpg", "2.png", "3.jpg"]


# 12. Cosmetics


class _RunsACommand:
    """A pickle payload that would call os.system (see test_checkpoint.py)."""

    def __reduce__(self) -> tuple:
        return os.system, ("true",)


def test_the_refusal_of_an_unsafe_checkpoint_is_one_whole_sentence(tmp_path, capsys, recwarn):
    evil = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "state_dict": {}, "payload": _RunsACommand()}, evil)
    try:
        torch.load(evil, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch's own words, to compare with
        torch_message = " ".join(str(e).split())
    image = tmp_path / "image.png"
    Image.new("L", (28, 28)).save(image)
    err = _fails_clearly(capsys, ["predict", str(evil), str(image)], "could run code")
    reason = err[err.index("(") + 1 : err.rindex(")")]
    assert "system" in reason, err  # names what it refused
    assert reason + ". " in torch_message + " ", err  # a whole sentence of torch's, not cut mid-word
    assert err.rstrip().endswith("load only checkpoints written by resnetlab.")
    assert not [w for w in recwarn if "weights_only" in str(w.message) or "torch.load" in str(w.message)]


def test_a_long_refusal_from_torch_is_cut_between_words(tmp_path, monkeypatch):
    import pickle

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise pickle.UnpicklingError("Unsupported global: " + "wordy " * 100)

    monkeypatch.setattr(torch, "load", refuse)
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x80\x02not a zip")  # a pickle, as far as its first bytes tell
    with pytest.raises(UserError) as refused:
        read_checkpoint(path)
    reason = str(refused.value).split("(", 1)[1].rsplit(")", 1)[0]
    assert set(reason.split()) == {"wordy", "..."} and len(reason) <= 210, reason


def test_cjk_class_names_are_drawn_with_a_cjk_font(tmp_path):
    from matplotlib import font_manager

    from resnetlab.plots import confusion_matrix_plot, prediction_grid

    # Debian's fonts-noto-cjk (make test-system installs it); matplotlib may have cached its font list before.
    assert any("cjk" in path.lower() for path in font_manager.findSystemFonts()), "install fonts-noto-cjk"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        confusion_matrix_plot([[3, 1], [0, 4]], ["猫", "狗"], tmp_path / "cm.png", "猫 and 狗")
        images = torch.zeros(2, 1, 16, 16, dtype=torch.uint8)
        prediction_grid(images, ["猫", "狗"], [0.9, 0.6], ["猫", "猫"], tmp_path / "grid.png")
    assert not [str(w.message) for w in caught if "missing from font" in str(w.message)]


# Round 3 (issue 27)
# 1. Files that are not checkpoints


def _not_a_checkpoint(kind: str, folder: Path) -> Path:
    """A model exported for other programs (ONNX, TorchScript), or bytes that are no kind of checkpoint."""
    model = torch.nn.Linear(2, 2)
    if kind == "onnx":
        path = folder / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.zeros(1, 2),), str(path), dynamo=False)
    elif kind == "torchscript":
        path = folder / "model.torchscript.pt"
        torch.jit.save(torch.jit.script(model), str(path))
    else:
        path = folder / "random.pt"
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


@pytest.mark.parametrize("kind", ["onnx", "torchscript", "random"])
def test_init_from_a_file_that_is_not_a_checkpoint_says_what_init_takes(tiny_fashion, tmp_path, capsys, kind):
    path = _not_a_checkpoint(kind, tmp_path)
    args = [
        "train",
        "--data-dir",
        str(tiny_fashion),
        "--epochs",
        "1",
        "--init",
        str(path),
        "--out",
        str(tmp_path / "r"),
    ]
    if kind == "random":
        err = _fails_clearly(capsys, args, f"{path} is not a readable checkpoint (another kind of file)")
    else:
        err = _fails_clearly(
            capsys, args, "cannot be a starting point", "--init takes a best.pt, last.pt or run folder"
        )
    assert "could run code" not in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_an_export_given_as_a_checkpoint_is_named_as_an_export(tmp_path, capsys, kind):
    path, out = _not_a_checkpoint(kind, tmp_path), tmp_path / "out" / "again.onnx"
    err = _fails_clearly(capsys, ["export", str(path), "-o", str(out)], "model from resnetlab export")
    assert "best.pt or last.pt it was exported from" in err, err


# 3. Named pipes, devices and links to them


@pytest.mark.parametrize("kind", ["fifo", "device", "link_to_fifo"])
def test_a_named_pipe_or_a_device_is_not_a_regular_file(trained_run, tmp_path, capsys, kind):
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    special = {"fifo": fifo, "device": Path("/dev/zero"), "link_to_fifo": tmp_path / "link.png"}[kind]
    if kind == "link_to_fifo":
        os.symlink(fifo, special)
    what = "a device" if kind == "device" else "a named pipe"
    _fails_clearly(
        capsys,
        ["predict", str(trained_run), str(special), "--save", str(tmp_path / "p.png")],
        f"{special} is not a regular file ({what}); give image files or folders of images",
    )
    _fails_clearly(capsys, ["eval", str(special)], f"{special} is not a regular file ({what}); give a best.pt")


# 4. A run folder with only last.pt


@pytest.mark.parametrize("command", ["predict", "init"])
def test_a_run_folder_with_only_last_pt_says_how_to_use_it(interrupted_run, tiny_fashion, tmp_path, capsys, command):
    if command == "predict":
        args = ["predict", str(interrupted_run), "--data-dir", str(tiny_fashion), "-n", "2"]
    else:
        args = ["train", "--data-dir", str(tiny_fashion), "--epochs", "1", "--init", str(interrupted_run)]
        args += ["--out", str(tmp_path / "new")]
    last = interrupted_run / "last.pt"
    _fails_clearly(capsys, args, f"give {last} to use it", f"resnetlab train --resume {interrupted_run}")
    assert main([*args[:1], *[str(last) if a == str(interrupted_run) else a for a in args[1:]], "--quiet"]) == 0
    capsys.readouterr()


# 2. Flags given with --resume

RESUMABLE = ["--model", "resnet20", "--batch-size", "32", "--subset", "128", "--seed", "3", "--quiet"]


def _rows(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((out / "metrics.csv").open()))


def test_resume_with_more_epochs_eval_every_and_tta_applies_them_and_says_so(tiny_fashion, tmp_path, capsys):
    from resnetlab.config import RECIPES
    from resnetlab.engine import build_scheduler

    out = tmp_path / "run"
    train = ["train", "--data-dir", str(tiny_fashion), "--out", str(out), *RESUMABLE]
    assert main([*train, "--epochs", "2", "--eval-every", "2"]) == 0
    capsys.readouterr()
    resume = ["train", "--resume", str(out), "--epochs", "4", "--eval-every", "1", "--tta", "translate"]
    assert main(resume) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 2, notes
    assert notes[0].startswith("note: --epochs 4: the run was planned for 2 epochs; its one-cycle schedule"), notes
    assert notes[1].startswith("note: --eval-every 1 and --tta translate apply from epoch 3 on"), notes
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    assert [bool(r["test_accuracy"]) for r in rows] == [False, True, True, True]  # epoch 3: --eval-every 1
    last = load_checkpoint(out / "last.pt")
    assert last.card.test_time_translate and last.config["epochs"] == 4 and last.config["eval_every"] == 1
    # The schedule was planned again for 4 epochs: the last step's learning rate is the 4-epoch plan's.
    steps = 4 * (128 // 32)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2 * 32 / 128)
    scheduler = build_scheduler(RECIPES["fast"], optimizer, steps)
    for _ in range(steps - 1):
        optimizer.step()
        scheduler.step()
    assert float(rows[-1]["lr"]) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-6)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A 2-epoch run of RESUMABLE's settings, for refusals that must leave it as it was."""
    from fakedata import write_mnist_like

    base = tmp_path_factory.mktemp("finished")
    write_mnist_like(base / "data", "FashionMNIST", n_train=300, n_test=100)
    args = ["train", "--data-dir", str(base / "data"), "--out", str(base / "run"), "--epochs", "2", *RESUMABLE]
    assert main(args) == 0
    return base / "run"


@pytest.mark.parametrize(
    "flags,expected",
    [
        (
            ["--batch-size", "64", "--model", "resnet8w"],
            "which cannot change: --model resnet8w (the run's: --model resnet20), --batch-size 64 (the run's: "
            "--batch-size 32); leave them out, or train a new run into another --out.",
        ),
        (["--recipe", "best"], "--recipe best (the run's: --recipe fast); leave it out"),
        (["--image-size", "32"], "--image-size 32 (the run's: --image-size none)"),
        (["--epochs", "1"], "has already trained 2 epochs; give --epochs above 2 to train it longer"),
    ],
)
def test_resume_refuses_flags_that_cannot_change(finished_run, capsys, flags, expected):
    before = {path.name: _digest(path) for path in finished_run.iterdir() if path.is_file()}
    _fails_clearly(capsys, ["train", "--resume", str(finished_run), *flags], expected)
    assert {path.name: _digest(path) for path in finished_run.iterdir() if path.is_file()} == before


def test_resume_on_a_folder_whose_files_changed_says_so_and_refuses_other_classes(tmp_path, capsys):
    root = write_image_folder(tmp_path / "data", classes=("a", "b"), per_class=8)
    out = tmp_path / "run"
    assert main(["train", *TRAIN_FOLDER, "--data-dir", str(root), "--out", str(out), "--quiet"]) == 0
    shutil.copy(root / "train" / "a" / "0.png", root / "train" / "a" / "new.png")
    assert main(["train", "--resume", str(out), "--epochs", "2"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if "changed since this run began" in line]
    assert notes == [
        f"note: the data in {root / 'train'} changed since this run began (17 training images now, 16 then); "
        "it goes on with the files as they are now"
    ]
    for split in ("train", "test"):
        shutil.copytree(root / split / "b", root / split / "c")
    before = _digest(out / "last.pt")
    _fails_clearly(
        capsys,
        ["train", "--resume", str(out), "--epochs", "3"],
        f"the data in {root / 'train'} now has the classes a, b, c, not the ones this run trained on",
    )
    assert _digest(out / "last.pt") == before


# 6. Class names the pictures cannot show as they are


@pytest.fixture
def no_cjk_font(monkeypatch):
    """matplotlib as on a machine without fonts-noto-cjk: no CJK font in its list, and none found on the system."""
    from matplotlib import font_manager

    import resnetlab.plots as plots

    kept = [f for f in font_manager.fontManager.ttflist if not any(k in f.fname.lower() for k in ("cjk", "wqy"))]
    monkeypatch.setattr(font_manager.fontManager, "ttflist", kept)
    monkeypatch.setattr(font_manager, "findSystemFonts", lambda *args, **kwargs: [])
    plots._cjk_font.cache_clear()
    yield
    plots._cjk_font.cache_clear()


def test_names_no_font_can_draw_become_indices_and_long_ones_are_shortened(tmp_path, capsys, no_cjk_font):
    import resnetlab.plots as plots

    long = "a" * 240
    root = write_image_folder(tmp_path / "data", classes=(long, "猫"), per_class=4)
    out = tmp_path / "run"
    assert main(["train", *TRAIN_FOLDER, "--data-dir", str(root), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    outputs = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, args in {
            "eval": ["eval", str(out)],
            "predict": ["predict", str(out), "-n", "4", "--quiet"],
            "json": ["eval", str(out), "--json", "--save", str(tmp_path / "cm.png")],
        }.items():
            getattr(plots, "_NOTED", set()).clear()  # each command is a process of its own
            assert main(args) == 0
            outputs[name] = capsys.readouterr()
    drawing = [
        str(w.message) for w in caught if "missing from font" in str(w.message) or "constrained" in str(w.message)
    ]
    assert not drawing, drawing[:3]
    for name in ("eval", "predict"):
        notes = outputs[name].err.splitlines()
        assert len(notes) == 1 and "class index" in notes[0] and "fonts-noto-cjk" in notes[0], notes
    assert max(len(line) for line in outputs["eval"].out.splitlines()) <= 100, outputs["eval"].out
    assert json.loads(outputs["json"].out)["classes"] == [long, "猫"]  # the JSON keeps the names whole
    assert plots.class_labels([long, "猫"], [long, "猫"]) == ["a" * 15 + "\u2026" + "a" * 8, "class 1"]
