"""A folder of a few hundred photographs: the few-photos default (recipe, image size, time budget) chosen from the
folder's contents, and the augmentation it trains with (random resized crops, colour jitter)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from resnetlab import config as config_module
from resnetlab.batches import TensorBatches, random_color_jitter, random_resized_crop
from resnetlab.checkpoint import load_checkpoint
from resnetlab.cli import main
from resnetlab.config import (
    FEW_PHOTOS_LIMIT,
    FEW_PHOTOS_MINUTES,
    FEW_PHOTOS_MODEL,
    FEW_PHOTOS_RECIPE,
    FEW_PHOTOS_SIZE,
    TrainConfig,
)
from resnetlab.folder import Holdout, survey


def test_a_small_folder_gets_the_recipe_the_size_and_a_budget_and_the_note_says_how_to_change_them():
    chosen, note = TrainConfig(dataset="folder").for_few_photos(600, 300)
    assert chosen.recipe == FEW_PHOTOS_RECIPE and chosen.recipe_settings.model == FEW_PHOTOS_MODEL
    assert chosen.time_budget == FEW_PHOTOS_MINUTES and chosen.epochs is None and chosen.image_size == FEW_PHOTOS_SIZE
    assert chosen.recipe_settings.crop_scale is not None and chosen.recipe_settings.jitter > 0
    assert note.startswith(
        f"few photos (600 training images, about 300 px on their shorter side): training {FEW_PHOTOS_MODEL} from "
        f"scratch with recipe {FEW_PHOTOS_RECIPE} (mirroring, random resized crops"
    )
    assert f" at {FEW_PHOTOS_SIZE} px for about {FEW_PHOTOS_MINUTES:g} minutes;" in note
    for says in ("random resized crops", f"about {FEW_PHOTOS_MINUTES:g} minutes", "--time-budget 10", "--pretrained"):
        assert says in note


def test_what_the_user_chose_is_kept_and_only_the_rest_is_filled_in():
    given = TrainConfig(dataset="folder", recipe="photo", image_size=48, epochs=5)
    assert given.for_few_photos(600, 300) == (given, None)
    chosen, note = TrainConfig(dataset="folder", epochs=5).for_few_photos(600, 300)
    assert chosen.epochs == 5 and chosen.time_budget is None and "minutes" not in note  # --epochs: no budget
    chosen, note = TrainConfig(dataset="folder", time_budget=1.5).for_few_photos(600, 300)
    assert chosen.time_budget == 1.5 and chosen.recipe == FEW_PHOTOS_RECIPE
    chosen, note = TrainConfig(dataset="folder", recipe="photo", image_size=64).for_few_photos(600, 70)
    assert chosen.recipe == "photo" and chosen.image_size == 64 and ": training for about 3 minutes;" in note
    assert "from scratch" not in note  # photo's model is the dataset's default
    assert "from scratch" not in TrainConfig(dataset="folder", model="resnet9").for_few_photos(600, 70)[1]


@pytest.mark.parametrize(
    "config",
    [TrainConfig(dataset="folder", pretrained=True), TrainConfig(dataset="folder", init="runs/x/best.pt")],
)
def test_a_large_folder_or_trained_weights_keep_the_old_default(config):
    assert TrainConfig(dataset="folder").for_few_photos(FEW_PHOTOS_LIMIT, 300) == (TrainConfig(dataset="folder"), None)
    assert config.for_few_photos(600, 300) == (config, None)


def test_the_survey_counts_the_training_images_and_reads_their_median_shorter_side(tmp_path):
    for split, sizes in (("train", [(120, 80), (90, 200), (300, 70), (64, 64), (100, 100)]), ("test", [(10, 10)])):
        folder = tmp_path / split / "a"
        folder.mkdir(parents=True)
        for i, size in enumerate(sizes):
            Image.new("RGB", size, (i * 40, 0, 0)).save(folder / f"{i}.png")
    (tmp_path / "train" / "a" / "broken.jpg").write_bytes(b"not a picture")  # left to the loader to report
    found = survey(tmp_path, Holdout())
    assert found.images == 6 and found.short_side == 80  # median of 80, 90, 70, 64, 100
    # a folder of class folders: only the part that trains is surveyed
    photos = tmp_path / "photos" / "b"
    photos.mkdir(parents=True)
    for i in range(10):
        Image.new("RGB", (50 + i, 40 + i), "white").save(photos / f"{i}.png")
    assert survey(tmp_path / "photos", Holdout(0.2, 0)).images == 8


def _halves(n=16, size=32):
    """Images black on the left half and white on the right."""
    images = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    images[..., size // 2 :] = 255
    return images


def test_random_resized_crops_zoom_into_each_image_its_own_way_and_are_repeatable():
    images = _halves()
    crops = random_resized_crop(images, 0.35, torch.Generator().manual_seed(1))
    assert crops.shape == images.shape and crops.dtype == torch.uint8
    white = crops.float().mean(dim=(1, 2, 3)) / 255
    assert white.std() > 0.05  # each image its own crop: the share of white differs
    assert torch.equal(crops, random_resized_crop(images, 0.35, torch.Generator().manual_seed(1)))
    assert not torch.equal(crops, random_resized_crop(images, 0.35, torch.Generator().manual_seed(2)))
    uniform = torch.full((4, 1, 20, 20), 77, dtype=torch.uint8)
    assert torch.equal(random_resized_crop(uniform, 0.35, torch.Generator().manual_seed(0)), uniform)


def test_colour_jitter_is_torchvisions_per_image():
    images = torch.randint(0, 256, (6, 3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    jittered = random_color_jitter(images, 0.4, torch.Generator().manual_seed(5))
    factors = 1 + 0.4 * (2 * torch.rand(3, 6, 1, 1, 1, generator=torch.Generator().manual_seed(5)) - 1)
    for i, image in enumerate(images):
        brightness, contrast, saturation = factors[:, i].flatten().tolist()
        expected = TF.adjust_brightness(image.float() / 255, brightness)
        expected = TF.adjust_saturation(TF.adjust_contrast(expected, contrast), saturation)
        assert (expected * 255 - jittered[i].float()).abs().max() <= 1  # rounded once here, not after each step
    assert not torch.equal(jittered, images)
    gray = images[:, :1]
    assert random_color_jitter(gray, 0.4, torch.Generator().manual_seed(5)).shape == gray.shape


def test_the_batches_crop_and_jitter_only_when_augmenting():
    from resnetlab.batches import ImageData

    data = ImageData(_halves(8), torch.zeros(8, dtype=torch.long), ["a"])
    plain = next(iter(TensorBatches(data, 8, crop_scale=0.35, jitter=0.3)))[0]
    assert torch.equal(plain, data.pixels)
    augmented = next(iter(TensorBatches(data, 8, augment=True, crop_scale=0.35, jitter=0.3)))[0]
    assert not torch.equal(augmented, data.pixels)


def _photos(tmp_path, side):
    root = tmp_path / f"photos{side}"
    for name, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (root / name).mkdir(parents=True)
        rng = np.random.default_rng(len(name))
        for i in range(6):
            pixels = np.clip(rng.normal(colour, 30, (side, side + 10, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.jpg")
    return root


def test_train_on_a_small_folder_says_what_it_chose_and_records_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(config_module, "FEW_PHOTOS_MINUTES", 0.02)  # about a second of training
    photos = _photos(tmp_path, 70)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "folder", "--data-dir", str(photos), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "note: few photos (10 training images, about 70 px on their shorter side): training" in printed
    assert "; --time-budget 0.02 minutes: 1 epochs planned" in printed
    card = load_checkpoint(out / "best.pt").card
    assert card.image_size == FEW_PHOTOS_SIZE and card.architecture == FEW_PHOTOS_MODEL
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recipe"] == FEW_PHOTOS_RECIPE and summary["time_budget_minutes"] == 0.02
    # the same folder, large enough not to be few photos: the default of folders as before
    monkeypatch.setattr(config_module, "FEW_PHOTOS_LIMIT", 10)
    assert main(["train", "--dataset", "folder", "--data-dir", str(photos), "--out", str(tmp_path / "big")]) == 0
    assert "few photos" not in capsys.readouterr().out
    summary = json.loads((tmp_path / "big" / "summary.json").read_text())
    assert summary["recipe"] == "photo" and summary["time_budget_minutes"] is None


def test_a_resumed_run_keeps_what_it_chose(tmp_path, capsys):
    photos = _photos(tmp_path, 40)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "folder", "--data-dir", str(photos), "--epochs", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "3"]) == 0
    assert "few photos" not in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["recipe"] == FEW_PHOTOS_RECIPE
