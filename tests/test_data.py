from pathlib import Path

import numpy as np
import pytest
import torch
from fakedata import (
    write_cifar10,
    write_idx_files,
    write_image_folder,
    write_mnist_like,
    write_stl10,
    write_svhn,
)
from PIL import Image

from resnetlab.batches import ImageData, TensorBatches, random_translate
from resnetlab.data import DATASETS, find_data, get_spec, load_split
from resnetlab.errors import UserError
from resnetlab.preprocess import PixelClassifier


@pytest.mark.parametrize("name,cls", [("mnist", "MNIST"), ("kmnist", "KMNIST"), ("fashion-mnist", "FashionMNIST")])
def test_idx_datasets_load_through_torchvision(tmp_path, name, cls):
    arrays = write_mnist_like(tmp_path, cls, n_train=40, n_test=20)
    train = load_split(name, tmp_path, train=True)
    test = load_split(name, tmp_path, train=False)
    assert train.images.shape == (40, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (20, 1, 28, 28)
    assert np.array_equal(train.images[:, 0].numpy(), arrays["train_images"])
    assert np.array_equal(test.labels.numpy(), arrays["t10k_labels"])
    assert train.classes == list(get_spec(name).classes)


def test_fashion_mnist_has_its_real_class_names():
    assert get_spec("fashion-mnist").classes[0] == "T-shirt/top"
    assert get_spec("fashion-mnist").classes[9] == "Ankle boot"
    assert get_spec("cifar10").classes[0] == "airplane"
    assert get_spec("kmnist").classes[:3] == ("o", "ki", "su")


def test_cifar10_pickles(tmp_path, skip_md5):
    arrays = write_cifar10(tmp_path, n_train=50, n_test=20)
    train = load_split("cifar10", tmp_path, train=True)
    test = load_split("cifar10", tmp_path, train=False)
    assert train.images.shape == (50, 3, 32, 32) and test.images.shape == (20, 3, 32, 32)
    assert train.labels.tolist() == arrays["train_labels"]
    assert np.array_equal(train.images[0].permute(1, 2, 0).numpy(), arrays["first_train_image"])
    assert np.array_equal(test.images[0].permute(1, 2, 0).numpy(), arrays["first_test_image"])


def test_svhn_mat_files(tmp_path, skip_md5):
    arrays = write_svhn(tmp_path, n_train=30, n_test=20)
    train = load_split("svhn", tmp_path, train=True)
    test = load_split("svhn", tmp_path, train=False)
    assert train.images.shape == (30, 3, 32, 32) and test.images.shape == (20, 3, 32, 32)
    assert np.array_equal(train.labels.numpy(), arrays["train_labels"])  # 10 in the file means the digit 0
    assert np.array_equal(test.images[0].permute(1, 2, 0).numpy(), arrays["first_test_image"])


def test_stl10_binaries(tmp_path, skip_md5):
    arrays = write_stl10(tmp_path, n_train=12, n_test=8)
    train = load_split("stl10", tmp_path, train=True)
    test = load_split("stl10", tmp_path, train=False)
    assert train.images.shape == (12, 3, 96, 96) and test.images.shape == (8, 3, 96, 96)
    assert np.array_equal(train.labels.numpy(), arrays["train_labels"])
    assert np.array_equal(train.images[0].permute(1, 2, 0).numpy(), arrays["first_train_image"])
    small = load_split("stl10", tmp_path, train=False, image_size=48)
    assert small.images.shape == (8, 3, 48, 48)


# Each named dataset's files as tests write them, in its real on-disk format (fakedata.py): a dataset added to the
# registry needs its writer here, or the test that loads every one fails.
FAKE_FILES = {
    "mnist": lambda root: write_mnist_like(root, "MNIST", n_train=20, n_test=10),
    "kmnist": lambda root: write_mnist_like(root, "KMNIST", n_train=20, n_test=10),
    "fashion-mnist": lambda root: write_mnist_like(root, "FashionMNIST", n_train=20, n_test=10),
    "cifar10": lambda root: write_cifar10(root, n_train=20, n_test=10),
    "svhn": lambda root: write_svhn(root, n_train=20, n_test=10),
    "stl10": lambda root: write_stl10(root, n_train=20, n_test=10),
}


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_dataset_spec_is_consistent_and_listed(name, capsys):
    import inspect

    import torchvision.datasets

    from resnetlab.cli import main
    from resnetlab.models import list_models

    spec = DATASETS[name]
    assert spec.name == name and get_spec(name) is spec and spec.default_model in list_models()
    assert spec.image_size > 0 and 0 <= spec.crop_padding < spec.image_size
    assert spec.files and not any(Path(f).is_absolute() for f in spec.files)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert name in capsys.readouterr().out  # --dataset's help reads the registry
    if not spec.torchvision_class:  # a user's folder: classes, channels and mean/std come from its images
        assert spec.classes == spec.mean == spec.std == () and spec.shape == "any"
        return
    assert len(spec.classes) == len(set(spec.classes)) >= 2 and spec.url.startswith("http")
    assert (
        len(spec.mean) == len(spec.std) == spec.channels in (1, 3)
        and spec.shape == f"{spec.channels}x{spec.image_size}x{spec.image_size}"
    )
    assert all(0 < m < 1 for m in spec.mean) and all(0 < s < 1 for s in spec.std)
    assert spec.pixel_layout in ("NHW", "NCHW", "NHWC") and ("C" in spec.pixel_layout) == (spec.channels == 3)
    cls = getattr(torchvision.datasets, spec.torchvision_class)
    assert ("split" in inspect.signature(cls).parameters) == spec.split_argument
    assert spec.is_idx == issubclass(cls, torchvision.datasets.MNIST)
    assert not spec.is_idx or all(f.startswith(f"{spec.torchvision_class}/raw/") for f in spec.files)


@pytest.mark.parametrize("name", [name for name, spec in DATASETS.items() if spec.torchvision_class])
def test_every_named_dataset_loads_from_tiny_files_in_its_own_format(tmp_path, skip_md5, name):
    spec = get_spec(name)
    arrays = FAKE_FILES[name](tmp_path)
    assert find_data(name, tmp_path) == str(tmp_path)
    train, test = load_split(name, tmp_path, train=True), load_split(name, tmp_path, train=False)
    for data, n in ((train, 20), (test, 10)):
        assert data.images.shape == (n, spec.channels, spec.image_size, spec.image_size)
        assert data.images.dtype == torch.uint8 and data.classes == list(spec.classes)
    assert np.array_equal(train.labels.numpy(), np.asarray(arrays["train_labels"]))
    first = arrays["first_train_image"] if "first_train_image" in arrays else arrays["train_images"][0][..., None]
    assert np.array_equal(train.images[0].permute(1, 2, 0).numpy(), first)  # pixel_layout read the axes right


def test_data_already_present_is_not_downloaded_again(tmp_path, monkeypatch):
    write_mnist_like(tmp_path, "MNIST", n_train=20, n_test=10)
    import torchvision.datasets.mnist

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download data that is already there")

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", no_download)
    assert len(load_split("mnist", tmp_path, train=True)) == 20


def test_data_dir_is_created_if_missing(tmp_path, monkeypatch):
    system = tmp_path / "system"
    write_idx_files(system / "fashion-mnist", 20, 10, gz=True)
    monkeypatch.setenv("RESNETLAB_SYSTEM_DATA", str(system))
    data_dir = tmp_path / "new" / "data"
    assert len(load_split("fashion-mnist", data_dir, train=False)) == 10
    assert (data_dir / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()


def test_system_copy_like_debians_is_found_and_used(tmp_path, monkeypatch):
    system = tmp_path / "usr-share-datasets"
    arrays = write_idx_files(system / "fashion-mnist", 30, 10, gz=True)
    monkeypatch.setenv("RESNETLAB_SYSTEM_DATA", str(system))
    data_dir = tmp_path / "data"
    assert find_data("fashion-mnist", data_dir) == str(system / "fashion-mnist")
    train = load_split("fashion-mnist", data_dir, train=True)
    assert np.array_equal(train.images[:, 0].numpy(), arrays["train_images"])
    assert find_data("fashion-mnist", data_dir) == str(data_dir)


def test_missing_data_without_network_says_which_files_and_where(tmp_path):
    with pytest.raises(UserError) as err:
        load_split("kmnist", tmp_path / "data", train=True)
    message = str(err.value)
    assert "KMNIST/raw/train-images-idx3-ubyte" in message
    assert str((tmp_path / "data").resolve()) in message


def test_data_dir_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        load_split("mnist", path, train=True)


def test_unknown_dataset_lists_valid_ones():
    with pytest.raises(UserError, match="fashion-mnist"):
        get_spec("imagenet")


def test_image_folder_rgb_with_mixed_sizes_and_formats(tmp_path):
    write_image_folder(tmp_path, classes=("cat", "dog", "fish"), per_class=6, modes=("RGB", "L"))
    train = load_split("folder", tmp_path, train=True, image_size=24)
    test = load_split("folder", tmp_path, train=False, image_size=24)
    assert train.classes == ["cat", "dog", "fish"]
    assert train.images.shape == (18, 3, 24, 24)  # one RGB image makes the whole folder RGB
    assert test.images.shape == (9, 3, 24, 24)
    assert sorted(set(train.labels.tolist())) == [0, 1, 2]
    assert len(train.mean) == 3


def test_image_folder_all_grayscale_is_one_channel_and_val_is_accepted(tmp_path):
    write_image_folder(tmp_path, classes=("a", "b"), per_class=4, modes=("L",), splits=("train", "val"))
    test = load_split("folder", tmp_path, train=False)
    assert test.images.shape[1:] == (1, 32, 32)


def test_image_folder_mistakes_are_user_errors(tmp_path):
    write_image_folder(tmp_path, classes=("a", "b"), per_class=4)
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(UserError, match="empty"):
        load_split("folder", tmp_path, train=True)
    (tmp_path / "train" / "empty").rmdir()
    (tmp_path / "test" / "c").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "test" / "c" / "x.png")
    with pytest.raises(UserError, match="same class folders"):
        load_split("folder", tmp_path, train=False)
    (tmp_path / "train" / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match="broken.png"):
        load_split("folder", tmp_path, train=True)
    with pytest.raises(UserError, match="train"):
        load_split("folder", tmp_path / "nothing", train=True)


def test_random_translate_moves_each_image_within_padding():
    images = torch.zeros(64, 1, 8, 8, dtype=torch.uint8)
    images[:, :, 3, 3] = 255
    moved = random_translate(images, 2, torch.Generator().manual_seed(0))
    assert moved.shape == images.shape
    positions = {tuple((m[0] == 255).nonzero()[0].tolist()) for m in moved}
    assert len(positions) > 5
    assert all(1 <= r <= 5 and 1 <= c <= 5 for r, c in positions)


def test_reflect_translation_fills_the_border_from_the_image_not_with_zeros():
    images = (torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8) + 1).repeat(32, 1, 1, 1)
    zeros = random_translate(images, 2, torch.Generator().manual_seed(0))
    assert (zeros == 0).any()
    moved = random_translate(images, 2, torch.Generator().manual_seed(0), reflect=True)
    padded = torch.nn.functional.pad(images[:1].float(), (2,) * 4, mode="reflect").to(torch.uint8)[0]
    crops = [padded[:, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
    assert all(any(torch.equal(m, crop) for crop in crops) for m in moved)
    assert len({m.numpy().tobytes() for m in moved}) > 5


def test_alternating_flips_mirror_each_image_in_every_other_epoch():
    n = 40
    pixels = torch.randint(0, 256, (n, 1, 6, 6), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    data = ImageData(pixels, torch.arange(n), [str(i) for i in range(n)])
    batches = TensorBatches(data, 16, shuffle=True, augment=True, hflip=True, alternate_flips=True, seed=2)

    def mirrored(epoch: int) -> torch.Tensor:
        batches.set_epoch(epoch)
        flipped = torch.zeros(n, dtype=torch.bool)
        for images, labels in batches:
            for image, i in zip(images, labels):
                assert torch.equal(image, pixels[i]) or torch.equal(image, pixels[i].flip(2))
                flipped[i] = torch.equal(image, pixels[i].flip(2))
        return flipped

    first, second, third = mirrored(1), mirrored(2), mirrored(3)
    assert 0.25 < first.float().mean() < 0.75
    assert torch.equal(second, ~first) and torch.equal(third, first)


def test_batches_normalize_cover_everything_once_and_shuffle(tmp_path):
    write_mnist_like(tmp_path, "MNIST", n_train=50, n_test=10)
    data = load_split("mnist", tmp_path, train=True)
    batches = TensorBatches(data, 16, shuffle=True, seed=1)
    labels = torch.cat([y for _, y in batches])
    assert sorted(labels.tolist()) == sorted(data.labels.tolist())
    assert not torch.equal(labels, data.labels)
    images, _ = next(iter(TensorBatches(data, 50)))
    assert torch.equal(images, data.images)  # pixels as loaded; the model's first step normalizes them
    expected = (data.images.float() / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(PixelClassifier(torch.nn.Identity(), data.mean, data.std).prepare(images), expected)


def test_cifar10_trains_resnet9_with_the_photo_recipe_by_default_and_recipe_wins(tmp_path, skip_md5):
    from resnetlab.checkpoint import load_checkpoint
    from resnetlab.config import TrainConfig
    from resnetlab.engine import train

    write_cifar10(tmp_path / "data", n_train=64, n_test=16)
    runs = {}
    for name, recipe in [("default", None), ("fast", "fast")]:
        config = TrainConfig(
            dataset="cifar10",
            data_dir=str(tmp_path / "data"),
            epochs=1,
            recipe=recipe,
            out=str(tmp_path / name),
            quiet=True,
            precision="fp32",
        )
        runs[name] = (train(config), load_checkpoint(tmp_path / name / "best.pt"))
    summary, checkpoint = runs["default"]
    assert (summary["model"], summary["recipe"], summary["batch_size"]) == ("resnet9", "photo", 128)
    assert checkpoint.card.architecture == "resnet9" and checkpoint.card.test_time_flip  # photo mirrors at test time
    summary, checkpoint = runs["fast"]
    assert (summary["model"], summary["recipe"]) == ("resnet9", "fast") and not checkpoint.card.test_time_flip
