"""Starting from trained weights: train --pretrained (torchvision's ImageNet weights, from a planted hub cache; never
downloaded) and train --init (a resnetlab checkpoint of the same architecture)."""

import os
import signal
import urllib.error
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
import torchvision
from fakedata import write_image_folder, write_mnist_like
from PIL import Image

from resnetlab import config as config_module
from resnetlab import engine
from resnetlab.checkpoint import load_checkpoint
from resnetlab.cli import main
from resnetlab.config import TrainConfig
from resnetlab.data import load_train_test
from resnetlab.errors import ConfigError, Interrupted
from resnetlab.models import pretrained_models
from resnetlab.transfer import IMAGENET_MEAN, IMAGENET_STD, IMAGENET_WEIGHTS, imagenet_weights_file

FP32 = ["--device", "cpu", "--precision", "fp32", "--quiet"]
RESNET18_URL = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url


class _Stopped(Exception):
    """Raised in place of the epoch loop, to look at the network as initialization left it."""


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME, offline: torch.hub imported its own urlopen, which conftest's refusal does not reach."""
    home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # in case anything called torch.hub.set_dir

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "urlopen", refuse)
    return home


def _plant_resnet18(torch_home: Path, state: dict | None = None) -> dict[str, torch.Tensor]:
    """A resnet18 state dict saved where torchvision's weights API looks for it: the file name of its URL."""
    torch.manual_seed(1)
    state = torchvision.models.resnet18(weights=None).state_dict() if state is None else state
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / Path(urlparse(RESNET18_URL).path).name)
    return state


@pytest.fixture
def started(monkeypatch):
    """Stop train() where the epoch loop would begin; returns a dict that then holds the job."""
    seen = {}

    def capture(job, progress, recorder, should_stop):
        seen["job"] = job
        raise _Stopped

    monkeypatch.setattr(engine, "fit", capture)
    return seen


def _fashion(tmp_path: Path, n_train: int = 40, n_test: int = 20) -> Path:
    root = tmp_path / "data"
    write_mnist_like(root, "FashionMNIST", n_train=n_train, n_test=n_test)
    return root


def test_the_weights_file_is_where_torchvisions_api_expects_it(torch_home):
    assert set(IMAGENET_WEIGHTS) == set(pretrained_models())
    assert IMAGENET_WEIGHTS["resnet18"].url == RESNET18_URL
    expected = torch_home / "hub" / "checkpoints" / RESNET18_URL.rsplit("/", 1)[1]
    assert imagenet_weights_file("resnet18") == expected


def test_pretrained_starts_from_every_imagenet_tensor_but_the_head(tmp_path, torch_home, started):
    planted = _plant_resnet18(torch_home)
    data = _fashion(tmp_path)
    with pytest.raises(_Stopped):
        main(
            [
                "train",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                str(data),
                "--pretrained",
                "--out",
                str(tmp_path / "out"),
                *FP32,
            ]
        )
    job = started["job"]
    loaded = {k: v.cpu() for k, v in job.net.state_dict().items()}
    backbone = [k for k in planted if not k.startswith("fc.")]
    assert len(backbone) == len(loaded) - 2
    for name in backbone:
        assert torch.equal(loaded[name], planted[name]), name
    assert loaded["fc.weight"].shape == (10, 512)  # a new head for Fashion-MNIST's 10 classes
    card = job.card
    assert (card.architecture, card.stem, card.shortcut, card.in_channels) == ("resnet18", "imagenet", "B", 3)
    assert card.mean == IMAGENET_MEAN and card.std == IMAGENET_STD
    assert card.image_size == 64  # 28 px raised to the --pretrained default
    assert job.train_batches.data.channels == 3 and job.test_batches.data.channels == 3
    # the fine-tuning recipe (measured: benchmarks/README.md): every parameter peaks at the recipe's learning rate
    assert {group["max_lr"] for group in job.optimizer.param_groups} == {job.optimizer.defaults["lr"]}
    assert len(job.optimizer.param_groups) == 2  # decayed and not, as a run from random weights


def test_pretrained_trains_a_grayscale_dataset_that_eval_and_predict_then_read(tmp_path, torch_home, capsys):
    _plant_resnet18(torch_home)
    data, out = _fashion(tmp_path), tmp_path / "out"
    assert (
        main(
            [
                "train",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                str(data),
                "--pretrained",
                "--image-size",
                "32",
                "--subset",
                "32",
                "--batch-size",
                "16",
                "--epochs",
                "1",
                "--out",
                str(out),
                *FP32,
            ]
        )
        == 0
    )
    checkpoint = load_checkpoint(out / "best.pt")
    card = checkpoint.card
    assert (card.in_channels, card.image_size, card.stem, card.mean, card.std) == (
        3,
        32,
        "imagenet",
        IMAGENET_MEAN,
        IMAGENET_STD,
    )
    assert checkpoint.config["pretrained"] is True
    assert main(["eval", str(out), "--json", *FP32[:4]]) == 0  # the grayscale test split, as RGB
    image = tmp_path / "shirt.png"
    Image.new("L", (28, 28), 90).save(image)
    assert main(["predict", str(out), str(image), "--json", *FP32[:4]]) == 0
    assert '"file"' in capsys.readouterr().out


@pytest.mark.parametrize("backbone_scale", [1.0, 0.1])
def test_pretrained_run_resumes_exactly(tmp_path, torch_home, monkeypatch, backbone_scale):
    """The parameter groups come back from last.pt as they were, also the four groups, each with its own
    one-cycle peak, of a run started when the backbone trained at 0.1x the head's rate."""
    monkeypatch.setattr(engine, "FINE_TUNE_BACKBONE_LR", backbone_scale)  # for the straight and the first epoch
    _plant_resnet18(torch_home)
    data = _fashion(tmp_path, n_train=16, n_test=8)

    def config(out: str) -> TrainConfig:
        return TrainConfig(
            dataset="fashion-mnist",
            data_dir=str(data),
            epochs=2,
            batch_size=8,
            subset=8,
            image_size=16,
            pretrained=True,
            out=str(tmp_path / out),
            quiet=True,
            device="cpu",
            precision="fp32",
        )

    engine.train(config("straight"))

    def interrupt_after_first_epoch(row, model):
        if row["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted):
        engine.train(config("resumed"), on_epoch=interrupt_after_first_epoch)
    resumed_config, state = engine.resume_config(tmp_path / "resumed")
    monkeypatch.setattr(engine, "FINE_TUNE_BACKBONE_LR", config_module.FINE_TUNE_BACKBONE_LR)  # today's code resumes
    engine.train(resumed_config, resume_state=state)
    groups = load_checkpoint(tmp_path / "resumed" / "last.pt").train_state["optimizer"]["param_groups"]
    assert len(groups) == (2 if backbone_scale == 1.0 else 4)
    straight = load_checkpoint(tmp_path / "straight" / "last.pt").state_dict
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt").state_dict
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=0, msg=name)


def test_pretrained_offline_without_the_file_names_file_folder_and_url(tmp_path, torch_home, capsys):
    missing = tmp_path / "no-data-needed"  # the weights are looked for before any data is read
    assert main(["train", "--dataset", "fashion-mnist", "--data-dir", str(missing), "--pretrained", *FP32]) == 2
    err = capsys.readouterr().err
    folder = torch_home / "hub" / "checkpoints"
    file = folder / RESNET18_URL.rsplit("/", 1)[1]
    assert f"not in {folder} " in err and f"download {RESNET18_URL} into {file}, or run once online." in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not file.exists() and not missing.exists()


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("garbage", "could not be read as the ImageNet weights of resnet18"),
        ("a tensor missing", "does not fit resnet18 (first difference: layer1.0.conv1.weight); delete it"),
    ],
)
def test_a_damaged_weights_file_is_refused(tmp_path, torch_home, capsys, damage, expected):
    if damage == "garbage":
        _plant_resnet18(torch_home)
        imagenet_weights_file("resnet18").write_bytes(b"not a checkpoint")
    else:
        state = torchvision.models.resnet18(weights=None).state_dict()
        del state["layer1.0.conv1.weight"]
        _plant_resnet18(torch_home, state)
    assert (
        main(
            [
                "train",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                str(_fashion(tmp_path)),
                "--pretrained",
                "--out",
                str(tmp_path / "out"),
                *FP32,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["--model", "resnet20"],
            (
                "--pretrained needs a model with ImageNet weights (resnet18, resnet34, resnet50, "
                "resnet101, resnet152), not resnet20."
            ),
        ),
        (["--model", "resnet8w"], "not resnet8w."),
        (["--model", "plain18"], "not plain18."),
        (["--shortcut", "A"], "--shortcut must be B (or left out) with --pretrained"),
        (["--init", "best.pt"], "argument --init: not allowed with argument --pretrained"),
    ],
)
def test_pretrained_without_imagenet_weights_is_refused(tmp_path, torch_home, capsys, args, expected):
    assert main(["train", "--data-dir", str(tmp_path), "--pretrained", *args, *FP32]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1
    assert not (torch_home / "hub").exists()  # refused before anything was looked up


def test_pretrained_and_init_together_are_refused_in_the_config():
    with pytest.raises(ConfigError, match="cannot be combined with --pretrained"):
        TrainConfig(pretrained=True, init="runs/x").validate()


def test_init_starts_from_every_tensor_but_the_head_for_new_classes(trained_run, tmp_path, started):
    folder = write_image_folder(tmp_path / "bugs", classes=("ant", "bee"), per_class=4, modes=("L",))
    with pytest.raises(_Stopped):
        main(
            [
                "train",
                "--dataset",
                "folder",
                "--data-dir",
                str(folder),
                "--init",
                str(trained_run),
                "--out",
                str(tmp_path / "out"),
                *FP32,
            ]
        )
    job, source = started["job"], load_checkpoint(trained_run / "best.pt")
    loaded = {k: v.cpu() for k, v in job.net.state_dict().items()}
    assert loaded.keys() == source.state_dict.keys()
    for name, tensor in source.state_dict.items():
        if not name.startswith("fc."):
            assert torch.equal(loaded[name], tensor), name
    assert loaded["fc.weight"].shape == (2, 64)  # a new head for the new classes
    card = job.card
    assert (card.architecture, card.shortcut, card.stem) == (source.card.architecture, "A", "small")
    assert card.image_size == source.card.image_size == 28  # the checkpoint's, without --image-size
    own, _ = load_train_test("folder", folder, 28)
    assert card.classes == ("ant", "bee") and (card.mean, card.std) == (own.mean, own.std)


def test_init_keeps_the_head_for_the_same_classes(trained_run, tiny_fashion, tmp_path, started):
    with pytest.raises(_Stopped):
        main(
            [
                "train",
                "--data-dir",
                str(tiny_fashion),
                "--init",
                str(trained_run / "best.pt"),
                "--out",
                str(tmp_path / "out"),
                *FP32,
            ]
        )
    loaded = started["job"].net.state_dict()
    for name, tensor in load_checkpoint(trained_run / "best.pt").state_dict.items():
        assert torch.equal(loaded[name].cpu(), tensor), name


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["--model", "resnet8w"],
            (
                "is a resnet20, not a resnet8w; start from a checkpoint of the same architecture, "
                "or leave out --model to train a resnet20."
            ),
        ),
        (["--shortcut", "B"], "has shortcut A, not B; leave out --shortcut"),
    ],
)
def test_init_from_another_architecture_is_refused(trained_run, tiny_fashion, capsys, args, expected):
    assert main(["train", "--data-dir", str(tiny_fashion), "--init", str(trained_run), *args, *FP32]) == 2
    err = capsys.readouterr().err
    assert f"--init {trained_run / 'best.pt'} " in err and expected in err and len(err.strip().splitlines()) == 1


def test_init_from_nowhere_and_color_into_grayscale_are_refused(trained_run, tmp_path, capsys):
    assert main(["train", "--data-dir", str(tmp_path), "--init", str(tmp_path / "nowhere.pt"), *FP32]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    folder = write_image_folder(tmp_path / "color", classes=("a", "b"), per_class=2)
    assert (
        main(
            [
                "train",
                "--dataset",
                "folder",
                "--data-dir",
                str(folder),
                "--init",
                str(trained_run),
                "--out",
                str(tmp_path / "out"),
                *FP32,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "takes grayscale images, but" in err and "holds color ones" in err and len(err.strip().splitlines()) == 1
