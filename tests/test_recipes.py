"""Recipes as data: the optimizer and the schedule are named from engine's tables, every airbench setting is a
field, and a new recipe (AdamW with a cosine schedule here) is one entry in config.RECIPES."""

import json
import math
from dataclasses import replace

import pytest
import torch

from resnetlab import config
from resnetlab.checkpoint import load_checkpoint
from resnetlab.cli import main
from resnetlab.config import RECIPES, Recipe, TrainConfig
from resnetlab.engine import (
    OPTIMIZERS,
    SCHEDULES,
    Lookahead,
    _saved_backbone_scale,
    build_optimizer,
    build_scheduler,
    parameter_groups,
    train,
)
from resnetlab.models import create_model

ADAMW_COSINE = Recipe(
    name="adamw-cosine",
    description="AdamW with a cosine schedule (a test's recipe)",
    batch_size=32,
    lr=2e-3,
    momentum=0.9,
    weight_decay=0.05,
    label_smoothing=0.0,
    warmup_fraction=0.25,
    augment=False,
    tta_flip=False,
    optimizer="adamw",
    schedule="cosine",
    start_lr_factor=0.1,
    end_lr_factor=0.01,
)


@pytest.mark.parametrize("name", [*RECIPES, ADAMW_COSINE.name])
def test_every_recipe_builds_its_optimizer_and_schedule_which_peak_at_its_lr(name):
    recipe = RECIPES.get(name, ADAMW_COSINE)
    net = create_model(recipe.model or "resnet20", num_classes=3, in_channels=3)
    optimizer = build_optimizer(
        recipe, parameter_groups(net, recipe.weight_decay, recipe.lr, 1.0, recipe.bn_lr_scale), recipe.lr
    )
    assert type(optimizer) is {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}[recipe.optimizer]
    assert set(OPTIMIZERS) == {"sgd", "adamw"} and recipe.schedule in SCHEDULES
    scheduler = build_scheduler(recipe, optimizer, 100)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert max(rates) == pytest.approx(recipe.lr) and rates[-1] < recipe.lr
    assert {g["name"] for g in optimizer.param_groups} >= {"decay", "no_decay"}


def test_an_unknown_optimizer_or_schedule_names_the_ones_there_are():
    net = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match="sgd, adamw"):
        build_optimizer(replace(ADAMW_COSINE, optimizer="lion"), parameter_groups(net, 0.0, 1.0), 1.0)
    with pytest.raises(ValueError, match=", ".join(SCHEDULES)):
        build_scheduler(replace(ADAMW_COSINE, schedule="linear"), torch.optim.SGD(net.parameters(), lr=1.0), 10)


def test_the_cosine_schedule_warms_up_linearly_then_falls_along_a_cosine_to_its_end():
    optimizer = torch.optim.AdamW(torch.nn.Linear(2, 1).parameters(), lr=1.0)
    scheduler = build_scheduler(ADAMW_COSINE, optimizer, 101)
    rates = []
    for _ in range(101):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    warmup = 25  # a quarter of 101 steps
    assert rates[0] == pytest.approx(0.1) and rates[warmup // 2] == pytest.approx(0.1 + 0.9 * 12 / 25)
    assert rates[warmup] == pytest.approx(1.0) and rates[-1] == pytest.approx(0.01)
    middle = warmup + (100 - warmup) // 2 + 1
    assert rates[middle] == pytest.approx(0.01 + 0.99 * (1 + math.cos(math.pi * 38 / 75)) / 2)
    assert all(a >= b for a, b in zip(rates[warmup:], rates[warmup + 1 :]))


def test_a_recipe_with_adamw_and_cosine_is_one_entry_in_the_table_and_trains(
    tiny_fashion, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(config.RECIPES, ADAMW_COSINE.name, ADAMW_COSINE)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "adamw-cosine: off" in " ".join(capsys.readouterr().out.split())  # --augment's help, from the table
    out = tmp_path / "run"
    summary = train(
        TrainConfig(
            dataset="fashion-mnist",
            data_dir=str(tiny_fashion),
            model="resnet8w",
            recipe="adamw-cosine",
            epochs=1,
            subset=128,
            out=str(out),
            quiet=True,
            device="cpu",
            precision="fp32",
        )
    )
    assert summary["recipe"] == "adamw-cosine" and summary["lr"] == ADAMW_COSINE.lr
    state = load_checkpoint(out / "last.pt").train_state
    decay = state["optimizer"]["param_groups"][0]
    assert decay["name"] == "decay" and decay["betas"] == (0.9, 0.999) and decay["weight_decay"] == 0.05
    assert all("exp_avg_sq" in s for s in state["optimizer"]["state"].values())  # AdamW's, which SGD has not
    (row,) = load_checkpoint(out / "last.pt").train_state["rows"]
    assert row["lr"] == pytest.approx(ADAMW_COSINE.lr * ADAMW_COSINE.end_lr_factor)  # 4 steps: the last at the end


def test_the_augment_help_is_written_from_every_recipe(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, recipe in RECIPES.items():
        assert f"{name}: {recipe.augmentation()}" in text
    assert "photo-long: mirroring and translation" in text
    assert "airbench: alternating mirroring and translation by 2 pixels (reflected)" in text


def test_the_lookahead_settings_come_from_the_recipe():
    net = torch.nn.Linear(2, 1, bias=False)
    lookahead = Lookahead(net, total_steps=10, every=2, decay=0.5, power=1.0)
    start = net.weight.detach().clone()
    with torch.no_grad():
        net.weight += 1.0
    lookahead.step()
    torch.testing.assert_close(net.weight.detach(), start + 1.0)  # not a pull yet
    with torch.no_grad():
        net.weight += 1.0
    lookahead.step()  # step 2: decay 0.5 ** 2 * (2 / 10) ** 1 = 0.05
    torch.testing.assert_close(net.weight.detach(), start + 0.95 * 2.0)
    airbench = RECIPES["airbench"]
    assert (airbench.lookahead_every, airbench.lookahead_decay, airbench.lookahead_power) == (5, 0.95, 3.0)
    assert airbench.prepare_images == 5000


def test_a_resumed_run_keeps_its_backbone_rate_whatever_its_groups():
    net = create_model("resnet9w", num_classes=3)

    def saved(groups):
        optimizer = torch.optim.SGD(groups, lr=1.0)
        build_scheduler(RECIPES["fast"], optimizer, 10)
        return {"optimizer": optimizer.state_dict()}

    named = saved(parameter_groups(net, 1e-3, 1.0, backbone_scale=0.1, bn_scale=64))  # six groups
    assert len(named["optimizer"]["param_groups"]) == 6 and _saved_backbone_scale(named) == pytest.approx(0.1)
    assert _saved_backbone_scale(saved(parameter_groups(net, 1e-3, 1.0, bn_scale=64))) == 1.0
    old = saved(parameter_groups(net, 1e-3, 1.0, backbone_scale=0.1))  # as runs before the names saved it
    for group in old["optimizer"]["param_groups"]:
        del group["name"]
    assert _saved_backbone_scale(old) == pytest.approx(0.1)


def test_the_former_recipe_name_best_still_trains_resumes_and_loads_as_fast_flip(tiny_fashion, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "{" + ",".join(RECIPES) + "}" in capsys.readouterr().out and "best" not in RECIPES  # not shown
    out = tmp_path / "run"
    argv = ["train", "--data-dir", str(tiny_fashion), "--model", "resnet8w", "--subset", "64"]
    argv += ["--device", "cpu", "--precision", "fp32", "--out", str(out), "--recipe", "best"]
    assert main([*argv, "--epochs", "1"]) == 0
    assert "note: recipe best is now called fast-flip" in capsys.readouterr().out
    assert load_checkpoint(out / "last.pt").config["recipe"] == "best"  # as runs saved before the rename have it
    assert main(["train", "--resume", str(out), "--epochs", "2", "--recipe", "best"]) == 0
    assert main(["train", "--resume", str(out), "--epochs", "3", "--recipe", "fast-flip"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recipe"] == "fast-flip" and summary["epochs"] == 3
    assert load_checkpoint(out / "best.pt").card.test_time_flip  # fast-flip's flip test-time augmentation
    assert main(["eval", str(out), "--device", "cpu", "--precision", "fp32"]) == 0
