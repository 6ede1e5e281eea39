"""The layout holds: one-way imports, short functions, the model card as the only reader of card fields, and one
preprocessing path that every command shares."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import resnetlab
from resnetlab.cli import main

PACKAGE = Path(resnetlab.__file__).parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))
FP32 = ["--device", "cpu", "--precision", "fp32"]


def _own_imports(path: Path) -> set[str]:
    """The resnetlab modules a module imports, at any depth (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module.split(".")[0]} if node.module else {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("resnetlab."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("resnetlab.")}
    return found & set(MODULES)


def import_order() -> list[str]:
    """The modules in an order where each comes after everything it imports; fails on a cycle."""
    graph = {name: _own_imports(PACKAGE / f"{name}.py") for name in MODULES}
    order: list[str] = []
    while graph:
        ready = sorted(name for name, deps in graph.items() if deps <= set(order))
        assert ready, f"import cycle among: {sorted(graph)}"
        order += ready
        for name in ready:
            del graph[name]
    return order


def _reach(name: str) -> set[str]:
    """Every resnetlab module that importing `name` imports."""
    seen, pending = set(), [name]
    while pending:
        for dep in _own_imports(PACKAGE / f"{pending.pop()}.py") - seen:
            seen.add(dep)
            pending.append(dep)
    return seen


def test_imports_go_one_way_with_no_cycle():
    import_order()  # fails on a cycle
    # The layers of docs/architecture.md: nothing reaches up into a layer above it.
    assert _reach("models") == set() and _reach("config") == {"errors"}
    assert not _reach("card") & {"preprocess", "batches", "data", "checkpoint"}
    assert not _reach("data") & {"checkpoint", "metrics", "engine", "inference"}
    assert not _reach("plots")
    assert not _reach("engine") & {"inference", "export", "explain", "experiments", "serve", "redraw", "cli"}
    assert not _reach("inference") & {"engine", "recorder", "export", "explain", "serve", "cli"}
    for top in ("export", "explain", "experiments", "serve", "redraw"):
        assert "cli" not in _reach(top)


def test_every_module_imports_alone_in_dependency_order():
    code = f"import importlib\nfor name in {import_order()!r}:\n    importlib.import_module('resnetlab.' + name)\n"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("command", ["datasets", "models"])
def test_listing_commands_do_not_load_the_training_stack(command):
    code = (
        f"import sys\nfrom resnetlab.cli import main\nassert main([{command!r}]) == 0\n"
        "print(sorted(m for m in sys.modules if m.startswith('resnetlab.')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    loaded = {m.split(".")[1] for m in json.loads(result.stdout.splitlines()[-1].replace("'", '"'))}
    assert "cli" in loaded
    assert not loaded & {"engine", "export", "serve", "inference", "recorder", "experiments"}, loaded


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > 80:
                    long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long


CARD_FIELDS = {
    "classes",
    "mean",
    "std",
    "image_size",
    "in_channels",
    "test_time_flip",
    "test_time_translate",
    "data_dir",
}


def test_checkpoint_fields_are_read_through_the_model_card_only():
    readers = []
    for path in PACKAGE.glob("*.py"):
        if path.name == "card.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            key = None
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                key = node.slice.value
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", "") == "get"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                key = node.args[0].value
            if key in CARD_FIELDS:
                readers.append(f"{path.name}:{node.lineno} reads {key!r}")
    assert not readers


def test_predict_and_folder_training_accept_the_same_suffixes(tmp_path):
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from resnetlab.folder import list_split
    from resnetlab.imagefiles import expand_image_paths, image_suffixes

    assert set(IMG_EXTENSIONS) <= set(image_suffixes())
    folder = tmp_path / "data" / "train" / "a"
    folder.mkdir(parents=True)
    image = Image.new("L", (8, 8), 128)
    for suffix in (".png", ".JPG", ".gif", ".pbm", ".webp", ".tiff", ".txt"):
        image.save(
            folder / f"x{suffix}",
            format={".JPG": "JPEG", ".txt": "PNG", ".tiff": "TIFF", ".pbm": "PPM"}.get(suffix, suffix[1:].upper()),
        )
    for_predict = {p.name for p in expand_image_paths([str(folder)])}
    for_training = {Path(p).name for p, _ in list_split(tmp_path / "data", train=True)[1]}
    assert for_predict == for_training == {"x.png", "x.JPG", "x.pbm", "x.webp", "x.tiff"}


def test_predicting_thousands_of_files_runs_in_chunks(trained_run, tmp_path, capsys, monkeypatch):
    """5,000 image files: decoded and classified a chunk at a time, never all at once."""
    from resnetlab.inference import PredictorBase

    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5000):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / f"{i:04d}.png", compress_level=0)
    decoded_at_once = []
    real_decode = PredictorBase.decode_files
    monkeypatch.setattr(
        PredictorBase,
        "decode_files",
        lambda self, paths: (decoded_at_once.append(len(paths)), real_decode(self, paths))[1],
    )
    assert main(["predict", str(trained_run), str(folder), "--json", *FP32]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5000 and json.loads(lines[-1])["file"].endswith("4999.png")
    assert max(decoded_at_once) == PredictorBase.chunk_size < 5000 and sum(decoded_at_once) == 5000


def test_every_command_gives_the_same_probabilities_for_the_same_image(trained_run, tmp_path, capsys):
    """eval (the dataset path), predict on files, the training loop's evaluation, ONNX, TorchScript, explain and
    serve: one preprocessing path, so one set of probabilities, within 1e-5."""
    pytest.importorskip("onnxruntime")
    from fakedata import pattern_images

    from resnetlab.engine import predict_logits
    from resnetlab.explain import explain_checkpoint
    from resnetlab.export import load_torchscript
    from resnetlab.inference import OnnxPredictor, TorchPredictor
    from resnetlab.preprocess import PixelClassifier
    from resnetlab.runtime import select_runtime

    predictor = TorchPredictor.from_checkpoint(trained_run, "cpu", "fp32")
    data = predictor.load_test_data(limit=6)
    paths = []
    for i, image in enumerate(list(data.images[:, 0].numpy()) + list(pattern_images(np.array([1, 4]), 50, 3))):
        paths.append(tmp_path / f"{i}.png")  # test images at their own size, and larger RGB ones to resize
        Image.fromarray(image).save(paths[-1])
    images = predictor.decode_files(paths)
    assert torch.equal(images[:6], data.images)
    reference = predictor.probabilities(images)

    from resnetlab.batches import ImageData, TensorBatches

    unfolded = PixelClassifier.from_card(predictor.checkpoint.build_model(), predictor.card)  # as training evaluates
    batches = TensorBatches(ImageData(images, torch.zeros(len(images), dtype=torch.long), []), 3)
    got = {"training loop": predict_logits(unfolded, batches, select_runtime("cpu", "fp32"))[0].softmax(1)}
    for fmt, name in (("onnx", "m.onnx"), ("torchscript", "m.torchscript.pt")):
        assert main(["export", str(trained_run), "--format", fmt, "-o", str(tmp_path / name), "--json"]) == 0
    capsys.readouterr()
    got["onnx"] = OnnxPredictor.from_file(tmp_path / "m.onnx").probabilities(images)
    module, _ = load_torchscript(tmp_path / "m.torchscript.pt")
    with torch.no_grad():
        got["torchscript"] = module(images)[1]
    for name, probabilities in got.items():
        assert (probabilities - reference).abs().max() <= 1e-5, name

    assert main(["predict", str(trained_run), *map(str, paths), "--json", "--top", "10", *FP32]) == 0
    predicted = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for row, expected in zip(predicted, reference):
        top = {t["class"]: t["probability"] for t in row["top"]}
        assert max(abs(top[c] - float(p)) for c, p in zip(predictor.classes, expected)) <= 1e-5

    explanation = explain_checkpoint(trained_run, [str(p) for p in paths], device="cpu")
    torch.testing.assert_close(torch.tensor(explanation.confidence), reference.max(1).values, atol=1e-5, rtol=0)

    from liveserver import running

    from resnetlab.serve import create_app

    with running(create_app(predictor)) as live:
        for path, expected in zip(paths, reference):
            reply = live.post_image(path.read_bytes(), "/predict?top=10").json()
            top = {t["class"]: t["probability"] for t in reply["top"]}
            assert max(abs(top[c] - float(p)) for c, p in zip(predictor.classes, expected)) <= 1e-5
