"""Pictures (curves, confusion matrix, prediction grid), `resnetlab plot`, predict --json/--quiet, TensorBoard."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from fakedata import pattern_images
from PIL import Image

from resnetlab.cli import main
from resnetlab.plots import (
    confusion_matrix_plot,
    degradation_curves,
    degradation_figure,
    prediction_grid,
    read_metrics,
    training_curves,
)


def _size(path):
    with Image.open(path) as image:
        return image.size


def _copy_run(run, folder):
    """A copy of a run's files, so pictures drawn beside its checkpoint land in the test's own folder."""
    folder.mkdir()
    for name in ("best.pt", "metrics.csv", "summary.json"):
        shutil.copy(run / name, folder / name)
    return folder


def test_train_draws_the_curves_after_every_epoch(trained_run):
    width, height = _size(trained_run / "curves.png")
    assert width >= 800 and 300 <= height < width
    assert len(read_metrics(trained_run / "metrics.csv")) == 2


def test_training_curves_from_one_epoch_and_from_csv_strings(tmp_path):
    rows = [
        {
            "epoch": "1",
            "train_loss": "0.9",
            "train_accuracy": "0.7",
            "test_loss": "0.8",
            "test_accuracy": "0.75",
            "lr": "0.1",
            "seconds": "3",
        }
    ]
    path = training_curves(rows, tmp_path / "one.png", "resnet20 on fashion-mnist")
    assert _size(path)[0] >= 800


@pytest.mark.parametrize("num_classes", [10, 100])
def test_confusion_matrix_is_legible_at_10_and_100_classes(tmp_path, num_classes):
    rng = np.random.default_rng(0)
    matrix = np.diag(rng.integers(50, 100, num_classes)) + rng.integers(0, 5, (num_classes, num_classes))
    classes = [f"class_{i}" for i in range(num_classes)]
    width, height = _size(confusion_matrix_plot(matrix, classes, tmp_path / "cm.png", "a title"))
    # Room for every class name: at least ~15 pixels per class on both axes at 100 classes.
    assert min(width, height) >= (700 if num_classes == 10 else 1500)
    with pytest.raises(ValueError):
        confusion_matrix_plot(matrix[:2], classes, tmp_path / "bad.png")


def _red_pixels(path):
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB")).astype(int)
    return int(((rgb[..., 0] > 170) & (rgb[..., 1] < 40) & (rgb[..., 2] < 40)).sum())


def test_prediction_grid_marks_wrong_predictions_in_red(tmp_path):
    images = torch.from_numpy(pattern_images(np.arange(6) % 3, 28, 1)).permute(0, 3, 1, 2)
    right = prediction_grid(images, ["a"] * 6, [0.9] * 6, ["a"] * 6, tmp_path / "right.png")
    wrong = prediction_grid(images, ["a"] * 6, [0.9] * 6, ["a", "b"] * 3, tmp_path / "wrong.png")
    files = prediction_grid(images, ["a"] * 6, [0.9] * 6, None, tmp_path / "files.png", captions=["x.png"] * 6)
    assert _red_pixels(right) == 0
    assert _red_pixels(wrong) > 500  # three red frames
    assert _size(files)[0] >= 500


def test_the_degradation_figure_hides_no_point_above_its_scale(tmp_path):
    # plain56's first epoch far above the rest, as in docs/images/degradation.csv (82% against at most 45%).
    errors = {
        "plain20": [0.27, 0.26, 0.21],
        "resnet20": [0.40, 0.33, 0.20],
        "plain56": [0.82, 0.45, 0.40],
        "resnet56": [0.44, 0.22, 0.20],
    }
    rows = [
        {
            "net": net,
            "kind": "plain" if net.startswith("plain") else "residual",
            "depth": int(net[-2:]),
            "epoch": epoch,
            "train_error": error,
            "test_error": error - 0.01,
        }
        for net, values in errors.items()
        for epoch, error in enumerate(values, 1)
    ]
    figure = degradation_figure(rows)
    for ax in figure.axes:
        low, high = ax.get_ylim()
        values = [y for line in ax.lines for y in line.get_ydata()]
        above = [y for y in values if y > high]
        assert len(above) == 1 and low <= min(values)  # plain56's first epoch only: the scale still fits the rest
        assert high < 60  # not stretched to the first epoch
        assert [text.get_text() for text in ax.texts] == [f"{y:.0f}%" for y in above]
    assert _size(degradation_curves(rows, tmp_path / "degradation.png"))[0] > 600


def test_eval_draws_the_confusion_matrix_beside_the_checkpoint(trained_run, tmp_path, capsys):
    run = _copy_run(trained_run, tmp_path / "run")
    assert main(["eval", str(run / "best.pt")]) == 0
    assert f"picture: {run / 'confusion_matrix.png'}" in capsys.readouterr().out
    assert _size(run / "confusion_matrix.png")[0] >= 700
    assert main(["eval", str(run), "--json", "--save", str(tmp_path / "cm.png")]) == 0
    assert json.loads(capsys.readouterr().out)["picture"] == str(tmp_path / "cm.png")
    assert (tmp_path / "cm.png").is_file()


def test_plot_redraws_every_picture_of_a_run(trained_run, tmp_path, capsys):
    run = _copy_run(trained_run, tmp_path / "run")
    assert main(["plot", str(run), "-n", "6"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [str(run / name) for name in ("curves.png", "confusion_matrix.png", "predictions.png")]
    assert all(_size(run / name)[0] >= 500 for name in ("curves.png", "confusion_matrix.png", "predictions.png"))


def test_plot_without_the_test_data_draws_the_curves_and_says_why(trained_run, tmp_path, capsys):
    run = _copy_run(trained_run, tmp_path / "run")
    assert main(["plot", str(run), "--data-dir", str(tmp_path / "nothing")]) == 0
    out = capsys.readouterr().out
    assert (run / "curves.png").is_file() and not (run / "confusion_matrix.png").exists()
    assert "skipped confusion_matrix.png and predictions.png" in out and "--data-dir" in out


def test_plot_of_a_folder_that_is_no_run_is_a_user_error(trained_run, tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "neither metrics.csv nor best.pt" in capsys.readouterr().err
    shutil.copy(trained_run / "best.pt", tmp_path / "best.pt")
    assert main(["plot", str(tmp_path), "--data-dir", str(tmp_path / "nothing")]) == 0
    assert capsys.readouterr().out.startswith(f"skipped curves.png: {tmp_path} has no epochs in metrics.csv")


def _write_images(folder):
    folder.mkdir()
    for i, image in enumerate(pattern_images(np.array([0, 3, 7]), 56, 3)):
        Image.fromarray(image).save(folder / f"{i}.png")
    return folder


def test_predict_json_on_image_files_matches_the_text_output(trained_run, tmp_path, capsys):
    run = _copy_run(trained_run, tmp_path / "run")
    images = _write_images(tmp_path / "images")
    assert main(["predict", str(run), str(images), "--json", "--top", "2"]) == 0
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["file"] for o in objects] == [str(images / f"{i}.png") for i in range(3)]
    assert all(len(o["top"]) == 2 and set(o["top"][0]) == {"class", "probability"} for o in objects)
    assert not (run / "predictions.png").exists()  # --json draws only when asked to (--save)
    assert main(["predict", str(run), str(images), "--top", "2"]) == 0
    text = capsys.readouterr().out.splitlines()
    for o, line in zip(objects, text):
        assert line == f"{o['file']}: " + ", ".join(f"{t['class']} {t['probability']:.1%}" for t in o["top"])
    assert (run / "predictions.png").is_file()


def test_predict_json_on_test_images_has_predicted_and_actual(trained_run, tmp_path, capsys):
    run = _copy_run(trained_run, tmp_path / "run")
    assert main(["predict", str(run), "-n", "5", "--json", "--save", str(tmp_path / "p.png")]) == 0
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["index"] for o in objects] == list(range(5))
    for o in objects:
        assert o["predicted"] == o["top"][0]["class"] and o["correct"] == (o["predicted"] == o["actual"])
        assert 0 < o["probability"] <= 1
    assert (tmp_path / "p.png").is_file()
    assert main(["predict", str(run), "-n", "5"]) == 0
    text = [line for line in capsys.readouterr().out.splitlines() if line.startswith("predicted: ")]
    assert text == [f'predicted: "{o["predicted"]}", actual: "{o["actual"]}"' for o in objects]


def test_predict_quiet_prints_nothing_and_still_draws(trained_run, tmp_path, capsys):
    run = _copy_run(trained_run, tmp_path / "run")
    assert main(["predict", str(run), "-n", "3", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert (run / "predictions.png").is_file()


def _tiny_train(data_dir, out, *extra):
    return main(
        [
            "train",
            "--data-dir",
            str(data_dir),
            "--epochs",
            "1",
            "--subset",
            "64",
            "--batch-size",
            "32",
            "--out",
            str(out),
            "--quiet",
            *extra,
        ]
    )


def test_tensorboard_writes_event_files(tiny_fashion, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert _tiny_train(tiny_fashion, out, "--tensorboard") == 0
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert {"loss/train", "loss/test", "accuracy/test", "learning_rate"} <= set(events.Tags()["scalars"])
    with open(out / "metrics.csv") as f:
        row = next(csv.DictReader(f))
    (accuracy,) = events.Scalars("accuracy/test")
    assert accuracy.step == 1 and accuracy.value == pytest.approx(float(row["test_accuracy"]))
    assert (out / "curves.png").is_file()


def test_tensorboard_missing_is_one_clear_sentence_before_training(tiny_fashion, tmp_path, capsys, monkeypatch):
    import resnetlab.tensorboard_log

    real = resnetlab.tensorboard_log.importlib.util.find_spec
    monkeypatch.setattr(
        resnetlab.tensorboard_log.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboard" else real(name, *a),
    )
    out = tmp_path / "run"
    assert _tiny_train(tiny_fashion, out, "--tensorboard") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install -e '.[tensorboard]'" in err
    assert not (out / "best.pt").exists()
