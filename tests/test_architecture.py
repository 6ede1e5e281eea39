"""The layout holds: one-way imports, short functions, the model card as the only reader of card fields, and one
preprocessing path that every command shares."""

import ast
import json
import re
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
ARCHITECTURE_MD = Path(__file__).parent.parent / "docs" / "architecture.md"
FP32 = ["--device", "cpu", "--precision", "fp32"]

# The layers of src/resnetlab, top to bottom, as the diagram of docs/architecture.md draws them. A module imports
# only from the layers below its own (imports inside functions count the same), or from its own layer where
# ALLOWED_SAME_LAYER lists the pair. The package's __init__ (its version) and __main__ (python -m resnetlab) stand
# outside the layers.
LAYERS: list[set[str]] = [
    {"cli"},
    {"check", "evaluation", "explain", "experiments", "export", "plotting", "prediction", "seeds", "serve", "sorting"},
    {"inference"},
    {"engine"},
    {"job", "recorder", "stopping", "transfer"},
    {"checkpoint", "confidence", "formats", "metrics"},
    {"batches", "data", "folder", "imagecache"},
    {"onnxlight", "screen"},
    {"imagefiles", "preprocess"},
    {"card"},
    {"answers", "config", "distributed", "models", "plots", "runtime", "tensorboard_log"},
    {"errors"},
]
# (importer, imported) within one layer.
ALLOWED_SAME_LAYER: set[tuple[str, str]] = {
    ("serve", "explain"),  # the web page's Grad-CAM
    ("recorder", "job"),  # the files of a run record its Job
    ("data", "batches"),  # every dataset loads into ImageData
    ("data", "folder"),  # --dataset folder
    ("folder", "batches"),
    ("folder", "imagecache"),  # a folder is decoded once, into the cache
    ("imagefiles", "preprocess"),  # the decoder resizes as preprocessing does
}


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


IMPORTS = {name: _own_imports(PACKAGE / f"{name}.py") for name in MODULES}


def import_order() -> list[str]:
    """The modules in an order where each comes after everything it imports; fails on a cycle."""
    graph = dict(IMPORTS)
    order: list[str] = []
    while graph:
        ready = sorted(name for name, deps in graph.items() if deps <= set(order))
        assert ready, f"import cycle among: {sorted(graph)}"
        order += ready
        for name in ready:
            del graph[name]
    return order


def _depth(layers: list[set[str]]) -> dict[str, int]:
    """Each module's layer, counted from the top (0: cli)."""
    return {name: i for i, layer in enumerate(layers) for name in layer}


def _where_to_put(name: str, imports: dict[str, set[str]], layers: list[set[str]]) -> str:
    """What to add where, for a module in no layer: the layer right above the highest one it imports from."""
    depth = _depth(layers)
    below = min((depth[dep] for dep in imports[name] if dep in depth), default=len(layers))
    users = sorted(user for user, deps in imports.items() if name in deps)
    if below == 0 or any(depth.get(user, -1) >= below - 1 for user in users):
        above = (
            f"right above the one with {', '.join(sorted(layers[below]))}" if below < len(layers) else "at the bottom"
        )
        where = f"a new layer of its own in LAYERS, {above},"
    else:
        where = f"the layer of LAYERS with {', '.join(sorted(layers[below - 1]))}"
    return (
        f"{name}.py is in no layer: add {name!r} to {where} in tests/test_architecture.py, right above everything "
        f"it imports ({', '.join(sorted(imports[name])) or 'nothing'}) and below what imports it "
        f"({', '.join(users) or 'nothing yet'}), and to that layer's line of the diagram in docs/architecture.md"
    )


def layer_problems(imports: dict[str, set[str]], layers: list[set[str]], allowed: set[tuple[str, str]]) -> list[str]:
    """Modules in no layer or in two, and imports that neither go down a layer nor are an allowed same-layer pair."""
    placed = [name for layer in layers for name in layer]
    problems = [
        f"{name!r} is in more than one layer of LAYERS" for name in sorted(set(placed)) if placed.count(name) > 1
    ]
    problems += [f"{name!r} is in LAYERS but there is no {name}.py" for name in sorted(set(placed) - imports.keys())]
    problems += [_where_to_put(name, imports, layers) for name in sorted(imports.keys() - set(placed))]
    depth = _depth(layers)
    for name, deps in sorted(imports.items()):
        for dep in sorted(deps):
            if name not in depth or dep not in depth or depth[dep] > depth[name] or (name, dep) in allowed:
                continue
            where = (
                "its own layer (or add the pair to ALLOWED_SAME_LAYER)"
                if depth[dep] == depth[name]
                else "a layer above"
            )
            problems.append(f"{name} imports {dep}, from {where}")
    for name, dep in sorted(allowed):
        if dep not in imports.get(name, set()) or depth.get(name) != depth.get(dep):
            problems.append(f"ALLOWED_SAME_LAYER lists {name} -> {dep}, which is no import within one layer")
    return problems


def test_every_module_is_in_one_layer_and_every_import_goes_down_or_is_allowed():
    assert not layer_problems(IMPORTS, LAYERS, ALLOWED_SAME_LAYER), "\n".join(
        layer_problems(IMPORTS, LAYERS, ALLOWED_SAME_LAYER)
    )
    import_order()  # fails on a cycle (possible only among the allowed same-layer pairs)


def test_the_package_and_its_entry_point_stand_outside_the_layers():
    assert _own_imports(PACKAGE / "__init__.py") == set()
    assert _own_imports(PACKAGE / "__main__.py") == {"cli"}


def test_a_new_module_in_no_layer_or_an_import_reaching_up_fails():
    graph = {**IMPORTS, "audit": {"data", "errors", "folder"}, "cli": IMPORTS["cli"] | {"audit"}}
    assert layer_problems(graph, LAYERS, ALLOWED_SAME_LAYER) == [
        "audit.py is in no layer: add 'audit' to the layer of LAYERS with checkpoint, confidence, formats, metrics in "
        "tests/test_architecture.py, right above everything it imports (data, errors, folder) and below what "
        "imports it (cli), and to that layer's line of the diagram in docs/architecture.md"
    ]
    graph = {**IMPORTS, "audit": {"inference"}, "serve": IMPORTS["serve"] | {"audit"}}
    assert layer_problems(graph, LAYERS, ALLOWED_SAME_LAYER)[0].startswith(
        "audit.py is in no layer: add 'audit' to a new layer of its own in LAYERS, right above the one with "
        "inference, in tests/test_architecture.py"
    )
    graph = {**IMPORTS, "models": {"engine"}, "folder": IMPORTS["folder"] | {"data"}}
    assert layer_problems(graph, LAYERS, ALLOWED_SAME_LAYER) == [
        "folder imports data, from its own layer (or add the pair to ALLOWED_SAME_LAYER)",
        "models imports engine, from a layer above",
    ]
    assert layer_problems(IMPORTS, LAYERS, ALLOWED_SAME_LAYER | {("card", "models")}) == [
        "ALLOWED_SAME_LAYER lists card -> models, which is no import within one layer"
    ]


def test_cli_has_no_tensor_code():
    """It parses and dispatches: every command's work lives in a module below it, so cli.py imports no torch."""
    imported = set()
    for node in ast.walk(ast.parse((PACKAGE / "cli.py").read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & {"torch", "torchvision", "numpy"}, imported


def diagram_layers(markdown: str) -> list[set[str]]:
    """The layers the first diagram of a markdown file draws: lines of module names (each followed by two spaces
    or more and what they do), a line holding only | between one layer and the next."""
    diagram = markdown.split("```\n")[1]
    layers: list[set[str]] = [set()]
    for line in diagram.splitlines():
        if line.strip() == "|":
            layers.append(set())
        elif line.strip():
            layers[-1] |= set(re.split(r"\s{2,}", line.strip(), maxsplit=1)[0].split())
    return layers


def test_the_diagram_of_docs_architecture_md_draws_these_layers():
    text = ARCHITECTURE_MD.read_text()
    drawn = diagram_layers(text)
    assert drawn == LAYERS, "the diagram should have, top to bottom, one line (or more) per layer:\n" + "\n |\n".join(
        " ".join(sorted(layer)) for layer in LAYERS
    )
    assert set(re.findall(r"`(\w+) -> (\w+)`", text)) == ALLOWED_SAME_LAYER


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
    """eval (the dataset path), predict on files, the training loop's evaluation, every export format, explain
    and serve: one preprocessing path, so one set of probabilities, within 1e-5."""
    pytest.importorskip("onnxruntime")
    from fakedata import pattern_images

    from resnetlab.engine import predict_logits
    from resnetlab.explain import explain_checkpoint
    from resnetlab.formats import EXPORT_FORMATS
    from resnetlab.inference import TorchPredictor, open_predictor
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
    logits = predict_logits(unfolded, batches, select_runtime("cpu", "fp32"))[0]
    got = {"training loop": (logits / predictor.card.temperature).softmax(1)}  # the card's calibrated softmax
    for fmt in EXPORT_FORMATS.values():  # every export format, each file run by its own loader
        path = tmp_path / fmt.file_name("m")
        assert main(["export", str(trained_run), "--format", fmt.name, "-o", str(path), "--json"]) == 0
        got[fmt.name] = open_predictor(path, "cpu").probabilities(images)
    capsys.readouterr()
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
