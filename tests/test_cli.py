import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from fakedata import pattern_images, write_image_folder
from PIL import Image

from resnetlab.checkpoint import load_checkpoint
from resnetlab.cli import main
from resnetlab.models import count_parameters, create_model


def test_train_writes_the_run_files(trained_run):
    assert {"best.pt", "last.pt", "metrics.csv", "summary.json"} <= {p.name for p in trained_run.iterdir()}
    with open(trained_run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"epoch", "train_loss", "test_loss", "test_accuracy", "seconds"} <= set(rows[0])
    summary = json.loads((trained_run / "summary.json").read_text())
    for key in ("best_test_accuracy", "best_epoch", "epochs", "train_seconds", "model", "dataset", "num_params"):
        assert key in summary
    accuracies = [float(r["test_accuracy"]) for r in rows]
    assert summary["best_test_accuracy"] == pytest.approx(max(accuracies), abs=1e-6)
    assert summary["best_epoch"] == accuracies.index(max(accuracies)) + 1
    assert 0 <= summary["best_test_accuracy"] <= 1
    assert summary["num_params"] == count_parameters(create_model("resnet20", num_classes=10, in_channels=1))


def test_best_pt_holds_the_best_epoch_not_the_last(trained_run):
    best = load_checkpoint(trained_run / "best.pt")
    last = load_checkpoint(trained_run / "last.pt")
    summary = json.loads((trained_run / "summary.json").read_text())
    assert best.epoch == summary["best_epoch"]
    assert last.epoch == 2
    assert best.metrics["test_accuracy"] == pytest.approx(summary["best_test_accuracy"], abs=1e-6)


def test_checkpoint_describes_itself(trained_run):
    card = load_checkpoint(trained_run / "best.pt").card
    assert card.architecture == "resnet20"
    assert card.in_channels == 1 and card.num_classes == 10
    assert card.classes[0] == "T-shirt/top"
    assert card.image_size == 28 and card.dataset == "fashion-mnist"
    assert len(card.mean) == len(card.std) == 1


def test_eval_json_reproduces_the_training_accuracy(trained_run, capsys):
    assert main(["eval", str(trained_run / "best.pt"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    summary = json.loads((trained_run / "summary.json").read_text())
    assert result["test_accuracy"] == pytest.approx(summary["best_test_accuracy"], abs=1e-6)
    assert result["images_per_second"] > 0 and result["test_loss"] > 0
    assert len(result["confusion_matrix"]) == 10 and sum(map(sum, result["confusion_matrix"])) == 100


def test_eval_prints_per_class_table(trained_run, capsys):
    assert main(["eval", str(trained_run)]) == 0
    out = capsys.readouterr().out
    assert "Ankle boot" in out and "confusion matrix" in out and "accuracy" in out


def test_predict_first_n_test_images_in_the_tutorials_form(trained_run, capsys, tmp_path):
    picture = tmp_path / "grid.png"
    assert main(["predict", str(trained_run / "best.pt"), "-n", "7", "--save", str(picture)]) == 0
    lines = capsys.readouterr().out.splitlines()
    predictions = [line for line in lines if line.startswith("predicted: ")]
    assert len(predictions) == 7
    assert all(', actual: "' in line for line in predictions)
    right = sum(line.split('"')[1] == line.split('"')[3] for line in predictions)
    assert f"{right} of 7 right" in "\n".join(lines)
    with Image.open(picture) as image:
        assert image.size[0] > 300


def test_predict_image_files_and_folders(trained_run, capsys, tmp_path):
    images = pattern_images(torch.tensor([0, 3]).numpy(), 56, 3)  # RGB and twice the size: converted
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    assert main(["predict", str(trained_run / "best.pt"), str(tmp_path), "--top", "2"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.endswith("%") and ".png:" in line]
    assert len(lines) == 2 and all(line.count("%") == 2 for line in lines)


def test_existing_run_is_not_overwritten(trained_run, tmp_path, capsys):
    before = (trained_run / "best.pt").read_bytes()
    code = main(["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--out", str(trained_run)])
    assert code == 2
    assert "already holds" in capsys.readouterr().err
    assert (trained_run / "best.pt").read_bytes() == before


def test_train_on_an_image_folder(tmp_path, capsys):
    write_image_folder(tmp_path / "pics", classes=("circle", "square"), per_class=8, modes=("L",))
    out = tmp_path / "run"
    args = [
        "train",
        "--dataset",
        "folder",
        "--data-dir",
        str(tmp_path / "pics"),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--image-size",
        "16",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    card = load_checkpoint(out / "best.pt").card
    assert card.classes == ("circle", "square") and card.in_channels == 1 and card.image_size == 16
    assert main(["predict", str(out), "-n", "3", "--save", str(tmp_path / "p.png")]) == 0
    assert capsys.readouterr().out.count("predicted: ") == 3


def test_subset_and_shortcut_flags(tiny_fashion, tmp_path):
    out = tmp_path / "run"
    args = [
        "train",
        "--data-dir",
        str(tiny_fashion),
        "--epochs",
        "1",
        "--subset",
        "64",
        "--batch-size",
        "32",
        "--shortcut",
        "B",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt.card.shortcut == "B"
    assert "layer2.0.downsample.0.weight" in ckpt.state_dict


def test_eval_every_evaluates_every_nth_epoch_and_the_last(tiny_fashion, tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "train",
        "--data-dir",
        str(tiny_fashion),
        "--epochs",
        "3",
        "--eval-every",
        "2",
        "--subset",
        "64",
        "--batch-size",
        "32",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "epoch 1/3: " in printed and "no test evaluation (every 2 epochs)" in printed
    assert printed.count("test average loss") == 2
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["test_accuracy"] == "" and all(r["test_accuracy"] for r in rows[1:])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_epoch"] in (2, 3) and load_checkpoint(out / "best.pt").epoch == summary["best_epoch"]
    assert summary["final_test_accuracy"] == pytest.approx(float(rows[-1]["test_accuracy"]))
    assert (out / "curves.png").is_file()


@pytest.mark.parametrize("tta,flip,translate", [("translate", True, True), ("none", False, False)])
def test_tta_overrides_the_recipes_test_time_augmentation_in_the_card(tiny_fashion, tmp_path, tta, flip, translate):
    out = tmp_path / "run"
    args = [
        "train",
        "--data-dir",
        str(tiny_fashion),
        "--recipe",
        "photo",
        "--tta",
        tta,
        "--epochs",
        "1",
        "--subset",
        "64",
        "--batch-size",
        "32",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    card = load_checkpoint(out / "best.pt").card
    assert (card.test_time_flip, card.test_time_translate) == (flip, translate)


def _run_cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "resnetlab", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


@pytest.mark.parametrize(
    "args,expected",
    [
        (["train", "--dataset", "imagenet"], "choose one of: mnist"),
        (["train", "--model", "resnet7"], "resnet20"),
        (["train", "--epochs", "0"], "at least 1"),
        (["train", "--eval-every", "0"], "at least 1"),
        (["train", "--tta", "mirror"], "invalid choice"),
        (["train", "--lr", "-1"], "above 0"),
        (["train", "--batch-size", "x"], "whole number"),
        (["train", "--recipe", "slow"], "fast"),
        (["predict", "missing.pt"], "no checkpoint at missing.pt"),
        (["eval", "missing.pt"], "no checkpoint"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_user_mistakes_get_one_sentence_and_exit_status_2(args, expected, tmp_path):
    result = (
        _run_cli(*args, "--data-dir", str(tmp_path / "d"), cwd=tmp_path)
        if args[0] == "train"
        else _run_cli(*args, cwd=tmp_path)
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_predict_on_a_non_image_is_a_user_error(trained_run, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("this is text")
    result = _run_cli("predict", str(trained_run / "best.pt"), str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "notes.png is not a readable image" in result.stderr


def test_python_dash_m_and_models_and_datasets_commands(tmp_path):
    result = _run_cli("models")
    assert result.returncode == 0 and "resnet110" in result.stdout and "0.27M" in result.stdout
    result = _run_cli("datasets", "--data-dir", str(tmp_path))
    assert result.returncode == 0 and "fashion-mnist" in result.stdout and "stl10" in result.stdout


def _all_subcommands(parser, prefix=()):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _all_subcommands(sub, (*prefix, name))


def test_help_works_for_the_program_and_every_subcommand(capsys):
    from resnetlab.cli import build_parser

    commands = [(), *_all_subcommands(build_parser())]
    assert ("train",) in commands and ("experiment", "degradation") in commands
    for command in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--help"])
        assert exit_info.value.code == 0, command
        assert "usage: resnetlab" in capsys.readouterr().out, command


@pytest.mark.parametrize(
    "argv, config_class, not_fields, not_flags",
    [
        (["train"], "TrainConfig", {"command", "resume", "seeds"}, {"test_subset"}),
        (["experiment", "degradation"], "DegradationConfig", {"command", "experiment", "full"}, set()),
        (["experiment", "gradients"], "GradientsConfig", {"command", "experiment"}, set()),
        (["experiment", "responses", "run"], "ResponsesConfig", {"command", "experiment"}, set()),
    ],
)
def test_each_config_field_is_set_by_the_flag_of_its_name(argv, config_class, not_fields, not_flags):
    """The configs are built from the flags by field name (cli._flag_values), so a flag that named no field, or a
    field that a flag of another name set, would be lost: only these flags and fields stand apart."""
    from dataclasses import fields

    from resnetlab import config
    from resnetlab.cli import build_parser

    flags = set(vars(build_parser().parse_args(argv)))
    names = {f.name for f in fields(getattr(config, config_class))}
    assert (flags - names, names - flags) == (not_fields, not_flags)


def test_train_flags_reach_the_config(monkeypatch, tmp_path):
    from resnetlab import engine
    from resnetlab.config import TrainConfig

    given = []
    monkeypatch.setattr(engine, "train", given.append)
    argv = ["train", "--dataset", "folder", "--data-dir", str(tmp_path), "--no-cache", "--image-size", "40"]
    argv += ["--no-augment", "--subset", "50", "--val-split", "0.3", "--model", "resnet18", "--shortcut", "B"]
    argv += ["--pretrained", "--epochs", "3", "--batch-size", "16", "--lr", "0.05", "--recipe", "fast-flip"]
    argv += ["--eval-every", "2", "--tta", "none", "--out", "run", "--overwrite", "--seed", "7", "--device", "cpu"]
    argv += ["--precision", "fp32", "--quiet", "--tensorboard"]
    assert main(argv) == 0
    assert given == [
        TrainConfig(
            dataset="folder",
            data_dir=str(tmp_path),
            cache_dir="",
            image_size=40,
            augment=False,
            subset=50,
            val_split=0.3,
            model="resnet18",
            shortcut="B",
            pretrained=True,
            epochs=3,
            batch_size=16,
            lr=0.05,
            recipe="fast-flip",
            eval_every=2,
            tta="none",
            out="run",
            overwrite=True,
            seed=7,
            device="cpu",
            precision="fp32",
            quiet=True,
            tensorboard=True,
        )
    ]
    assert main(["train", "--init", "ckpt"]) == 0 and given[1] == TrainConfig(init="ckpt")
