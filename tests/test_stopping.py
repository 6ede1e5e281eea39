"""train --balance and best.pt by balanced accuracy on imbalanced folders, --patience, --time-budget."""

import csv
import json

import pytest
import torch
from fakedata import write_image_folder

import resnetlab.engine
from resnetlab.checkpoint import load_checkpoint
from resnetlab.cli import main
from resnetlab.stopping import (
    REPLAN_SHARE,
    Budget,
    BudgetClock,
    balanced_accuracy,
    budget_note,
    class_weights,
    epochs_after,
    epochs_within,
    is_better,
    is_imbalanced,
    replans,
)

TRAIN = ["train", "--dataset", "folder", "--image-size", "16", "--batch-size", "8", "--model", "resnet8w"]
FP32 = ["--device", "cpu", "--precision", "fp32", "--no-cache"]


def _folder(root, sizes):
    """DIR/<class>/<image> with sizes[class] images each."""
    made = root.parent / f"{root.name}-made"
    for name, n in sizes.items():
        write_image_folder(made, classes=(name,), per_class=n, splits=("train",))
        root.mkdir(exist_ok=True)
        (made / "train" / name).rename(root / name)
    return root


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def _metrics(out):
    with open(out / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_class_weights_balanced_accuracy_and_which_epoch_is_better():
    counts = torch.tensor([30, 10, 20])
    weights = class_weights(counts)
    assert torch.allclose(weights * counts, torch.full((3,), 20.0))  # each class weighs the same in all
    assert torch.isclose((weights * counts).sum() / counts.sum(), torch.tensor(1.0))  # 1 on average per image
    assert is_imbalanced(torch.tensor([16, 10])) and not is_imbalanced(torch.tensor([15, 10]))
    assert balanced_accuracy([1.0, 0.5, float("nan")]) == 0.75  # a class with no held-out images is left out
    rows = [{"epoch": 1, "test_accuracy": 0.9, "test_balanced_accuracy": 0.5}]
    later = {"epoch": 2, "test_accuracy": 0.8, "test_balanced_accuracy": 0.6}
    assert is_better(later, rows, 1, 0.9, balanced=True) and not is_better(later, rows, 1, 0.9, balanced=False)
    assert not is_better({"epoch": 2, "test_accuracy": None}, rows, 1, 0.9, balanced=False)
    assert is_better(later, [], 0, -1.0, balanced=True) and is_better(later, [], 0, -1.0, balanced=False)


def test_balance_weights_the_loss_and_an_imbalanced_folder_chooses_by_balanced_accuracy(tmp_path, monkeypatch, capsys):
    photos = _folder(tmp_path / "photos", {"cat": 20, "dog": 4, "fox": 5})
    weights_seen = []
    real = resnetlab.engine.F.cross_entropy

    def spy(*args, **kwargs):
        weights_seen.append(kwargs.get("weight"))
        return real(*args, **kwargs)

    monkeypatch.setattr(resnetlab.engine.F, "cross_entropy", spy)
    out = tmp_path / "run"
    assert main([*TRAIN, "--data-dir", str(photos), "--epochs", "2", "--balance", "--out", str(out), *FP32]) == 0
    said = capsys.readouterr().out
    assert "note: the classes are imbalanced (cat has 16 training images, dog 3: 5.3x, above 1.5x), so best.pt" in said
    assert "--balance weights the loss of each class inversely to its images" in said
    # 16 cat, 3 dog, 4 fox: weights 23 / (3 * count)
    assert torch.allclose(weights_seen[0].cpu(), torch.tensor([23 / 48, 23 / 9, 23 / 12]))
    rows, summary = _metrics(out), _summary(out)
    assert all(row["test_balanced_accuracy"] != "" for row in rows)
    assert summary["selected_by"] == "test_balanced_accuracy" and summary["balance"] is True
    best = max(rows, key=lambda row: float(row["test_balanced_accuracy"]))  # the first of equals
    assert summary["best_epoch"] == int(best["epoch"])
    assert summary["best_test_balanced_accuracy"] == float(best["test_balanced_accuracy"])
    # without --balance: the loss is not weighted, and the choice is still by balanced accuracy
    weights_seen.clear()
    out = tmp_path / "plain"
    assert main([*TRAIN, "--data-dir", str(photos), "--epochs", "1", "--out", str(out), *FP32]) == 0
    assert set(weights_seen) == {None} and _summary(out)["selected_by"] == "test_balanced_accuracy"
    assert "--balance would also weight the loss" in capsys.readouterr().out
    # a balanced folder: chosen by accuracy, as before; metrics.csv keeps its columns
    photos = _folder(tmp_path / "even", {"cat": 5, "dog": 5})
    out = tmp_path / "even-run"
    assert main([*TRAIN, "--data-dir", str(photos), "--epochs", "1", "--out", str(out), "--quiet", *FP32]) == 0
    assert _summary(out)["selected_by"] == "test_accuracy" and "test_balanced_accuracy" not in _metrics(out)[0]


def _held_out_accuracies(monkeypatch, accuracies):
    """engine.evaluate gives these held-out accuracies, one per evaluation."""
    real, given = resnetlab.engine.evaluate, iter(accuracies)

    def evaluate(*args, **kwargs):
        stats = real(*args, **kwargs)
        accuracy = next(given)
        return {**stats, "accuracy": accuracy, "per_class_accuracy": [accuracy] * len(stats["per_class_accuracy"])}

    monkeypatch.setattr(resnetlab.engine, "evaluate", evaluate)


def test_patience_stops_keeps_the_best_and_a_stopped_run_resumes_only_with_more(tmp_path, monkeypatch, capsys):
    photos = _folder(tmp_path / "photos", {"cat": 5, "dog": 5})
    out = tmp_path / "run"
    _held_out_accuracies(monkeypatch, [0.5, 0.75, 0.5, 0.75, 0.5, 1.0])
    args = [*TRAIN, "--data-dir", str(photos), "--out", str(out), *FP32]
    assert main([*args, "--epochs", "6", "--patience", "2"]) == 0
    said = capsys.readouterr().out
    assert (
        "note: stopped early after epoch 4 of 6: no better held-out accuracy in the last 2 evaluations "
        "(--patience 2); best.pt is epoch 2 (75.00%)" in said
    )
    summary = _summary(out)
    assert summary["stopped_early"] is True and summary["patience"] == 2
    assert (summary["epochs_planned"], summary["epochs_run"], summary["best_epoch"]) == (6, 4, 2)
    assert len(_metrics(out)) == 4
    assert load_checkpoint(out / "best.pt").epoch == 2
    assert main(["train", "--resume", str(out), *FP32[:4]]) == 2
    assert (
        f"{out} stopped early at epoch 4: no better held-out score in 2 evaluations (--patience 2); give --patience "
        "above 2 to train it on, or use its best.pt." in capsys.readouterr().err
    )
    assert main(["train", "--resume", str(out), "--patience", "3", *FP32[:4]]) == 0  # one more evaluation, 0.5
    said = capsys.readouterr().out
    assert "--patience 3 apply from epoch 5 on" in said and "stopped early after epoch 5 of 6" in said
    assert _summary(out)["epochs_run"] == 5


def test_time_budget_plans_the_epochs_from_a_few_timed_steps(tmp_path, monkeypatch, capsys):
    photos = _folder(tmp_path / "photos", {"cat": 5, "dog": 5})
    timed = []
    real = resnetlab.engine._seconds_per_step

    def fast(job, *args):
        timed.append(real(job, warmup=1, timed=1))
        return 0.001

    monkeypatch.setattr(resnetlab.engine, "_seconds_per_step", fast)
    out = tmp_path / "capped"
    assert (
        main([*TRAIN, "--data-dir", str(photos), "--time-budget", "10", "--epochs", "2", "--out", str(out), *FP32]) == 0
    )
    assert timed and timed[0] > 0
    said = capsys.readouterr().out
    assert "note: --time-budget 10 minutes: 2 epochs planned, the --epochs 2 given, so that the schedule" in said
    summary = _summary(out)
    assert (summary["time_budget_minutes"], summary["epochs_planned"], summary["epochs_run"]) == (10, 2, 2)
    # a step of 100 s: one epoch does not fit in 1 minute; it trains 1 epoch and says so
    monkeypatch.setattr(resnetlab.engine, "_seconds_per_step", lambda job: 100.0)
    out = tmp_path / "slow"
    assert main([*TRAIN, "--data-dir", str(photos), "--time-budget", "1", "--out", str(out), *FP32]) == 0
    said = capsys.readouterr().out
    assert "--time-budget 1 minutes: 1 epochs planned (in place of" in said
    assert "even 1 epoch takes longer than is left" in said and _summary(out)["epochs_run"] == 1
    # a resumed run keeps the epochs it planned: another budget is refused like any setting that cannot change
    assert main(["train", "--resume", str(out), "--time-budget", "5", *FP32[:4]]) == 2
    assert "--time-budget 5.0 (the run's: --time-budget 1.0)" in capsys.readouterr().err


def test_after_the_first_epoch_the_budget_is_planned_again_from_it(tmp_path, monkeypatch, capsys):
    photos = _folder(tmp_path / "photos", {"cat": 5, "dog": 5})
    # the timed steps misjudge a step as 5 s: 3 or 4 epochs planned in 30 s; the first two then take a fraction of
    # a second each, so the run trains the 6 that --epochs allows, on a schedule built for 6
    monkeypatch.setattr(resnetlab.engine, "_seconds_per_step", lambda job: 5.0)
    out = tmp_path / "run"
    flags = [*TRAIN, "--data-dir", str(photos), "--time-budget", "0.5", "--epochs", "6", "--out", str(out), *FP32]
    assert main(flags) == 0
    said = capsys.readouterr().out
    planned = int(said.split("--time-budget 0.5 minutes: ")[1].split(" epochs planned")[0])
    assert 3 <= planned < 6
    assert "--time-budget: after epoch 2, an epoch trains in" in said and "so 6 epochs in all fit the" in said
    assert (
        f"in place of {planned}; the learning-rate schedule now spans them" in said and said.count("in place of") == 2
    )
    summary = _summary(out)
    assert (summary["epochs"], summary["epochs_planned"], summary["epochs_run"]) == (6, 6, 6)
    rates = [float(row["lr"]) for row in _metrics(out)]
    assert len(rates) == 6 and rates[-1] == pytest.approx(min(rates)) and rates[-1] < rates[0]  # ended its decay
    last = load_checkpoint(out / "last.pt")
    assert last.config["epochs"] == 6 and last.train_state["epochs"] == 6  # --resume goes on with the new plan
    peak = max(group["max_lr"] for group in last.train_state["optimizer"]["param_groups"])
    assert peak == pytest.approx(summary["lr"])  # rebuilt from the peak rate, not from the rate it had reached


def test_epochs_after_the_second():
    # 100 s left: the calibration's evaluation (2 s) out of REPLAN_SHARE of them, then epochs of 5 s, each third
    # one (and the last) evaluated for 2 s more
    room = REPLAN_SHARE * 100 - 2.0
    epochs = epochs_after(2, 100, 5.0, 2.0, 3, None)
    for count, fits in ((epochs, True), (epochs + 1, False)):
        evaluations = count // 3 - 2 // 3 + (count % 3 != 0)
        assert ((count - 2) * 5.0 + evaluations * 2.0 <= room) == fits
    assert epochs_after(2, 100, 5.0, 2.0, 3, 6) == 6  # --epochs caps it
    assert epochs_after(2, 3, 5.0, 2.0, 1, None) == 3  # out of time: one more, to end the schedule
    # evaluations apart from training: an evaluated epoch does not make the next plan shorter
    clock, budget = BudgetClock(), Budget(deadline=0.0, eval_seconds=9.0, cap=None)
    clock.add(5.0, None)
    assert (clock.train_seconds, clock.eval_seconds(budget)) == (5.0, 9.0)  # none measured yet: the estimate
    clock.add(7.0, 2.0)
    assert (clock.train_seconds, clock.eval_seconds(budget)) == (5.0, 2.0)
    # the plan changes at once the first time; later at once for fewer, and only for two more or above
    assert replans(30, 31, first=True) and not replans(30, 30, first=True)
    assert replans(30, 29, first=False) and not replans(30, 31, first=False) and replans(30, 32, first=False)


def test_within_a_budget_evaluation_takes_at_most_its_share():
    from resnetlab.stopping import EVAL_SHARE, eval_every_within

    assert EVAL_SHARE == 0.25
    assert eval_every_within(1.0, 10.0) == 1  # 10% of an epoch: after each
    assert eval_every_within(2.5, 10.0) == 1  # exactly the share
    assert eval_every_within(4.0, 10.0) == 2
    assert eval_every_within(20.0, 10.0) == 8
    note = budget_note(3, 12, 10.0, 0.5, 9, 60, None, (3, 6.0))
    assert "it evaluates every 3 epochs and after the last" in note and "--eval-every 1 after each" in note


def test_epochs_within_a_budget():
    assert epochs_within(100, 9.5, 0.0, 1, None) == (9, 10.0)  # 90 of the 100 s, 10 s an epoch
    assert epochs_within(100, 9.5, 2.0, 2, 4) == (4, 11.0)  # capped by --epochs
    assert epochs_within(1, 9.5, 0.0, 1, None)[0] == 1  # at least one


@pytest.mark.parametrize(
    "flags, says", [(["--patience", "0"], "must be at least 1"), (["--time-budget", "0"], "must be above 0")]
)
def test_patience_and_time_budget_out_of_range(tmp_path, capsys, flags, says):
    assert main([*TRAIN, "--data-dir", str(tmp_path), *flags]) == 2
    assert says in capsys.readouterr().err
