"""Runs survive crashes: resume, interrupts, atomic checkpoints, multi-process training."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from resnetlab.checkpoint import load_checkpoint, read_checkpoint
from resnetlab.config import TrainConfig
from resnetlab.engine import resume_config, train
from resnetlab.errors import Interrupted

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}


def _rows(out: Path) -> list[dict]:
    with open(out / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _config(data_dir, out, **kw) -> TrainConfig:
    # augment=True: the random translations and flips must resume exactly too (the fast recipe has none).
    base = dict(
        dataset="fashion-mnist",
        data_dir=str(data_dir),
        model="resnet20",
        epochs=2,
        batch_size=32,
        out=str(out),
        quiet=True,
        seed=3,
        subset=128,
        augment=True,
    )
    return TrainConfig(**{**base, **kw})


def test_resume_at_an_epoch_boundary_ends_with_the_same_weights(tiny_fashion, tmp_path):
    train(_config(tiny_fashion, tmp_path / "straight"))
    straight = load_checkpoint(tmp_path / "straight" / "last.pt").train_state["model"]

    def interrupt_after_first_epoch(row, model):
        if row["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted) as stopped:
        train(_config(tiny_fashion, tmp_path / "resumed"), on_epoch=interrupt_after_first_epoch)
    assert stopped.value.exit_code == 130
    assert "--resume" in str(stopped.value)
    config, state = resume_config(tmp_path / "resumed")
    assert state["epoch"] == 1 and state["step"] == 0
    summary = train(config, resume_state=state)
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt").train_state["model"]
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=0, msg=name)
    assert [int(r["epoch"]) for r in _rows(tmp_path / "resumed")] == [1, 2]
    assert summary["epochs"] == 2


def test_resumed_run_remembers_its_best_and_does_not_overwrite_it(tiny_fashion, tmp_path):
    out = tmp_path / "run"

    def interrupt(row, model):
        if row["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted):
        train(_config(tiny_fashion, out, epochs=2), on_epoch=interrupt)
    config, state = resume_config(out)
    # Pretend epoch 1 was excellent: a resumed run must not replace that best.pt with a worse epoch.
    state["best_accuracy"] = 1.01
    best_before = torch.load(out / "best.pt", weights_only=True)
    train(config, resume_state=state)
    best_after = torch.load(out / "best.pt", weights_only=True)  # its card gains the fitted temperature, no more
    assert best_after["epoch"] == best_before["epoch"] == 1
    assert all(torch.equal(best_after["state_dict"][k], v) for k, v in best_before["state_dict"].items())


def _start_training(data_dir, out, *extra):
    args = [
        sys.executable,
        "-m",
        "resnetlab",
        "train",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        str(data_dir),
        "--model",
        "resnet20",
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--out",
        str(out),
        *extra,
    ]
    return subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_rows(out: Path, n: int, process, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (out / "metrics.csv").exists() and len(_rows(out)) >= n:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("training made no progress")


def test_sigkill_in_the_middle_of_an_epoch_then_resume(tiny_fashion, tmp_path):
    out = tmp_path / "run"
    process = _start_training(tiny_fashion, out)
    _wait_for_rows(out, 1, process)
    time.sleep(0.5)  # well inside epoch 2
    process.kill()
    process.wait()
    assert len(_rows(out)) < 3
    result = subprocess.run(
        [sys.executable, "-m", "resnetlab", "train", "--resume", str(out)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = _rows(out)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    best = load_checkpoint(out / "best.pt")
    best_row = max(rows, key=lambda r: float(r["test_accuracy"]))
    assert best.metrics["test_accuracy"] == pytest.approx(float(best_row["test_accuracy"]))
    assert best.epoch == int(best_row["epoch"])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_saves_last_pt_and_says_how_to_resume(tiny_fashion, tmp_path, sig):
    out = tmp_path / "run"
    process = _start_training(tiny_fashion, out)
    _wait_for_rows(out, 1, process)
    time.sleep(0.3)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + sig
    assert "Traceback" not in stderr
    assert f"resnetlab train --resume {out}" in stderr
    state = load_checkpoint(out / "last.pt").train_state
    assert state["epoch"] >= 1
    result = subprocess.run(
        [sys.executable, "-m", "resnetlab", "train", "--resume", str(out), "--quiet"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert [int(r["epoch"]) for r in _rows(out)] == [1, 2, 3]


SAVER = """
import sys, torch
from resnetlab.checkpoint import save_atomic
path = sys.argv[1]
i = 0
print("ready", flush=True)
while True:
    i += 1
    save_atomic({"format": "resnetlab-checkpoint", "i": i, "w": torch.full((2_000_000,), float(i))}, path)
"""


def test_killing_a_process_during_saves_never_leaves_a_torn_checkpoint(tmp_path):
    path = tmp_path / "best.pt"
    for attempt in range(4):
        process = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], env=ENV, stdout=subprocess.PIPE)
        process.stdout.readline()
        time.sleep(0.4 + 0.23 * attempt)
        process.kill()
        process.wait()
        if path.exists():
            checkpoint = read_checkpoint(path)
            assert torch.all(checkpoint["w"] == checkpoint["i"])
    assert path.exists()


def test_full_disk_while_saving_is_a_clear_error_and_keeps_earlier_files(tiny_fashion, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(_config(tiny_fashion, out, epochs=1))
    before = {name: (out / name).read_bytes() for name in ("best.pt", "last.pt")}
    import resnetlab.checkpoint

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(resnetlab.checkpoint.torch, "save", full)
    from resnetlab.cli import main

    code = main(
        [
            "train",
            "--data-dir",
            str(tiny_fashion),
            "--epochs",
            "1",
            "--subset",
            "64",
            "--out",
            str(out),
            "--overwrite",
            "--quiet",
        ]
    )
    assert code == 2
    assert {name: (out / name).read_bytes() for name in before} == before


def test_nan_loss_stops_with_advice_and_keeps_best(tiny_fashion, tmp_path, capsys, monkeypatch):
    from resnetlab.cli import main

    out = tmp_path / "run"
    train(_config(tiny_fashion, out, epochs=1))
    best_before = (out / "best.pt").read_bytes()
    import resnetlab.engine

    def nan_loss(*args, **kwargs):
        return torch.tensor(float("nan"), requires_grad=True)

    monkeypatch.setattr(resnetlab.engine.F, "cross_entropy", nan_loss)
    code = main(
        [
            "train",
            "--data-dir",
            str(tiny_fashion),
            "--epochs",
            "1",
            "--subset",
            "64",
            "--out",
            str(out),
            "--overwrite",
            "--quiet",
        ]
    )
    assert code == 2
    assert "lower the learning rate" in capsys.readouterr().err
    assert (out / "best.pt").read_bytes() == best_before


def test_two_processes_with_gloo_write_one_set_of_files(tiny_fashion, tmp_path):
    out = tmp_path / "ddp"
    args = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "resnetlab",
        "train",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        str(tiny_fashion),
        "--model",
        "resnet20",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--out",
        str(out),
    ]
    env = {**ENV, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert [f for f in files if f.endswith(".pt")] == ["best.pt", "last.pt"]
    assert not [f for f in files if f.startswith(".")], files
    assert [int(r["epoch"]) for r in _rows(out)] == [1, 2]
    assert result.stdout.count("epoch 1/2:") == 1  # only rank 0 prints
    assert result.stdout.count("calibration: temperature") == 1
    assert json.loads((out / "summary.json").read_text())["calibration"]["images"] == 100  # both shards' logits
    assert "2 processes" in result.stdout
    # The reduced metric covers the whole test set: it equals a single-process evaluation of the weights.
    from resnetlab.inference import TorchPredictor

    predictor = TorchPredictor.from_checkpoint(out / "best.pt", device="cpu", precision="fp32")
    stats = predictor.evaluate(predictor.load_test_data())
    best = load_checkpoint(out / "best.pt")
    assert stats["accuracy"] == pytest.approx(best.metrics["test_accuracy"], abs=1e-6)
    assert stats["images"] == 100


def _weights(out: Path) -> dict:
    return load_checkpoint(out / "last.pt").state_dict


def test_augment_overrides_the_recipe_and_runs_repeat_exactly(tiny_fashion, tmp_path):
    runs = {name: tmp_path / name for name in ("off", "off-again", "on")}
    for name, out in runs.items():
        train(_config(tiny_fashion, out, epochs=1, augment=name == "on"))
    off, again, on = (_weights(out) for out in runs.values())
    assert all(torch.equal(off[k], again[k]) for k in off)
    assert not all(torch.equal(off[k], on[k]) for k in off if off[k].is_floating_point())
