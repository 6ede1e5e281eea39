import csv
import io
from contextlib import redirect_stdout

import pytest
from fakedata import write_mnist_like
from PIL import Image

from resnetlab.checkpoint import load_checkpoint
from resnetlab.cli import main
from resnetlab.config import RECIPES, TrainConfig
from resnetlab.engine import train
from resnetlab.experiments import degradation_config, markdown_table, read_csv
from resnetlab.models import create_model

NETS = ["plain20", "resnet20", "plain32", "resnet32"]


def _printed(args: list[str]) -> str:
    """What `resnetlab ARGS` prints; it must succeed."""
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        assert main(args) == 0
    return stdout.getvalue()


def _args(data, out, *extra):
    return [
        "experiment",
        "degradation",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        str(data),
        "--depths",
        "20,32",
        "--epochs",
        "2",
        "--subset",
        "32",
        "--test-subset",
        "20",
        "--train-eval-size",
        "16",
        "--batch-size",
        "16",
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def degradation_run(tmp_path_factory):
    """One tiny degradation experiment, shared by the tests below; returns (data dir, out dir, stdout)."""
    base = tmp_path_factory.mktemp("degradation")
    write_mnist_like(base / "data", "FashionMNIST", n_train=200, n_test=60)
    return base / "data", base / "out", _printed(_args(base / "data", base / "out"))


def test_degradation_writes_its_files(degradation_run):
    _, out, _ = degradation_run
    assert {"degradation.png", "degradation.csv", "degradation.md", *NETS} <= {p.name for p in out.iterdir()}
    for net in NETS:
        assert {"best.pt", "last.pt", "metrics.csv", "summary.json", "degradation.json"} <= {
            p.name for p in (out / net).iterdir()
        }
    with Image.open(out / "degradation.png") as picture:
        assert picture.size[0] > 600


def test_degradation_csv_has_one_row_per_net_and_epoch(degradation_run):
    _, out, _ = degradation_run
    rows = read_csv(out / "degradation.csv")
    assert [(r["net"], r["epoch"]) for r in rows] == [(net, e) for net in NETS for e in (1, 2)]
    assert {r["kind"] for r in rows if r["net"].startswith("plain")} == {"plain"}
    assert {r["kind"] for r in rows if r["net"].startswith("resnet")} == {"residual"}
    for r in rows:
        assert 0 <= r["train_error"] <= 1 and 0 <= r["test_error"] <= 1 and 0 <= r["train_error_augmented"] <= 1
        # The training error is measured on 16 images: a whole number of them.
        assert (r["train_error"] * 16) == pytest.approx(round(r["train_error"] * 16), abs=1e-3)
    # The test error is the run's own, from its metrics.csv.
    with open(out / "resnet32" / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    assert rows[-1]["test_error"] == pytest.approx(1 - float(last["test_accuracy"]), abs=1e-6)


def test_degradation_table_has_a_row_per_net_and_is_printed(degradation_run):
    _, out, stdout = degradation_run
    table = (out / "degradation.md").read_text()
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| net | layers | parameters | training error | test error |")
    assert [line.split("|")[1].strip() for line in lines[1:]] == ["plain20", "plain32", "resnet20", "resnet32"]
    assert "plain32 ends with" in table and "resnet32 ends with" in table
    assert all(line in stdout for line in lines)
    assert markdown_table(read_csv(out / "degradation.csv")).count("\n") == 5


def test_degradation_reuses_finished_runs_and_refuses_to_replace_them(degradation_run, capsys):
    data, out, _ = degradation_run
    before = (out / "degradation.csv").read_text()
    assert main(_args(data, out)) == 0
    assert capsys.readouterr().out.count("reusing the finished run") == 4
    assert (out / "degradation.csv").read_text() == before
    # Other settings would replace the runs: only with --overwrite.
    assert main(_args(data, out, "--epochs", "1")) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("depths", ["20,57", "twenty", ","])
def test_degradation_refuses_depths_without_both_nets(tmp_path, capsys, depths):
    assert main(["experiment", "degradation", "--depths", depths, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--depths" in err and "Traceback" not in err


def test_full_is_the_papers_cifar10_setting():
    config = degradation_config(full=True)
    assert (config.dataset, config.epochs, config.subset, config.recipe) == ("cifar10", 164, None, "paper")
    assert config.depths == (20, 32, 44, 56) and config.batch_size is None  # the recipe's 128
    recipe = RECIPES["paper"]
    assert (recipe.lr, recipe.batch_size, recipe.momentum, recipe.weight_decay) == (0.1, 128, 0.9, 1e-4)
    assert recipe.schedule == "step" and recipe.milestones == (0.5, 0.75)
    # 164 epochs of 390 steps: the lr drops at 32k and 48k steps, as in the paper.
    assert [round(f * 164 * 390) for f in recipe.milestones] == [31980, 47970]
    assert degradation_config(full=True, epochs=2).epochs == 2
    assert RECIPES["fast"].schedule == "onecycle"


def test_the_quick_budget_fits_without_augmentation_and_the_paper_budget_augments(capsys):
    from resnetlab.config import degradation_config

    assert RECIPES["paper"].augment is True
    assert degradation_config().train_config("plain20").augment is False  # as in the measured budget
    assert degradation_config(full=True).train_config("plain20").augment is True  # as in the paper
    assert degradation_config(augment=True).train_config("resnet20").augment is True  # the flag wins
    assert main(["experiment", "degradation", "--no-augment", "--depths", "7"]) == 2  # parsed, then refused
    assert "--no-augment" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "recipe, translate, mirror, tta",
    [
        ("fast", False, False, False),
        ("fast-flip", False, True, True),  # mirrors without translating (translation cost accuracy on Fashion-MNIST)
        ("paper", True, True, False),
    ],
)
def test_each_recipe_trains_with_its_augmentation(tiny_fashion, tmp_path, monkeypatch, recipe, translate, mirror, tta):
    import resnetlab.engine

    made = []

    class Spy(resnetlab.engine.TensorBatches):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(resnetlab.engine, "TensorBatches", Spy)
    config = TrainConfig(
        dataset="fashion-mnist",
        data_dir=str(tiny_fashion),
        model="resnet8w",
        epochs=1,
        batch_size=8,
        subset=16,
        test_subset=10,
        recipe=recipe,
        out=str(tmp_path / "run"),
        quiet=True,
    )
    train(config)
    batches = made[0]  # the training batches; the test batches come second
    assert (batches.augment and batches.crop_padding > 0, batches.augment and batches.hflip) == (translate, mirror)
    assert load_checkpoint(tmp_path / "run" / "best.pt").card.test_time_flip is tta


def test_the_paper_recipe_divides_the_lr_by_10_at_half_and_three_quarters(tiny_fashion, tmp_path):
    config = TrainConfig(
        dataset="fashion-mnist",
        data_dir=str(tiny_fashion),
        model="resnet20",
        epochs=4,
        batch_size=8,
        subset=16,
        test_subset=10,
        recipe="paper",
        out=str(tmp_path / "run"),
        quiet=True,
    )
    train(config)
    with open(tmp_path / "run" / "metrics.csv") as f:
        lrs = [float(row["lr"]) for row in csv.DictReader(f)]
    peak = 0.1 * 8 / 128  # the recipe's lr, scaled with the batch size
    # Two steps per epoch, and metrics.csv has the lr of each epoch's last step: steps 1-4 (the first half of
    # 8) run at the peak, steps 5-6 at a tenth of it, steps 7-8 at a hundredth.
    assert lrs == pytest.approx([peak, peak, peak / 10, peak / 100])


# The gradients experiment: tiny batches of a tiny Fashion-MNIST; depth 18 has projection shortcuts, 20 has none.


@pytest.fixture(scope="module")
def gradients_run(tmp_path_factory):
    """One tiny gradients experiment; returns (data dir, out dir, stdout)."""
    base = tmp_path_factory.mktemp("gradients")
    write_mnist_like(base / "data", "FashionMNIST", n_train=100, n_test=20)
    printed = _printed(
        [
            "experiment",
            "gradients",
            "--data-dir",
            str(base / "data"),
            "--depths",
            "18,20",
            "--batches",
            "2",
            "--batch-size",
            "8",
            "--device",
            "cpu",
            "--out",
            str(base / "out"),
        ]
    )
    return base / "data", base / "out", printed


def _csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _by_net(rows):
    nets = {}
    for row in rows:
        nets.setdefault(row["net"], []).append(row)
    return nets


def test_gradients_has_a_row_per_conv_layer_and_the_classifier_of_each_net(gradients_run):
    from torch import nn

    from resnetlab.models import create_model

    _, out, _ = gradients_run
    nets = _by_net(_csv_rows(out / "gradients.csv"))
    assert list(nets) == ["plain18", "resnet18", "plain20", "resnet20"]
    for net, rows in nets.items():
        weighted = [m for m in create_model(net, 10, 1).modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert [int(r["layer"]) for r in rows] == list(range(1, len(weighted) + 1))
        assert rows[0]["name"] == "conv1" and rows[-1]["name"] == "fc"
        assert all(0 < float(r["grad_norm"]) < float("inf") for r in rows)
    with Image.open(out / "gradients.png") as picture:
        assert picture.size[0] > 600


def test_gradients_plain_and_residual_nets_differ_only_by_their_shortcut_layers(gradients_run):
    _, out, _ = gradients_run
    names = {net: [r["name"] for r in rows] for net, rows in _by_net(_csv_rows(out / "gradients.csv")).items()}
    assert names["plain20"] == names["resnet20"]  # option A: shortcuts without weights
    assert [n for n in names["resnet18"] if "downsample" not in n] == names["plain18"]
    assert len(names["resnet18"]) - len(names["plain18"]) == 3  # a projection where each of 3 stages widens


def test_gradients_are_those_of_the_loss_on_the_same_images_and_weights(gradients_run):
    """Each norm, computed again by hand: same seed, same images, batch by batch, averaged."""
    import torch
    import torch.nn.functional as F

    from resnetlab.data import load_train_test
    from resnetlab.experiments import fresh_network
    from resnetlab.preprocess import normalize

    data_dir, out, _ = gradients_run
    reported = [float(r["grad_norm"]) for r in _by_net(_csv_rows(out / "gradients.csv"))["resnet20"]]
    train_data, _ = load_train_test("fashion-mnist", data_dir, subset=16, seed=0)
    torch.manual_seed(0)
    model = create_model("resnet20", 10, 1).to(memory_format=torch.channels_last).train()
    weights = [m.weight for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    norms = torch.zeros(len(weights), dtype=torch.float64)
    mean, std = torch.tensor(train_data.mean), torch.tensor(train_data.std)
    for start in (0, 8):
        model.zero_grad()
        x = normalize(train_data.images[start : start + 8], mean, std).contiguous(memory_format=torch.channels_last)
        F.cross_entropy(model(x), train_data.labels[start : start + 8]).backward()
        norms += torch.stack([w.grad.double().norm() for w in weights]) / 2
    assert reported == pytest.approx(norms.tolist(), rel=1e-4)
    # plainD and resnetD start from the same weights: only the shortcuts differ.
    plain, residual = fresh_network("plain20", 10, 1, 0).state_dict(), fresh_network("resnet20", 10, 1, 0).state_dict()
    assert plain.keys() == residual.keys() and all(torch.equal(plain[k], residual[k]) for k in plain)


def test_gradients_verdict_is_computed_from_the_norms(gradients_run):
    from resnetlab.experiments import gradients_verdict

    _, out, stdout = gradients_run
    for net, rows in _by_net(_csv_rows(out / "gradients.csv")).items():
        first, last = float(rows[0]["grad_norm"]), float(rows[-2]["grad_norm"])
        assert f"{net}: the first conv layer's gradient norm is {first:.3g}, the last conv layer's {last:.3g}" in stdout
    # Made-up norms say what they show: a first layer 1000x below the last conv layer's is vanishing.
    rows = [
        {"net": "plain56", "name": name, "grad_norm": norm}
        for name, norm in (("conv1", 1e-4), ("layer3.8.conv2", 0.1), ("fc", 1.0))
    ]
    verdict = gradients_verdict(rows)
    assert "0.001 times as large" in verdict and "shrinks" in verdict and "In plain56 the first layer's" in verdict


@pytest.mark.parametrize("flags, flag", [(["--depths", "21"], "--depths"), (["--batches", "0"], "--batches")])
def test_gradients_refuses_what_it_cannot_do_in_one_sentence(tmp_path, capsys, flags, flag):
    assert main(["experiment", "gradients", *flags, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# The responses experiment, on the degradation experiment's tiny runs (a run folder or a checkpoint file).


@pytest.fixture(scope="module")
def responses_run(degradation_run):
    """responses of the four nets of degradation_run; returns (data dir, checkpoints, out dir, stdout)."""
    data, runs, _ = degradation_run
    checkpoints = [runs / "plain20", runs / "resnet20", runs / "plain32", runs / "resnet32" / "best.pt"]
    printed = _printed(
        ["experiment", "responses", *map(str, checkpoints), "--device", "cpu", "--out", str(runs.parent / "responses")]
    )
    return data, checkpoints, runs.parent / "responses", printed


def test_responses_has_a_row_per_3x3_convolution_of_the_blocks(responses_run):
    from torch import nn

    _, checkpoints, out, _ = responses_run
    nets = _by_net(_csv_rows(out / "responses.csv"))
    assert list(nets) == NETS
    for net, checkpoint in zip(NETS, checkpoints):
        model = load_checkpoint(checkpoint).build_model()
        convs_3x3 = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
        assert len(nets[net]) == len(convs_3x3) - 1 == 6 * ((int(net[-2:]) - 2) // 6)  # all but the stem
        assert [int(r["layer"]) for r in nets[net]] == list(range(1, len(convs_3x3)))
        assert all(0 < float(r["response_std"]) < float("inf") for r in nets[net])
    with Image.open(out / "responses.png") as picture:
        assert picture.size[1] > 600  # two panels, one above the other


def test_responses_are_the_std_of_the_bn_output_before_relu_and_addition(responses_run):
    """Two layers' std computed again by hand, with a hook on the BN after the 3x3 convolution: bn1 (a ReLU
    runs in place on its output) and bn2 (the shortcut is added to its output)."""
    import torch

    from resnetlab.data import load_split
    from resnetlab.preprocess import normalize

    data_dir, checkpoints, out, _ = responses_run
    reported = {r["name"]: float(r["response_std"]) for r in _by_net(_csv_rows(out / "responses.csv"))["resnet32"]}
    checkpoint = load_checkpoint(checkpoints[3])
    model = checkpoint.build_model()
    seen = {}
    for name, bn in (("layer1.0.conv1", model.layer1[0].bn1), ("layer2.1.conv2", model.layer2[1].bn2)):
        bn.register_forward_hook(lambda module, inputs, output, name=name: seen.update({name: output.clone()}))
    test = load_split("fashion-mnist", data_dir, train=False)  # 60 images: all of them under --test-subset 1000
    with torch.no_grad():
        model(normalize(test.images, torch.tensor(checkpoint.card.mean), torch.tensor(checkpoint.card.std)))
    for name, output in seen.items():
        assert reported[name] == pytest.approx(output.double().std().item(), rel=1e-4)
        assert (output < 0).any()  # before the ReLU


def test_responses_prints_each_nets_mean_and_what_the_means_show(responses_run):
    from resnetlab.experiments import responses_verdict

    _, _, out, stdout = responses_run
    means = {
        net: sum(float(r["response_std"]) for r in rows) / len(rows)
        for net, rows in _by_net(_csv_rows(out / "responses.csv")).items()
    }
    for net, mean in means.items():
        assert f"{net}: mean response std {mean:.3f}" in stdout
    for net, other in (("resnet20", "plain20"), ("resnet32", "plain32"), ("resnet32", "resnet20")):
        change = "smaller" if means[net] < means[other] else "larger"
        assert f"{net}'s responses are {change} than {other}'s" in stdout
    # Made-up means that contradict the paper are reported as they are.
    verdict = responses_verdict({"plain20": 0.5, "resnet20": 0.8, "resnet56": 0.9})
    assert "resnet20's responses are larger than plain20's" in verdict
    assert "resnet56's responses are larger than resnet20's" in verdict


def test_responses_of_a_missing_checkpoint_is_one_sentence(responses_run, tmp_path, capsys):
    _, checkpoints, _, _ = responses_run
    missing = tmp_path / "runs" / "plain56"
    assert main(["experiment", "responses", str(checkpoints[0]), str(missing), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("experiment, default", [("gradients", "(default: 56)"), ("responses", "(default: 1000)")])
def test_the_new_experiments_explain_their_flags(capsys, experiment, default):
    with pytest.raises(SystemExit) as exit_info:
        main(["experiment", experiment, "--help"])
    assert exit_info.value.code == 0
    assert default in " ".join(capsys.readouterr().out.split())
