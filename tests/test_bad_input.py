"""One test per row of docs/bad-input.md not covered in the other test files: each mistake gets one sentence,
exit status 2, no traceback, and nothing saved before is lost."""

import pytest
from fakedata import write_image_folder, write_mnist_like
from PIL import Image

from resnetlab.cli import main


def _fails_clearly(capsys, args, expected):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    return err


@pytest.mark.parametrize(
    "flags,expected",
    [
        (["--image-size", "4"], "--image-size must be between 8 and 1024"),
        (["--image-size", "5000"], "--image-size must be between 8 and 1024"),
        (["--subset", "0"], "must be at least 1"),
        (["--lr", "500"], "below 100"),
        (["--lr", "fast"], "expected a number"),
        (["--epochs", "-3"], "must be at least 1"),
        (["--device", "tpu"], "invalid choice"),
        (["--precision", "fp8"], "invalid choice"),
    ],
)
def test_out_of_range_flags(capsys, tmp_path, flags, expected):
    _fails_clearly(capsys, ["train", "--data-dir", str(tmp_path), *flags], expected)


def test_cuda_requested_without_a_gpu(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    _fails_clearly(capsys, ["train", "--data-dir", str(tmp_path), "--device", "cuda"], "no CUDA GPU")


def test_resume_from_a_folder_without_last_pt(capsys, tmp_path):
    _fails_clearly(capsys, ["train", "--resume", str(tmp_path)], "has no last.pt")


def test_out_that_is_a_file(capsys, tiny_fashion, tmp_path):
    target = tmp_path / "taken"
    target.write_text("keep me")
    _fails_clearly(capsys, ["train", "--data-dir", str(tiny_fashion), "--out", str(target)], "is a file")
    assert target.read_text() == "keep me"


def test_out_that_cannot_be_created(capsys, tiny_fashion, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _fails_clearly(
        capsys,
        ["train", "--data-dir", str(tiny_fashion), "--epochs", "1", "--out", str(blocker / "run")],
        "cannot write to the output folder",
    )


def test_unreadable_data_dir(capsys, tmp_path, monkeypatch):
    import resnetlab.data

    data = tmp_path / "data"
    data.mkdir()
    # Tests run as root, for whom chmod 000 changes nothing: simulate the permission check failing.
    monkeypatch.setattr(resnetlab.data.os, "access", lambda path, mode: False)
    _fails_clearly(capsys, ["train", "--data-dir", str(data)], "is not readable")


def test_corrupt_dataset_files(capsys, tmp_path):
    write_mnist_like(tmp_path, "MNIST", n_train=20, n_test=10)
    raw = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    raw.write_bytes(raw.read_bytes()[:100])
    _fails_clearly(capsys, ["train", "--dataset", "mnist", "--data-dir", str(tmp_path)], "could not be read")


def test_predict_on_an_empty_folder_and_a_missing_file(capsys, trained_run, tmp_path):
    (tmp_path / "empty").mkdir()
    _fails_clearly(capsys, ["predict", str(trained_run), str(tmp_path / "empty")], "has no image files")
    _fails_clearly(capsys, ["predict", str(trained_run), str(tmp_path / "nope.png")], "does not exist")


def test_predict_on_a_truncated_image(capsys, trained_run, tmp_path):
    path = tmp_path / "cut.png"
    Image.new("RGB", (64, 64), "white").save(path)
    path.write_bytes(path.read_bytes()[:60])
    _fails_clearly(capsys, ["predict", str(trained_run), str(path)], "cut.png is not a readable image")


def test_checkpoint_path_that_is_a_folder_without_best_pt(capsys, tmp_path):
    _fails_clearly(capsys, ["eval", str(tmp_path)], "without best.pt")


def test_checkpoint_that_does_not_fit_the_data(capsys, tmp_path):
    write_image_folder(tmp_path / "three", classes=("a", "b", "c"), per_class=4)
    write_image_folder(tmp_path / "two", classes=("a", "b"), per_class=4)
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                "folder",
                "--data-dir",
                str(tmp_path / "three"),
                "--epochs",
                "1",
                "--image-size",
                "16",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    _fails_clearly(capsys, ["eval", str(out), "--data-dir", str(tmp_path / "two")], "does not fit this checkpoint")
