"""Adding a model, a recipe and an export format (docs/architecture.md, "Adding things"): its worked examples run as
printed, every `module.NAME` it gives exists, and a toy of each, added at run time, carries one model through
train, eval, export, and predict and eval of the exported file."""

import importlib
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_export import WEIGHTS, _json_lines, _same_predictions, _write_images
from test_models import add_tiny_model
from test_recipes import ADAMW_COSINE

from resnetlab import config, formats, models
from resnetlab.card import ModelCard
from resnetlab.checkpoint import load_checkpoint
from resnetlab.cli import main
from resnetlab.engine import build_optimizer, build_scheduler, parameter_groups
from resnetlab.preprocess import ExportedClassifier, PixelClassifier

ARCHITECTURE_MD = Path(__file__).parent.parent / "docs" / "architecture.md"
MODULES = {p.stem for p in Path(models.__file__).parent.glob("*.py")}
FP32 = ["--device", "cpu", "--precision", "fp32"]


def worked_examples() -> list[tuple[str, str]]:
    """(module, code) of each Python block of "Adding things": the module is the last src/resnetlab/X.py named
    before the block."""
    section = ARCHITECTURE_MD.read_text().split("## Adding things", 1)[1]
    pieces = re.split(r"^```python\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)
    texts, blocks = pieces[0::2], pieces[1::2]
    return [(re.findall(r"src/resnetlab/(\w+)\.py", text)[-1], block) for text, block in zip(texts, blocks)]


def test_the_worked_examples_of_docs_architecture_md_run_as_printed(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "_MODELS", dict(models._MODELS))
    monkeypatch.setattr(config, "RECIPES", dict(config.RECIPES))
    monkeypatch.setattr(formats, "EXPORT_FORMATS", dict(formats.EXPORT_FORMATS))
    examples = worked_examples()
    assert [module for module, _ in examples] == ["models", "config", "formats"]
    for module, code in examples:
        namespace = dict(vars(importlib.import_module(f"resnetlab.{module}")))
        exec(compile(code, f"{ARCHITECTURE_MD} ({module}.py)", "exec"), namespace)

    net = models.create_model("resnet6t", num_classes=3, in_channels=1)
    assert "resnet6t" in models.list_models() and net(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    recipe = config.RECIPES["adamw-cosine"]
    optimizer = build_optimizer(recipe, parameter_groups(net, recipe.weight_decay, recipe.lr), recipe.lr)
    assert type(optimizer) is torch.optim.AdamW and build_scheduler(recipe, optimizer, 10) is not None

    fmt = formats.EXPORT_FORMATS["weights"]
    card = ModelCard("resnet6t", ("a", "b", "c"), 1, 8, (0.5,), (0.25,))
    module = ExportedClassifier(PixelClassifier.from_card(models.fold_batchnorm(net.eval()), card), card.temperature)
    module = module.eval()
    images = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    path = fmt.write(module, images, tmp_path / fmt.file_name("best"), card.to_dict())
    assert path.name == "best.weights.pt" and fmt.help == "weights runs with torch.load"
    assert torch.allclose(fmt.load(path, "cpu").run(images)[0], module(images)[0], atol=1e-5)


def test_every_module_name_that_docs_architecture_md_gives_exists():
    named = set(re.findall(r"`(\w+)\.(\w+)", ARCHITECTURE_MD.read_text()))
    named = {(module, name) for module, name in named if module in MODULES and name != "py"}
    assert len(named) > 10
    missing = [f"{m}.{n}" for m, n in sorted(named) if not hasattr(importlib.import_module(f"resnetlab.{m}"), n)]
    assert not missing, f"docs/architecture.md names what does not exist: {', '.join(missing)}"


def test_a_toy_model_recipe_and_format_added_at_run_time_train_evaluate_export_and_predict(
    tiny_fashion, tmp_path, monkeypatch, capsys
):
    add_tiny_model(monkeypatch, "toy")
    monkeypatch.setitem(config.RECIPES, "toy", replace(ADAMW_COSINE, name="toy"))
    monkeypatch.setitem(formats.EXPORT_FORMATS, "toy", replace(WEIGHTS, name="toy", title="toy", suffix=".toy.pt"))

    out = tmp_path / "run"
    argv = ["train", "--data-dir", str(tiny_fashion), "--model", "toy", "--recipe", "toy", "--epochs", "1"]
    assert main([*argv, "--subset", "64", "--out", str(out), *FP32]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["model"], summary["recipe"], summary["lr"]) == ("toy", "toy", ADAMW_COSINE.lr)
    assert "exp_avg_sq" in next(iter(load_checkpoint(out / "last.pt").train_state["optimizer"]["state"].values()))
    capsys.readouterr()

    assert main(["eval", str(out), "--json", "--save", str(tmp_path / "a.png"), *FP32]) == 0
    eager = json.loads(capsys.readouterr().out)
    assert eager["model"] == "toy"
    assert main(["export", str(out), "--format", "toy", "--json", "--check-images", "16"]) == 0
    report = json.loads(capsys.readouterr().out)
    exported = out / "best.toy.pt"  # the format's suffix, beside the checkpoint
    assert report["file"] == str(exported) and report["format"] == "toy" and report["metadata_ok"] is True

    images = _write_images(tmp_path / "images")
    assert main(["predict", str(out), str(images), "--json", *FP32]) == 0
    from_checkpoint = _json_lines(capsys)
    assert main(["predict", str(exported), str(images), "--json"]) == 0
    _same_predictions(_json_lines(capsys), from_checkpoint)
    assert main(["eval", str(exported), "--json", "--save", str(tmp_path / "b.png")]) == 0
    assert json.loads(capsys.readouterr().out)["test_loss"] == pytest.approx(eager["test_loss"], rel=1e-4)
