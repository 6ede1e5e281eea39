"""Phone photos: HEIC and AVIF read wherever images are (train, check, predict, explain, serve), and a HEIC file
without its decoder named with what to install, never silently left out."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnetlab import imagefiles
from resnetlab.cli import main

TRAIN = ["train", "--dataset", "folder", "--epochs", "1", "--image-size", "16", "--batch-size", "8", "--no-cache"]
NEEDS_HEIC = "HEIC needs pip install 'resnetlab[heic]'"


def _photos(root: Path, suffixes=(".png", ".jpg", ".heic", ".avif")) -> Path:
    """root/<class>/<i><suffix>: smooth random pictures, one of each suffix per class, saved in its format."""
    formats = {".png": "PNG", ".jpg": "JPEG", ".heic": "HEIF", ".avif": "AVIF"}
    for k, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i, suffix in enumerate(suffixes):
            coarse = np.random.default_rng(10 * k + i).integers(0, 256, (4, 4, 3)).astype(np.uint8)
            picture = Image.fromarray(coarse).resize((32, 24), Image.Resampling.BICUBIC)
            picture.save(root / name / f"{i}{suffix}", format=formats[suffix])
    return root


@pytest.fixture
def without_heic_decoder(monkeypatch):
    """As if pillow-heif were not installed: it cannot be imported, and Pillow has no HEIF opener."""
    imagefiles.readable_formats()  # registered now, so nothing registers it again during the test
    monkeypatch.setitem(sys.modules, "pillow_heif", None)
    monkeypatch.setattr(Image, "ID", [name for name in Image.ID if name != "HEIF"])
    monkeypatch.delitem(Image.OPEN, "HEIF")
    imagefiles._optional_decoders.cache_clear()
    yield
    imagefiles._optional_decoders.cache_clear()


def test_the_suffixes_are_those_the_installed_decoders_read_and_the_phone_formats():
    from torchvision.datasets.folder import IMG_EXTENSIONS

    suffixes = imagefiles.image_suffixes()
    assert set(IMG_EXTENSIONS) <= set(suffixes) and {".heic", ".heif", ".avif", ".jfif"} <= set(suffixes)
    assert ".gif" not in suffixes and ".txt" not in suffixes
    assert {"HEIF", "AVIF"} <= set(imagefiles.readable_formats())  # the dev extra installs both


def test_heic_and_avif_photos_train_check_predict_explain_and_serve(tmp_path, capsys):
    from resnetlab.checkpoint import load_checkpoint
    from resnetlab.serve import decode_image

    photos = _photos(tmp_path / "photos")
    assert main(["check", str(photos), "--json"]) in (0, 1)
    report = json.loads(capsys.readouterr().out)
    assert report["refused"] == [] and report["skipped"] == []
    assert sum(report["counts"]["train"].values()) + sum(report["counts"]["held-out"].values()) == 8
    out = tmp_path / "run"
    assert main([*TRAIN, "--data-dir", str(photos), "--out", str(out), "--quiet"]) == 0
    card = load_checkpoint(out / "best.pt").card
    assert {Path(p).suffix for p in card.holdout} <= {".png", ".jpg", ".heic", ".avif"}
    capsys.readouterr()
    assert main(["predict", str(out / "best.pt"), str(photos / "a" / "2.heic"), str(photos / "b"), "--json"]) == 0
    predicted = [json.loads(line)["file"] for line in capsys.readouterr().out.splitlines()]
    assert [Path(p).name for p in predicted] == ["2.heic", "0.png", "1.jpg", "2.heic", "3.avif"]
    sheet = tmp_path / "cam.png"
    assert main(["explain", str(out / "best.pt"), str(photos / "a" / "3.avif"), "--out", str(sheet)]) == 0
    assert sheet.stat().st_size > 0
    pixels = decode_image((photos / "b" / "2.heic").read_bytes(), card)
    assert tuple(pixels.shape) == (card.in_channels, card.image_size, card.image_size)


def test_without_the_heic_decoder_each_heic_file_is_named_with_what_to_install(tmp_path, capsys, without_heic_decoder):
    from fastapi import HTTPException

    from resnetlab.checkpoint import load_checkpoint
    from resnetlab.serve import decode_image

    photos = _photos(tmp_path / "photos", suffixes=(".png", ".jpg", ".heic", ".png"))
    (photos / "b" / "4.png").write_bytes((photos / "b" / "2.heic").read_bytes())  # a HEIC photo misnamed
    assert main([*TRAIN, "--data-dir", str(photos), "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert f"3 file(s) in {photos} cannot be used: a/2.heic ({NEEDS_HEIC}), b/2.heic ({NEEDS_HEIC})," in err
    assert f"b/4.png ({NEEDS_HEIC})" in err and err.count("\n") == 1
    out = tmp_path / "run"
    assert main([*TRAIN, "--data-dir", str(photos), "--out", str(out), "--skip-bad"]) == 0
    assert f"--skip-bad: trained without 3 file(s) of {photos} that cannot be used: a/2.heic ({NEEDS_HEIC})" in (
        capsys.readouterr().out
    )
    assert "b/2.heic\t" + NEEDS_HEIC in (out / "skipped.txt").read_text()
    assert main(["check", str(photos), "--json"]) == 1
    refused = {(r["file"], r["reason"]) for r in json.loads(capsys.readouterr().out)["refused"]}
    assert refused == {("a/2.heic", NEEDS_HEIC), ("b/2.heic", NEEDS_HEIC), ("b/4.png", NEEDS_HEIC)}
    assert main(["predict", str(out / "best.pt"), str(photos / "a")]) == 2
    assert capsys.readouterr().err == (
        f"resnetlab: error: {photos / 'a' / '2.heic'} is a HEIC image, and {NEEDS_HEIC}; install it, or convert "
        "the image to JPEG.\n"
    )
    with pytest.raises(HTTPException) as refusal:
        decode_image((photos / "a" / "2.heic").read_bytes(), load_checkpoint(out / "best.pt").card)
    assert refusal.value.status_code == 415 and NEEDS_HEIC in refusal.value.detail
