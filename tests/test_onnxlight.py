"""`resnetlab predict MODEL.onnx IMAGE...` answers without importing PyTorch (onnxlight.py), as the checkpoint
would: the same classes and probabilities, from photos of any size and colour mode, and its picture."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from resnetlab.cli import main
from resnetlab.imagefiles import as_array, decode, decode_square

pytest.importorskip("onnxruntime")

FP32 = ["--precision", "fp32"]  # the checkpoint's side in fp32, as the exported model runs

CHILD = """
import json, sys
from resnetlab.cli import main
status = main(sys.argv[1:])
print(json.dumps({"status": status, "torch": "torch" in sys.modules}), file=sys.stderr)
"""


@pytest.fixture(scope="module")
def onnx_model(trained_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("light") / "model.onnx"
    assert main(["export", str(trained_run / "best.pt"), "-o", str(path), "--check-images", "10"]) == 0
    return path


def _photo(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth gradient with noise, like a photo: uint8 [height, width, 3]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=2)
    return np.clip(base + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)


@pytest.fixture
def photos(tmp_path):
    """Photos as users have them: a large non-square JPEG rotated by its EXIF tag, a small grayscale PNG, an RGBA
    PNG, a palette PNG."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rotated = Image.fromarray(_photo(900, 600, 0))
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90 degrees to show it upright
    rotated.save(folder / "rotated.jpg", quality=90, exif=exif)
    Image.fromarray(_photo(20, 30, 1)[:, :, 0]).save(folder / "small-gray.png")
    Image.fromarray(_photo(300, 200, 2)).convert("RGBA").save(folder / "alpha.png")
    Image.fromarray(_photo(64, 64, 3)).convert("P").save(folder / "palette.png")
    return folder


def test_predict_on_an_onnx_file_imports_no_torch_and_answers_as_its_checkpoint(
    trained_run, onnx_model, photos, capsys
):
    child = subprocess.run(
        [sys.executable, "-c", CHILD, "predict", str(onnx_model), str(photos), "--json", "--top", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(child.stderr.splitlines()[-1]) == {"status": 0, "torch": False}
    light = [json.loads(line) for line in child.stdout.splitlines()]

    assert main(["predict", str(trained_run / "best.pt"), str(photos), "--json", "--top", "3", *FP32]) == 0
    eager = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [a["file"] for a in light] == [b["file"] for b in eager] and len(light) == 4
    for a, b in zip(light, eager):
        assert [t["class"] for t in a["top"]][:1] == [t["class"] for t in b["top"]][:1]
        for ta, tb in zip(a["top"], b["top"]):
            assert ta["probability"] == pytest.approx(tb["probability"], abs=5e-3)


@pytest.mark.parametrize("size, channels", [(28, 1), (32, 3), (64, 3)])
def test_pillow_resize_matches_the_training_resize_within_a_level(photos, size, channels):
    for path in sorted(photos.iterdir()):
        trained = decode(path, channels, size).numpy().astype(int)
        square = decode_square(path, channels, size)
        light = as_array(square.resize((size, size), Image.Resampling.BILINEAR)).astype(int)
        assert light.shape == trained.shape == (channels, size, size)
        assert np.abs(light - trained).max() <= 2, path.name
        assert (light != trained).mean() < 0.05, path.name


def test_the_light_picture_shows_each_photo_and_unknown_answers(onnx_model, photos, tmp_path, capsys):
    picture = tmp_path / "out" / "p.png"
    arguments = ["predict", str(onnx_model), str(photos), "--min-confidence", "0.999", "--save", str(picture)]
    assert main(arguments) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sum("unknown (below 99.9%" in line for line in lines) == 4
    assert lines[-1] == f"picture: {picture}"
    with Image.open(picture) as image:
        assert image.format == "PNG" and image.width >= 4 * 112 and image.height >= 112
        pixels = np.asarray(image.convert("RGB"))
    gray = (pixels[:, :, 0] == 0x66) & (pixels[:, :, 1] == 0x66) & (pixels[:, :, 2] == 0x66)
    assert gray.sum() > 20  # "unknown" is written in gray
    assert not list(picture.parent.glob(".*partial"))

    # Without --save, beside the model, as predict on a checkpoint writes it beside the checkpoint.
    assert main(["predict", str(onnx_model), str(photos / "alpha.png"), "--quiet"]) == 0
    assert (onnx_model.parent / "predictions.png").is_file()


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("in_channels", "7", "in_channels is 7, not one of the known values"),
        ("image_size", "30000", "image_size is 30000, not a whole number from 8 to 1024"),
        ("classes", '"shoe"', "classes must be a list of 1 to"),
        ("classes", "[not json", "the ONNX model's metadata is damaged"),
    ],
)
def test_a_crafted_onnx_description_is_one_sentence_without_torch(onnx_model, photos, tmp_path, field, value, expected):
    import onnx

    model = onnx.load(str(onnx_model))
    next(prop for prop in model.metadata_props if prop.key == field).value = value
    crafted = tmp_path / "crafted.onnx"
    onnx.save(model, str(crafted))
    child = subprocess.run(
        [sys.executable, "-c", CHILD, "predict", str(crafted), str(photos / "alpha.png")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = child.stderr.splitlines()
    assert json.loads(lines[-1]) == {"status": 2, "torch": False}
    assert len(lines) == 2 and lines[0].startswith("resnetlab: error: ") and expected in lines[0]
    assert "Traceback" not in child.stderr and child.stdout == ""


def test_csv_and_sort_into_with_an_onnx_file_import_no_torch_and_match_the_checkpoint(
    trained_run, onnx_model, photos, tmp_path
):
    import csv

    light_csv, light_out = tmp_path / "light.csv", tmp_path / "light-sorted"
    child = subprocess.run(
        [sys.executable, "-c", CHILD, "predict", str(onnx_model), str(photos)]
        + ["--csv", str(light_csv), "--sort-into", str(light_out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(child.stderr.splitlines()[-1]) == {"status": 0, "torch": False}, child.stderr
    eager_csv, eager_out = tmp_path / "eager.csv", tmp_path / "eager-sorted"
    checkpoint = str(trained_run / "best.pt")
    to_work = ["--csv", str(eager_csv), "--sort-into", str(eager_out), *FP32]
    assert main(["predict", checkpoint, str(photos), *to_work]) == 0

    def rows(path):
        with open(path, newline="") as f:
            return {row["path"]: row for row in csv.DictReader(f)}

    light, eager = rows(light_csv), rows(eager_csv)
    assert sorted(light) == sorted(eager) and len(light) == 4
    for path, row in light.items():
        assert row["class"] == eager[path]["class"]
        assert float(row["probability"]) == pytest.approx(float(eager[path]["probability"]), abs=5e-3)

    def sorted_files(out):
        return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))

    assert sorted_files(light_out) == sorted_files(eager_out) and len(sorted_files(light_out)) == 4
    assert sorted(p.name for p in photos.iterdir()) == ["alpha.png", "palette.png", "rotated.jpg", "small-gray.png"]
