"""eval's mistakes (precision, recall, F1, top-5, the most confused pairs, --worst and predictions.csv) and honest
numbers (the Wilson interval of every accuracy, train --seeds)."""

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from fakedata import write_image_folder

from resnetlab.checkpoint import load_checkpoint
from resnetlab.cli import main
from resnetlab.metrics import (
    ImageScores,
    class_report,
    describe_accuracy,
    most_confused,
    score,
    score_images,
    wilson_interval,
)

FP32 = ["--device", "cpu", "--precision", "fp32"]


def _wilson_by_hand(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The closed form, written out: (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)."""
    p = k / n
    centre, spread = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return ((centre - spread) / (1 + z * z / n), (centre + spread) / (1 + z * z / n))


@pytest.mark.parametrize(
    "k, n, expected",
    [
        (35, 60, (0.4573, 0.6994)),  # 58.33% of 60 images
        (0, 10, (0.0, 0.2775)),  # no success: the interval still has width, unlike p +- z*se
        (10, 10, (0.7225, 1.0)),
        (81, 100, (0.7222, 0.8749)),  # Brown, Cai and DasGupta's kind of example, checked with the formula
    ],
)
def test_wilson_interval_matches_known_values(k, n, expected):
    low, high = wilson_interval(k, n)
    assert (low, high) == pytest.approx(expected, abs=1e-4)
    assert (low, high) == pytest.approx(_wilson_by_hand(k, n), abs=1e-12)


def test_accuracy_is_described_with_its_interval_below_10000_images_only():
    assert describe_accuracy(35 / 60, 60) == "58.33% (95% CI 45.7-69.9%, 60 images)"
    assert describe_accuracy(0.9, 20_000) == "90.00% (20,000 images)"
    stats = score(torch.eye(3)[[0, 1, 2, 0]] * 5, torch.tensor([0, 1, 2, 1]), 3, 1.0)
    assert stats["accuracy_ci95"] == pytest.approx(list(wilson_interval(3, 4)), abs=1e-6)


def test_precision_recall_f1_and_most_confused_from_a_confusion_matrix():
    confusion = [[3, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]  # class 2 never predicted; 3 absent
    report = class_report(confusion)
    assert report["per_class_precision"][:3] == pytest.approx([3 / 4, 2 / 3, 0.0])
    assert report["per_class_recall"][:3] == pytest.approx([3 / 4, 1.0, 0.0])
    assert report["per_class_f1"][:3] == pytest.approx([3 / 4, 0.8, 0.0])
    assert all(math.isnan(report[f"per_class_{m}"][3]) for m in ("precision", "recall", "f1"))
    assert report["macro_precision"] == pytest.approx((3 / 4 + 2 / 3) / 3)  # over the 3 classes that occur
    assert report["macro_f1"] == pytest.approx((0.75 + 0.8) / 3)
    assert most_confused([[5, 2, 4], [0, 5, 0], [4, 1, 5]], top=2) == [(0, 2, 4), (2, 0, 4)]


def test_image_scores_in_chunks_give_score_s_figures_and_top5():
    generator = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(50, 8, generator=generator), torch.randint(0, 8, (50,), generator=generator)
    scores = ImageScores.cat([ImageScores.of(logits[i : i + 16], labels[i : i + 16]) for i in range(0, 50, 16)])
    whole, chunked = score(logits, labels, 8, 1.0), score_images(scores, 8, 1.0)
    assert chunked["confusion_matrix"] == whole["confusion_matrix"]
    assert chunked["loss"] == pytest.approx(whole["loss"], rel=1e-6)
    top5 = (logits.topk(5, 1).indices == labels[:, None]).any(1).float().mean().item()
    assert chunked["top5_accuracy"] == pytest.approx(top5)
    assert torch.equal(scores.probability, logits.softmax(1).max(1).values)
    assert "top5_accuracy" not in score_images(ImageScores.of(logits[:, :5], labels % 5), 5, 1.0)


def test_eval_json_has_the_mistakes_and_the_interval(trained_run, capsys):
    from resnetlab.inference import TorchPredictor

    assert main(["eval", str(trained_run), "--json", *FP32]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["per_class_recall"] == pytest.approx(result["per_class_accuracy"])
    confusion = torch.tensor(result["confusion_matrix"])
    precision = (confusion.diag() / confusion.sum(0).clamp_min(1)).tolist()
    assert result["per_class_precision"] == pytest.approx(precision)
    off = confusion - torch.diag(confusion.diag())
    assert result["most_confused"][0]["count"] == off.max().item() > 0
    first = result["most_confused"][0]
    assert off[result["classes"].index(first["actual"]), result["classes"].index(first["predicted"])] == off.max()
    right = confusion.diag().sum().item()
    assert result["test_accuracy_ci95"] == pytest.approx(list(wilson_interval(right, 100)), abs=1e-6)
    predictor = TorchPredictor.from_checkpoint(trained_run / "best.pt", "cpu", "fp32")
    data = predictor.load_test_data()
    top5 = (predictor.logits(data.images).topk(5, 1).indices == data.labels[:, None]).any(1).float().mean()
    assert result["test_top5_accuracy"] == pytest.approx(top5.item())
    assert "worst_picture" not in result


def test_eval_prints_precision_recall_f1_interval_and_confused_pairs(trained_run, capsys):
    assert main(["eval", str(trained_run), *FP32]) == 0
    out = capsys.readouterr().out
    assert "(95% CI " in out and ", 100 images)" in out and "top-5 accuracy" in out
    assert "precision" in out and "F1" in out and "macro average" in out
    assert "most confused (actual -> predicted: images)" in out


def test_eval_worst_draws_the_highest_losses_and_writes_every_prediction(trained_run, tmp_path, capsys, monkeypatch):
    from resnetlab import evaluation

    drawn = {}
    real_grid = evaluation.prediction_grid
    monkeypatch.setattr(
        evaluation, "prediction_grid", lambda *a, **k: (drawn.update(args=a, **k), real_grid(*a, **k))[1]
    )
    picture = tmp_path / "out" / "w.png"
    assert main(["eval", str(trained_run), "--worst", "6", "--worst-save", str(picture), "--json", *FP32]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["worst_picture"] == str(picture) and picture.stat().st_size > 1000
    assert result["predictions_csv"] == str(tmp_path / "out" / "predictions.csv")
    with open(result["predictions_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in rows] == list(range(100))
    assert sum(r["actual"] == r["predicted"] for r in rows) / 100 == pytest.approx(result["test_accuracy"])
    assert sum(float(r["loss"]) for r in rows) / 100 == pytest.approx(result["test_loss"], rel=1e-4)
    for r in rows:  # a right prediction's loss is -log of its probability
        if r["actual"] == r["predicted"]:
            assert float(r["loss"]) == pytest.approx(-math.log(float(r["probability"])), abs=1e-4)
    worst = sorted(rows, key=lambda r: -float(r["loss"]))[:6]
    captions = drawn["captions"]
    assert [c.split(",")[0] for c in captions] == [f"#{r['index']}" for r in worst]
    assert drawn["args"][1] == [r["predicted"] for r in worst] and drawn["args"][3] == [r["actual"] for r in worst]


def test_eval_worst_on_class_folders_names_each_held_out_file(tmp_path, capsys, monkeypatch):
    from resnetlab import evaluation

    drawn = []
    monkeypatch.setattr(evaluation, "prediction_grid", lambda images, *a, **k: drawn.append(len(images)))
    write_image_folder(tmp_path / "pics", classes=("circle", "square"), per_class=8, splits=("train",))
    data = tmp_path / "pics" / "train"
    train = ["train", "--dataset", "folder", "--data-dir", str(data), "--epochs", "1", "--image-size", "16"]
    assert main([*train, "--batch-size", "8", "--out", str(tmp_path / "run"), "--quiet", "--no-cache", *FP32]) == 0
    assert main(["eval", str(tmp_path / "run"), "--worst", "50", "--no-cache", *FP32]) == 0
    out = capsys.readouterr().out
    assert f"worst images: {tmp_path / 'run' / 'worst.png'}" in out
    with open(tmp_path / "run" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    held_out = load_checkpoint(tmp_path / "run" / "best.pt").card.holdout
    assert sorted(str(Path(r["file"]).relative_to(data)) for r in rows) == sorted(held_out)
    assert all(Path(r["file"]).parent.name == r["actual"] for r in rows)
    assert drawn == [len(rows)] == [4]  # --worst 50 of 4 held-out images: all 4


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--worst", "0"], "argument --worst: must be at least 1, not 0"),
        (["--worst-save", "w.png"], "--worst-save names the picture of --worst N; give --worst N too."),
    ],
)
def test_eval_worst_mistakes_are_one_sentence(trained_run, capsys, args, expected):
    assert main(["eval", str(trained_run), *args]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_train_summary_gives_each_accuracy_its_interval(trained_run, capsys):
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["test_images"] == 100
    for key in ("best_test_accuracy", "final_test_accuracy"):
        right = round(summary[key] * 100)
        assert summary[f"{key}_ci95"] == pytest.approx(list(wilson_interval(right, 100)), abs=1e-6)


def test_train_seeds_trains_each_seed_and_reports_the_spread(tiny_fashion, tmp_path, capsys):
    out = tmp_path / "seeds"
    args = ["train", "--data-dir", str(tiny_fashion), "--model", "resnet8w", "--epochs", "1", "--subset", "64"]
    assert main([*args, "--batch-size", "32", "--seeds", "2", "--seed", "5", "--out", str(out), *FP32]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "seeds.json").read_text())
    assert result["seeds"] == [5, 6] and result["test_images"] == 100
    finals = []
    for run, seed in zip(result["runs"], (5, 6)):
        summary = json.loads((out / f"seed-{seed}" / "summary.json").read_text())
        assert run["out"] == str(out / f"seed-{seed}") and run["final_test_accuracy"] == summary["final_test_accuracy"]
        assert load_checkpoint(out / f"seed-{seed}" / "last.pt").config["seed"] == seed
        finals.append(summary["final_test_accuracy"])
        assert f"  seed {seed}: {describe_accuracy(finals[-1], 100)}" in printed
    mean, std = result["final_test_accuracy_mean"], result["final_test_accuracy_std"]
    assert mean == pytest.approx(sum(finals) / 2)
    assert std == pytest.approx(abs(finals[0] - finals[1]) / math.sqrt(2))
    assert (result["final_test_accuracy_min"], result["final_test_accuracy_max"]) == (min(finals), max(finals))
    assert f"mean {mean:.2%}, std {std:.2%}, min-max {min(finals):.2%}-{max(finals):.2%} over 2 seeds" in printed
    assert "best test accuracy " in printed and "(95% CI " in printed  # each run's summary line


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--seeds", "0"], "argument --seeds: must be at least 1, not 0"),
        (["--seeds", "1,1"], "argument --seeds: expected different seeds, not '1,1'"),
        (["--seeds", "a,b"], "argument --seeds: expected a count (3) or seeds separated by commas (0,1,2)"),
        (["--seeds", "2", "--resume", "run"], "--seeds cannot be combined with --resume; resume one seed's run"),
    ],
)
def test_train_seeds_mistakes_are_one_sentence(tmp_path, capsys, args, expected):
    assert main(["train", "--data-dir", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_train_seeds_into_a_folder_of_an_earlier_run_is_refused_before_training(tiny_fashion, tmp_path, capsys):
    (tmp_path / "out" / "seed-1").mkdir(parents=True)
    (tmp_path / "out" / "seed-1" / "best.pt").write_bytes(b"earlier")
    args = ["train", "--data-dir", str(tiny_fashion), "--seeds", "0,1", "--out", str(tmp_path / "out")]
    assert main(args) == 2
    assert "seed-1 already holds a run (best.pt); choose another --out" in capsys.readouterr().err
    assert not (tmp_path / "out" / "seed-0").exists()
