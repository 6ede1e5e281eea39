"""Export a checkpoint for other programs (ONNX or TorchScript), check it against eager PyTorch, and run an
exported ONNX model with onnxruntime.

The exported model takes what an image decoder gives: uint8 pixels [N, C, H, W] (0-255, grayscale or RGB
as the checkpoint says, already resized to image_size x image_size). Normalization with the training set's
mean and std, and the test-time flip where the checkpoint uses it, happen inside the exported graph, so a
caller cannot get them wrong. It returns two float32 [N, num_classes] outputs: logits and probabilities.

The checkpoint's description (class names, input size, channels, mean/std, ...) travels with the model:
as ONNX metadata_props (one key per field; lists and numbers JSON-encoded), or, for TorchScript, as the
extra file resnetlab.json inside the archive (read it with torch.jit.load(path, _extra_files=...)).
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .errors import UserError
from .inference import Predictor

FORMATS = ("onnx", "torchscript")
EXPORT_FORMAT = "resnetlab-export"
INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "probabilities")
TORCHSCRIPT_METADATA = "resnetlab.json"
# Metadata fields stored JSON-encoded in ONNX metadata_props; the other fields are plain strings.
_JSON_FIELDS = {
    "model",
    "classes",
    "num_classes",
    "in_channels",
    "image_size",
    "mean",
    "std",
    "test_time_flip",
    "version",
    "epoch",
    "best_test_accuracy",
}
# The check fails above this largest absolute difference of probabilities between the exported model and
# eager PyTorch (fp32, CPU). Both run the same fp32 graph; only the kernels' summation order differs. Measured
# on 1000 Fashion-MNIST test images with resnet20: ONNX Runtime 5.5e-7 (logits 2.9e-6), TorchScript 0. Real
# faults, measured on the same images: normalization left out 0.97, BatchNorm in training mode 0.29, a
# test-time flip added or dropped 0.29; even running the same model in bf16 moves them by 0.047. 1e-4 sits
# about 200x above the rounding and 500x below the smallest fault, and below the 0.1% that predict prints.
DEFAULT_TOLERANCE = 1e-4
# An int8 model cannot match fp32 to 1e-4, so it is checked on what a user sees: the share of check images whose
# top class it keeps. Measured on the 10,000 Fashion-MNIST test images with resnet8w (benchmarks/README.md):
# test accuracy 92.99% int8 against 92.97% fp32; without reduce_range (see quantize_int8) 91.88%.
INT8_MIN_AGREEMENT = 0.98
INT8_CALIBRATION_IMAGES = 1000


class ExportMismatch(UserError):
    """The exported model disagrees with the checkpoint beyond the tolerance."""

    exit_code = 1


class ExportedClassifier(nn.Module):
    """The model as exported: uint8 images [N, C, H, W] in; logits and probabilities out.

    The preprocessing is the one training and `predict` use (data.normalize), written out here so that it is
    traced into the graph.
    """

    def __init__(self, model: nn.Module, mean: list[float], std: list[float], flip: bool) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.flip = flip

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (images.float() / 255 - self.mean) / self.std
        logits = self.model(x)
        if self.flip:
            logits = (logits + self.model(x.flip(3))) / 2
        return logits, logits.softmax(1)


def describe(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What an exported model carries about itself: enough to prepare its input and name its output. The keys
    that a checkpoint also has mean the same here (model is the checkpoint's model description)."""
    return {
        "format": EXPORT_FORMAT,
        "version": 1,
        "model": dict(checkpoint["model"]),
        "num_classes": len(checkpoint["classes"]),
        "classes": list(checkpoint["classes"]),
        "in_channels": checkpoint["in_channels"],
        "image_size": checkpoint["image_size"],
        "mean": list(checkpoint["mean"]),
        "std": list(checkpoint["std"]),
        "test_time_flip": bool(checkpoint.get("test_time_flip", False)),
        "input": f"{INPUT_NAME}: uint8 [N, {checkpoint['in_channels']}, {checkpoint['image_size']}, "
        f"{checkpoint['image_size']}], pixels 0-255 ({'grayscale' if checkpoint['in_channels'] == 1 else 'RGB'})",
        "outputs": f"{', '.join(OUTPUT_NAMES)}: float32 [N, {len(checkpoint['classes'])}]",
        "normalization": "inside the model: (pixels / 255 - mean) / std per channel"
        + ("; logits averaged with the mirrored image's" if checkpoint.get("test_time_flip") else ""),
        "dataset": checkpoint["dataset"],
        "data_dir": checkpoint.get("data_dir", ""),
        "epoch": checkpoint.get("epoch"),
        "best_test_accuracy": checkpoint.get("best_test_accuracy"),
        "resnetlab_version": __version__,
    }


def default_output(checkpoint_path: Path, fmt: str, int8: bool = False) -> Path:
    """best.pt -> best.onnx, best.int8.onnx or best.torchscript.pt, beside the checkpoint."""
    suffix = (".int8.onnx" if int8 else ".onnx") if fmt == "onnx" else ".torchscript.pt"
    return checkpoint_path.with_name(checkpoint_path.stem + suffix)


def _require(purpose: str, *modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"{purpose} needs the {' and '.join(missing)} package{'s' if len(missing) > 1 else ''}, "
                        "which is not installed; install it with: pip install 'resnetlab[export]'.")  # fmt: skip


def export_onnx(module: ExportedClassifier, example: torch.Tensor, path: Path, description: dict[str, Any]) -> Path:
    """Write module as ONNX with a dynamic batch size, and the description as metadata_props."""
    _require("ONNX export", "onnx")
    # The TorchScript-based exporter (dynamo=False) needs only the onnx package and took 1-2 s for resnet20
    # on a CPU; the torch.export-based one (dynamo=True) also needs onnxscript and took 20 s. Its deprecation and
    # constant-folding warnings say nothing the user can act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), str(path), dynamo=False, opset_version=17, input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES), dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
        )  # fmt: skip
    _write_onnx_metadata(path, description)
    return path


def _write_onnx_metadata(path: Path, description: dict[str, Any]) -> None:
    """Store the description as the ONNX file's metadata_props (replacing any) and doc_string."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {k: json.dumps(v) if k in _JSON_FIELDS else str(v)
                                        for k, v in description.items()})  # fmt: skip
    precision = f", {description['precision']}" if "precision" in description else ""
    model.doc_string = f"{description['model']['name']} trained by resnetlab on {description['dataset']}{precision}"
    onnx.save(model, str(path))


def _calibration_images(predictor: Predictor, data_dir: str | None, count: int) -> torch.Tensor:
    """`count` training images drawn at random (seed 0): what the int8 model's activation ranges are set from."""
    from .data import find_data

    ckpt = predictor.checkpoint
    data_dir = data_dir or ckpt.get("data_dir") or "./data"
    if find_data(ckpt["dataset"], data_dir) is None:
        raise UserError(f"an int8 export calibrates on training images, and the {ckpt['dataset']} data is not in "
                        f"{data_dir}; give --data-dir the folder the checkpoint was trained from.")  # fmt: skip
    data = predictor.load_data(data_dir, train=True)
    keep = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:count]
    return data.images[keep]


def quantize_int8(fp32_path: Path, path: Path, calibration: torch.Tensor, description: dict[str, Any]) -> Path:
    """Rewrite the fp32 ONNX model at fp32_path as int8 at path, with onnxruntime's static quantization.

    Weights are int8 per output channel, activations uint8 with ranges from the calibration images (min/max).
    reduce_range keeps weights to 7 bits: on x86 CPUs without VNNI, onnxruntime's u8 x s8 kernels add pairs of
    products in 16 bits, which saturate with full-range weights (measured: 91.88% instead of 92.99%).
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            batches = calibration.split(100)
            self.batches = iter([{INPUT_NAME: batch.contiguous().numpy()} for batch in batches])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    prepared = path.with_name(path.name + ".prepared.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(fp32_path), str(prepared))
            quantize_static(
                str(prepared), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                op_types_to_quantize=["Conv", "Gemm", "MatMul"],
            )  # fmt: skip
    finally:
        prepared.unlink(missing_ok=True)
    _write_onnx_metadata(path, {**description, "precision": "int8"})  # the quantizer keeps no metadata
    return path


def export_torchscript(
    module: ExportedClassifier, example: torch.Tensor, path: Path, description: dict[str, Any]
) -> Path:
    """Write module as a traced TorchScript archive, with the description as the extra file resnetlab.json."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated upstream; it still loads in C++ and Python
        traced = torch.jit.trace(module, example, check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_METADATA: json.dumps(description, indent=1)})
    return path


def read_onnx_metadata(metadata: dict[str, str]) -> dict[str, Any]:
    """The description from an ONNX model's metadata_props (as onnxruntime's custom_metadata_map gives them)."""
    return {k: json.loads(v) if k in _JSON_FIELDS else v for k, v in metadata.items()}


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """An exported TorchScript model and its description."""
    extra = {TORCHSCRIPT_METADATA: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module, json.loads(extra[TORCHSCRIPT_METADATA] or "{}")


@dataclass
class OnnxPredictor:
    """An exported ONNX model run with onnxruntime.

    It has the methods of inference.Predictor that `predict` uses (classes, prepare_images,
    probabilities_of_images, top_classes, load_test_data, probabilities), so a caller can use either.
    `checkpoint` holds the description read from the model's metadata, under the keys a checkpoint uses.
    """

    session: Any
    checkpoint: dict[str, Any]
    batch_size: int = 1000

    @classmethod
    def from_file(cls, path: str | Path, device: str = "auto") -> "OnnxPredictor":
        _require("running an ONNX model", "onnxruntime")
        import onnxruntime

        path = Path(path)
        if not path.is_file():
            raise UserError(f"no ONNX model at {path}; export one first (resnetlab export CKPT --format onnx).")
        providers = ["CPUExecutionProvider"]
        if device in ("auto", "cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            session = onnxruntime.InferenceSession(str(path), providers=providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types for a bad file
            raise UserError(f"{path} is not a readable ONNX model ({type(e).__name__}); export it again.") from None
        description = read_onnx_metadata(session.get_modelmeta().custom_metadata_map)
        if description.get("format") != EXPORT_FORMAT or "classes" not in description:
            raise UserError(f"{path} was not written by resnetlab export (its metadata has no class names); "
                            "export the model with resnetlab export.")  # fmt: skip
        return cls(session, description)

    @property
    def classes(self) -> list[str]:
        return self.checkpoint["classes"]

    # These use only self.checkpoint's classes, image_size, in_channels, dataset and data_dir.
    prepare_images = Predictor.prepare_images
    top_classes = Predictor.top_classes
    load_test_data = Predictor.load_test_data
    load_data = Predictor.load_data

    def _run(self, images: torch.Tensor, output: str) -> torch.Tensor:
        """One of the model's outputs for a uint8 batch [N, C, H, W], computed self.batch_size images at a time."""
        outputs = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size].contiguous().numpy()
            (result,) = self.session.run([output], {INPUT_NAME: batch})
            outputs.append(torch.from_numpy(result))
        return torch.cat(outputs) if outputs else torch.empty(0, len(self.classes))

    def probabilities_of_images(self, images: torch.Tensor) -> torch.Tensor:
        """Probabilities [N, num_classes] of a uint8 batch [N, C, H, W] as prepare_images makes it."""
        return self._run(images, OUTPUT_NAMES[1])

    def probabilities(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        return self.probabilities_of_images(data.images), data.labels

    def evaluate(self, data) -> dict[str, Any]:
        """What Predictor.evaluate returns, computed by onnxruntime."""
        from .engine import score

        start = time.perf_counter()
        logits = self._run(data.images, OUTPUT_NAMES[0])
        return score(logits, data.labels, len(self.classes), time.perf_counter() - start)

    def describe(self) -> str:
        providers = ", ".join(p.replace("ExecutionProvider", "") for p in self.session.get_providers())
        return f"onnxruntime, {providers}, {self.checkpoint.get('precision', 'fp32')}"


def _run_exported(path: Path, fmt: str, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Logits, probabilities and description from the exported file, loaded afresh as a user would."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        logits, probabilities = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images.numpy()})
        description = read_onnx_metadata(session.get_modelmeta().custom_metadata_map)
        return torch.from_numpy(logits), torch.from_numpy(probabilities), description
    module, description = load_torchscript(path)
    with torch.no_grad():
        logits, probabilities = module(images)
    return logits, probabilities, description


def _check_images(predictor: Predictor, data_dir: str | None, count: int) -> tuple[torch.Tensor, str]:
    """Up to `count` images of the checkpoint's test split when it can be found without downloading, else
    random images; with a line saying which."""
    from .data import find_data

    ckpt = predictor.checkpoint
    data_dir = data_dir or ckpt.get("data_dir") or "./data"
    reason = f"the {ckpt['dataset']} test data is not in {data_dir}"
    if find_data(ckpt["dataset"], data_dir) is not None:
        try:
            data = predictor.load_test_data(data_dir, limit=count)
            return data.images, f"{len(data)} {ckpt['dataset']} test images"
        except UserError as e:
            reason = str(e).rstrip(".")
    size, channels = ckpt["image_size"], ckpt["in_channels"]
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, channels, size, size), dtype=torch.uint8, generator=generator)
    return images, f"{count} random images (note: {reason}; give --data-dir to check on real test images)"


def _check_export(draft: Path, fmt: str, module: ExportedClassifier, predictor: Predictor, images: torch.Tensor,
                  description: dict[str, Any], tolerance: float, int8: bool) -> dict[str, Any]:
    """Load the written file afresh and compare it with the eager model on `images`."""
    with torch.no_grad():
        logits, _ = module(images)
    probabilities = predictor.probabilities_of_images(images)
    exported_logits, exported_probabilities, exported_description = _run_exported(draft, fmt, images)
    report = {
        "format": fmt,
        "images": len(images),
        "max_abs_diff_logits": (exported_logits - logits).abs().max().item(),
        "max_abs_diff_probabilities": (exported_probabilities - probabilities).abs().max().item(),
        "same_top_class": int((exported_probabilities.argmax(1) == probabilities.argmax(1)).sum()),
        "tolerance": None if int8 else tolerance,  # int8 is checked on agreement instead
        "metadata_ok": exported_description.get("classes") == description["classes"],
        "precision": "int8" if int8 else "fp32",
    }
    if int8:
        report["min_agreement"] = INT8_MIN_AGREEMENT
    return report


def _check_problem(report: dict[str, Any], fmt: str, checked_on: str) -> str | None:
    """Why the export fails its check, or None."""
    if not report["metadata_ok"]:
        return f"the exported {fmt} model lost its class names on the way"
    if report["precision"] == "int8":
        agreement = report["same_top_class"] / max(report["images"], 1)
        if agreement < report["min_agreement"]:
            return (f"the int8 model keeps the checkpoint's top class for only {agreement:.1%} of {checked_on}, "
                    f"below {report['min_agreement']:.0%} (export without --int8 for the fp32 model)")  # fmt: skip
    elif not report["max_abs_diff_probabilities"] <= report["tolerance"]:
        return (f"the exported {fmt} model differs from the checkpoint by up to "
                f"{report['max_abs_diff_probabilities']:.3g} in probability on {checked_on}, above the tolerance "
                f"{report['tolerance']:g}")  # fmt: skip
    return None


def export_checkpoint(
    checkpoint: str | Path,
    fmt: str,
    output: str | Path | None = None,
    data_dir: str | None = None,
    check_images: int = 256,
    tolerance: float = DEFAULT_TOLERANCE,
    int8: bool = False,
) -> dict[str, Any]:
    """Export a checkpoint (or run folder's best.pt) as ONNX or TorchScript, then load the file again and
    compare it with the eager model on the checkpoint's test images.

    Returns a report: the file, what it was checked on, and the largest absolute differences of logits and
    probabilities. Raises ExportMismatch (writing nothing; a file already at the output path stays as it was)
    when probabilities differ by more than `tolerance`, or, for an int8 ONNX model (calibrated on training
    images), when it keeps the top class of fewer than INT8_MIN_AGREEMENT of the check images.
    """
    from .checkpoint import resolve_path

    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}.")
    if fmt == "onnx":
        _require("ONNX export", "onnx", "onnxruntime")
    if int8 and fmt != "onnx":
        raise UserError("--int8 works with --format onnx only (onnxruntime runs the int8 model).")
    source = resolve_path(checkpoint)
    path = Path(output) if output else default_output(source, fmt, int8)
    if path.is_dir():
        raise UserError(f"-o {path} is a folder; give the file name to write the {fmt} model to.")
    if path.resolve() == source.resolve():
        raise UserError(f"-o {path} is the checkpoint itself; give another file name for the {fmt} model.")
    path.parent.mkdir(parents=True, exist_ok=True)

    # The reference: the checkpoint's own model, in fp32 on the CPU, as exported.
    predictor = Predictor.from_checkpoint(source, device="cpu", precision="fp32")
    ckpt = predictor.checkpoint
    module = ExportedClassifier(predictor.model, ckpt["mean"], ckpt["std"], predictor.flip).eval()
    description = describe(ckpt)
    calibration = _calibration_images(predictor, data_dir, INT8_CALIBRATION_IMAGES) if int8 else None
    images, checked_on = _check_images(predictor, data_dir, check_images)
    # Written beside the target and moved into place only once checked, so that a failed export leaves a file
    # the user had at that path as it was.
    draft = path.with_name(path.name + ".tmp")
    try:
        if int8:
            fp32_path = path.with_name(path.name + ".fp32.tmp")
            try:
                quantize_int8(export_onnx(module, images[:2], fp32_path, description), draft, calibration, description)
            finally:
                fp32_path.unlink(missing_ok=True)
        else:
            write = export_onnx if fmt == "onnx" else export_torchscript
            write(module, images[:2], draft, description)
        report = _check_export(draft, fmt, module, predictor, images, description, tolerance, int8)
        report.update(file=str(path), checked_on=checked_on)
        if int8:
            report["calibrated_on"] = f"{len(calibration)} {ckpt['dataset']} training images"
        problem = _check_problem(report, fmt, checked_on)
        if problem:
            raise ExportMismatch(problem + "; it was not kept.")
        draft.replace(path)
    finally:
        draft.unlink(missing_ok=True)
    return report
