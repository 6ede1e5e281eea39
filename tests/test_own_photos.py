"""Folders as people keep them: DIR/<class>/<image>, with a validation share held out and remembered."""

import json

import pytest
from fakedata import write_image_folder

from resnetlab.checkpoint import load_checkpoint
from resnetlab.cli import main

TRAIN = ["train", "--dataset", "folder", "--epochs", "1", "--image-size", "16", "--batch-size", "8"]


def _class_folders(tmp_path, per_class=10, classes=("cat", "dog", "fox")):
    """write_image_folder's train/ part moved up: DIR/<class>/<image>, no train/ or test/."""
    write_image_folder(tmp_path / "made", classes=classes, per_class=per_class, splits=("train",))
    (tmp_path / "made" / "train").rename(tmp_path / "photos")
    return tmp_path / "photos"


def test_a_folder_of_class_folders_holds_out_a_stratified_share_and_remembers_it(tmp_path, capsys):
    photos = _class_folders(tmp_path)
    out = tmp_path / "run"
    assert main([*TRAIN, "--data-dir", str(photos), "--out", str(out), "--seed", "3"]) == 0
    first_line = capsys.readouterr().out.splitlines()[0]
    expected = f"note: {photos} has no train/ and test/ folders: 6 images (20% of each class, seed 3)"
    assert first_line.startswith(expected)
    card = load_checkpoint(out / "best.pt").card
    assert len(card.holdout) == 6 and all(p.split("/")[0] in ("cat", "dog", "fox") for p in card.holdout)
    assert sorted(p.split("/")[0] for p in card.holdout) == ["cat", "cat", "dog", "dog", "fox", "fox"]
    split = json.loads((out / "split.json").read_text())
    assert split["validation"] == list(card.holdout) and split["val_split"] == 0.2 and split["seed"] == 3
    # eval and predict -n use exactly the held-out images, not the rest
    assert main(["eval", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 6
    assert main(["predict", str(out), "-n", "4", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4
    # another seed holds out other images; the same seed the same ones
    assert main([*TRAIN, "--data-dir", str(photos), "--out", str(tmp_path / "again"), "--seed", "3", "--quiet"]) == 0
    assert load_checkpoint(tmp_path / "again" / "best.pt").card.holdout == card.holdout
    assert main([*TRAIN, "--data-dir", str(photos), "--out", str(tmp_path / "other"), "--seed", "4", "--quiet"]) == 0
    assert load_checkpoint(tmp_path / "other" / "best.pt").card.holdout != card.holdout


def test_a_held_out_image_that_is_gone_is_one_sentence(tmp_path, capsys):
    photos = _class_folders(tmp_path, per_class=5, classes=("a", "b"))
    out = tmp_path / "run"
    assert main([*TRAIN, "--data-dir", str(photos), "--out", str(out), "--quiet"]) == 0
    (photos / load_checkpoint(out / "best.pt").card.holdout[0]).unlink()
    assert main(["eval", str(out)]) == 2
    err = capsys.readouterr().err
    assert "held-out images this model was validated on are no longer in" in err and err.count("\n") == 1


def test_a_class_with_one_image_cannot_be_split(tmp_path, capsys):
    photos = _class_folders(tmp_path, per_class=4, classes=("a", "b"))
    for extra in list((photos / "b").iterdir())[1:]:
        extra.unlink()
    assert main([*TRAIN, "--data-dir", str(photos), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "the class b in" in err and "has only one image" in err and err.count("\n") == 1
    assert not (tmp_path / "run" / "best.pt").exists()


@pytest.mark.parametrize("share", ["0", "1", "1.5", "-0.2"])
def test_val_split_must_be_a_share(tmp_path, capsys, share):
    photos = _class_folders(tmp_path, per_class=3, classes=("a", "b"))
    assert main([*TRAIN, "--data-dir", str(photos), "--val-split", share]) == 2
    assert "--val-split must be between 0 and 1" in capsys.readouterr().err


def test_a_small_folder_gets_enough_optimizer_steps_and_says_so(tmp_path, capsys, monkeypatch):
    from resnetlab import config
    from resnetlab.config import DEFAULT_EPOCHS, SMALL_DATA_MAX_EPOCHS, SMALL_DATA_STEPS, TrainConfig

    # the sizing by steps, as --pretrained or a folder above FEW_PHOTOS_LIMIT gets it (few photos get a time budget)
    monkeypatch.setattr(config, "FEW_PHOTOS_LIMIT", 0)

    config, note = TrainConfig(dataset="folder").sized_for(192, folder=True)
    assert config.batch_size == 16 and config.epochs * (192 // 16) >= SMALL_DATA_STEPS
    assert "192 training images: batch 16 (about an eighth of them)" in note
    # the fixed default gave 2 steps an epoch here, 8 in all
    assert TrainConfig(dataset="folder", epochs=4, batch_size=128).sized_for(192, folder=True) == (
        TrainConfig(dataset="folder", epochs=4, batch_size=128),
        None,
    )
    assert TrainConfig(dataset="folder", epochs=3).sized_for(192, True)[0].epochs == 3  # --epochs wins
    assert TrainConfig(dataset="folder", batch_size=64).sized_for(192, True)[0].batch_size == 64
    assert TrainConfig(dataset="folder").sized_for(100_000, True)[0].epochs == DEFAULT_EPOCHS
    assert TrainConfig().sized_for(50, folder=False) == (TrainConfig(epochs=DEFAULT_EPOCHS), None)  # named datasets
    photos = _class_folders(tmp_path, per_class=10, classes=("a", "b"))
    assert (
        main(
            [
                "train",
                "--dataset",
                "folder",
                "--data-dir",
                str(photos),
                "--image-size",
                "16",
                "--out",
                str(tmp_path / "run"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "note: 16 training images: batch 16" in out and "epochs (" in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["batch_size"] == 16 and summary["epochs"] == SMALL_DATA_MAX_EPOCHS  # 1 step an epoch: capped


def test_an_empty_folder_loose_images_and_empty_class_folders_each_get_their_sentence(tmp_path, capsys):
    def refusal(folder):
        assert main([*TRAIN, "--data-dir", str(folder), "--no-cache", "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no class folder has" not in err
        return err

    empty = tmp_path / "empty"
    empty.mkdir()
    assert f"{empty} is empty; put each class's images in a folder of its own, named after the class" in refusal(empty)
    loose = _class_folders(tmp_path, per_class=2, classes=("a",)) / "a"
    assert f"{loose} has 2 image(s) but no class folders; put each class's images" in refusal(loose)
    photos = _class_folders(tmp_path / "more", per_class=2, classes=("a", "b", "c"))
    for name in ("a", "b"):
        for image in (photos / name).iterdir():
            image.unlink()
    assert f"the class folders a and b in {photos} have no images;" in refusal(photos)
    (photos / "b").rmdir()
    assert f"the class folder a in {photos} has no images; every class folder" in refusal(photos)


def test_a_class_named_train_is_read_as_a_class_and_said_so(tmp_path):
    from resnetlab.data import load_split

    photos = _class_folders(tmp_path, per_class=3, classes=("cat", "dog", "train"))
    data = load_split("folder", photos, train=True, image_size=16, cache_dir="")
    assert data.classes == ["cat", "dog", "train"]
    assert any(f"{photos}/train is read as a class like the folders beside it" in note for note in data.notes)
    write_image_folder(tmp_path / "parts", classes=("a", "b"), per_class=2)  # train/ and test/: the parts
    data = load_split("folder", tmp_path / "parts", train=True, image_size=16, cache_dir="")
    assert data.classes == ["a", "b"] and not any("is read as a class" in note for note in data.notes)


def test_val_split_on_a_folder_with_train_and_test_folders_is_a_note(tmp_path):
    from resnetlab.data import load_train_test

    write_image_folder(tmp_path, classes=("a", "b"), per_class=2)
    train, _ = load_train_test("folder", tmp_path, image_size=16, val_split=0.5, cache_dir="")
    assert f"--val-split 0.5 is not used: {tmp_path} has train/ and test/ folders" in " ".join(train.notes)
    train, _ = load_train_test("folder", tmp_path, image_size=16, cache_dir="")
    assert "--val-split" not in " ".join(train.notes)


def test_a_cache_dir_that_is_a_file_is_one_sentence(tmp_path, capsys):
    photos = _class_folders(tmp_path, per_class=3, classes=("a", "b"))
    (tmp_path / "file").write_text("mine")
    file = tmp_path / "file"
    for cache, says in ((file, f"{file} is"), (file / "sub", f"{file / 'sub'} cannot be made, as {file} is")):
        assert main([*TRAIN, "--data-dir", str(photos), "--cache-dir", str(cache), "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert err == (
            f"resnetlab: error: the cache folder {says} a file, not a folder; give --cache-dir a folder to keep the "
            "decoded images in, or pass --no-cache.\n"
        )
    assert (tmp_path / "file").read_text() == "mine"


@pytest.mark.parametrize(
    "images, says",
    [
        (12, "12 training images: batch 16 (the smallest it chooses: all 12 images in each step)"),
        (100, "100 training images: batch 16 (the smallest it chooses, more than an eighth of them)"),
        (1000, "1000 training images: batch 64 (about an eighth of them)"),
    ],
)
def test_the_batch_note_says_what_is_true_of_small_folders(images, says):
    from resnetlab.config import TrainConfig

    assert says in TrainConfig(dataset="folder").sized_for(images, folder=True)[1]
