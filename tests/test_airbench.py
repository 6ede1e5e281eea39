"""The airbench recipe's parts (K. Jordan 2024): lookahead, BN biases at a higher learning rate, its schedule, and
a run with it that resumes exactly."""

import os
import signal

import pytest
import torch
from torch import nn

from resnetlab.checkpoint import load_checkpoint
from resnetlab.config import RECIPES, TrainConfig
from resnetlab.engine import Lookahead, build_scheduler, parameter_groups, resume_config, train
from resnetlab.errors import Interrupted
from resnetlab.models import create_model
from resnetlab.preprocess import PixelClassifier


def test_lookahead_pulls_the_weights_to_their_average_every_5_steps_and_ends_on_it():
    torch.manual_seed(0)
    net = nn.Linear(2, 1, bias=False)
    start = net.weight.detach().clone()
    lookahead = Lookahead(net, total_steps=12)
    average, seen = start.clone(), []
    for step in range(1, 13):
        with torch.no_grad():
            net.weight += 1.0  # what an optimizer step might do
        before = net.weight.detach().clone()
        lookahead.step()
        if step % 5 == 0:
            decay = 0.95**5 * (step / 12) ** 3
            average = average + (1 - decay) * (before - average)
            torch.testing.assert_close(net.weight.detach(), average)
        elif step < 12:
            torch.testing.assert_close(net.weight.detach(), before)  # untouched between pulls
        seen.append(net.weight[0, 0].item())
    torch.testing.assert_close(net.weight.detach(), average)  # after the last step: the average of step 10
    assert seen[-1] < seen[-2]
    restored = Lookahead(nn.Linear(2, 1, bias=False), total_steps=12)
    restored.load_state_dict(lookahead.state_dict())
    assert restored.steps == 12 and torch.equal(restored.average["weight"], lookahead.average["weight"])


def test_bn_parameters_get_their_own_group_at_64x_the_lr_decayed_by_the_same_share_per_step():
    net = create_model("resnet9w")
    norm = {id(p) for m in net.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    groups = parameter_groups(net, weight_decay=1e-3, lr=1.5, bn_scale=64)
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(id(p) for p in net.parameters())
    (bn,) = [g for g in groups if {id(p) for p in g["params"]} == norm]
    assert bn["lr"] == 96 and bn["lr"] * bn["weight_decay"] == pytest.approx(1.5e-3)
    assert all(g["lr"] == 1.5 for g in groups if g is not bn)
    assert len(parameter_groups(net, weight_decay=1e-3, lr=1.5)) == 2  # other recipes: the groups of old runs


def test_the_airbench_schedule_rises_from_a_fifth_to_the_peak_then_falls_to_7_percent_at_fixed_momentum():
    optimizer = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=1.5, momentum=0.85, nesterov=True)
    scheduler = build_scheduler(RECIPES["airbench"], optimizer, 100)
    lrs, momenta = [], set()
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        momenta.add(optimizer.param_groups[0]["momentum"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.3) and max(lrs) == pytest.approx(1.5)
    assert lrs.index(max(lrs)) == 22 and lrs[-1] == pytest.approx(1.5 * 0.07)
    assert momenta == {0.85}


def test_an_airbench_run_trains_resnet9w_and_resumes_exactly_with_its_lookahead(tiny_fashion, tmp_path):
    def config(out):
        return TrainConfig(
            dataset="fashion-mnist",
            data_dir=str(tiny_fashion),
            recipe="airbench",
            epochs=2,
            batch_size=32,
            out=str(out),
            quiet=True,
            seed=3,
            subset=128,
        )

    summary = train(config(tmp_path / "straight"))
    assert summary["model"] == "resnet9w" and summary["recipe"] == "airbench"
    straight = load_checkpoint(tmp_path / "straight" / "last.pt").train_state
    assert straight["lookahead"]["steps"] == 8

    def interrupt_after_first_epoch(row, model):
        if row["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted):
        train(config(tmp_path / "resumed"), on_epoch=interrupt_after_first_epoch)
    resumed_config, state = resume_config(tmp_path / "resumed")
    assert state["lookahead"]["steps"] == 4
    train(resumed_config, resume_state=state)
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt").train_state
    for name, weights in straight["model"].items():
        torch.testing.assert_close(resumed["model"][name], weights, rtol=0, atol=0, msg=name)


def test_a_model_too_small_for_its_images_is_one_sentence(tiny_fashion, tmp_path, capsys):
    from resnetlab.cli import main

    code = main(
        [
            "train",
            "--data-dir",
            str(tiny_fashion),
            "--model",
            "resnet9w",
            "--image-size",
            "12",
            "--subset",
            "64",
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "at least 16 pixels" in err and "Traceback" not in err


def test_test_time_translation_averages_the_image_and_its_copies_moved_one_pixel_with_the_edge_reflected():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 5 * 6, 4))  # sees where every pixel is
    images = torch.randint(0, 256, (2, 3, 5, 6), dtype=torch.uint8)
    plain = PixelClassifier(net, [0.5] * 3, [0.25] * 3)
    x = plain.prepare(images)
    # moved one pixel down and right: row i shows row i-1 of the image, the first row shows row 1 (reflected)
    down_right = x[:, :, [1, 0, 1, 2, 3]][:, :, :, [1, 0, 1, 2, 3, 4]]
    up_left = x[:, :, [1, 2, 3, 4, 3]][:, :, :, [1, 2, 3, 4, 5, 4]]
    expected = net(x) / 2 + (net(down_right) + net(up_left)) / 4
    with torch.no_grad():
        torch.testing.assert_close(PixelClassifier(net, [0.5] * 3, [0.25] * 3, translate=True)(images), expected)
        both = PixelClassifier(net, [0.5] * 3, [0.25] * 3, flip=True, translate=True)(images)
        mirrored = sum(w * (net(v) + net(v.flip(3))) / 2 for w, v in ((0.5, x), (0.25, down_right), (0.25, up_left)))
        torch.testing.assert_close(both, mirrored)
