"""Export a checkpoint for other programs (ONNX or TorchScript) and check it against eager PyTorch (exported
ONNX models run through inference.OnnxPredictor).

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
import warnings
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .card import ModelCard
from .checkpoint import resolve_path
from .config import EXPORT_CHECK_IMAGES, EXPORT_FORMATS, EXPORT_TOLERANCE, INT8_CALIBRATION_IMAGES, INT8_MIN_AGREEMENT
from .errors import UserError
from .inference import (
    EXPORT_FORMAT,
    ONNX_INPUT,
    ONNX_JSON_FIELDS,
    ONNX_OUTPUTS,
    TorchPredictor,
    read_onnx_metadata,
    require,
)
from .preprocess import ExportedClassifier, PixelClassifier
from .recorder import RUN_FILES
from .runtime import cpu_has_vnni

TORCHSCRIPT_METADATA = "resnetlab.json"


class ExportMismatch(UserError):
    """The exported model disagrees with the checkpoint beyond the tolerance."""

    exit_code = 1


def describe(predictor: TorchPredictor) -> dict[str, Any]:
    """What an exported model carries about itself: its model card (under the keys a checkpoint uses), and how
    to call it."""
    card, checkpoint = predictor.card, predictor.checkpoint
    size = card.image_size
    return {
        "format": EXPORT_FORMAT,
        "version": 1,
        **card.to_dict(),
        "num_classes": card.num_classes,
        "input": f"{ONNX_INPUT}: uint8 [N, {card.in_channels}, {size}, {size}], pixels 0-255 ({card.color})",
        "outputs": f"{', '.join(ONNX_OUTPUTS)}: float32 [N, {card.num_classes}]",
        "normalization": "inside the model: (pixels / 255 - mean) / std per channel"
        + ("; logits averaged with the mirrored image's" if card.test_time_flip else "")
        + (
            "; and with those of the image moved one pixel down-right and up-left (weights 1/2, 1/4, 1/4)"
            if card.test_time_translate
            else ""
        ),
        "epoch": checkpoint.epoch,
        "best_test_accuracy": checkpoint.best_test_accuracy,
        "resnetlab_version": __version__,
    }


def default_output(checkpoint_path: Path, fmt: str, int8: bool = False) -> Path:
    """best.pt -> best.onnx, best.int8.onnx or best.torchscript.pt, beside the checkpoint."""
    suffix = (".int8.onnx" if int8 else ".onnx") if fmt == "onnx" else ".torchscript.pt"
    return checkpoint_path.with_name(checkpoint_path.stem + suffix)


def export_onnx(module: ExportedClassifier, example: torch.Tensor, path: Path, description: dict[str, Any]) -> Path:
    """Write module as ONNX with a dynamic batch size, and the description as metadata_props."""
    require("ONNX export", "onnx")
    # The TorchScript-based exporter (dynamo=False) needs only the onnx package and took 1-2 s for resnet20
    # on a CPU; the torch.export-based one (dynamo=True) also needs onnxscript and took 20 s. Its deprecation and
    # constant-folding warnings say nothing the user can act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=[ONNX_INPUT],
            output_names=list(ONNX_OUTPUTS),
            dynamic_axes={name: {0: "batch"} for name in (ONNX_INPUT, *ONNX_OUTPUTS)},
        )
    _write_onnx_metadata(path, description)
    return path


def _write_onnx_metadata(path: Path, description: dict[str, Any]) -> None:
    """Store the description as the ONNX file's metadata_props (replacing any) and doc_string."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.helper.set_model_props(
        model, {k: json.dumps(v) if k in ONNX_JSON_FIELDS else str(v) for k, v in description.items()}
    )
    precision = f", {description['precision']}" if "precision" in description else ""
    model.doc_string = f"{description['model']['name']} trained by resnetlab on {description['dataset']}{precision}"
    onnx.save(model, str(path))


def _calibration_images(
    predictor: TorchPredictor, data_dir: str | None, count: int, cache_dir: str | None = None
) -> torch.Tensor:
    """`count` training images drawn at random (seed 0): what the int8 model's activation ranges are set from."""
    card = predictor.card
    if not predictor.has_data(data_dir):
        raise UserError(
            f"an int8 export calibrates on training images, and the {card.dataset} data is not in "
            f"{card.data_folder(data_dir)}; give --data-dir the folder the checkpoint was trained "
            "from."
        )
    return predictor.load_data(data_dir, train=True, cache_dir=cache_dir).sample(count, seed=0).images


def quantize_int8(fp32_path: Path, path: Path, calibration: torch.Tensor, description: dict[str, Any]) -> Path:
    """Rewrite the fp32 ONNX model at fp32_path as int8 at path, with onnxruntime's static quantization.

    Weights are int8 per output channel, activations uint8 with ranges from the calibration images (min/max).
    reduce_range keeps weights to 7 bits on x86 CPUs without VNNI, where onnxruntime's u8 x s8 kernels add pairs of
    products in 16 bits, which saturate with full-range weights (measured: 91.88% instead of 92.99%). With VNNI
    the products are summed in 32 bits and the eighth bit helps: on the test suite's tiny model the top class
    was kept for 94% of images with reduce_range and for at least 95% without.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            batches = calibration.split(100)
            self.batches = iter([{ONNX_INPUT: batch.contiguous().numpy()} for batch in batches])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    prepared = path.with_name(path.name + ".prepared.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(fp32_path), str(prepared))
            quantize_static(
                str(prepared),
                str(path),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=not cpu_has_vnni(),
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["Conv", "Gemm", "MatMul"],
            )
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


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """An exported TorchScript model and its description."""
    extra = {TORCHSCRIPT_METADATA: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module, json.loads(extra[TORCHSCRIPT_METADATA] or "{}")


def _run_exported(path: Path, fmt: str, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Logits, probabilities and description from the exported file, loaded afresh as a user would."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        logits, probabilities = session.run(list(ONNX_OUTPUTS), {ONNX_INPUT: images.numpy()})
        description = read_onnx_metadata(session.get_modelmeta().custom_metadata_map)
        return torch.from_numpy(logits), torch.from_numpy(probabilities), description
    module, description = load_torchscript(path)
    with torch.no_grad():
        logits, probabilities = module(images)
    return logits, probabilities, description


def _check_images(
    predictor: TorchPredictor, data_dir: str | None, count: int, cache_dir: str | None = None
) -> tuple[torch.Tensor, str]:
    """Up to `count` images of the checkpoint's test split when it can be found without downloading, else
    random images; with a line saying which."""
    card = predictor.card
    reason = f"the {card.dataset} test data is not in {card.data_folder(data_dir)}"
    if predictor.has_data(data_dir):
        try:
            data = predictor.load_test_data(data_dir, limit=count, cache_dir=cache_dir)
            return data.images, f"{len(data)} {card.dataset} test images"
        except UserError as e:
            reason = str(e).rstrip(".")
    size, channels = card.image_size, card.in_channels
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, channels, size, size), dtype=torch.uint8, generator=generator)
    return images, f"{count} random images (note: {reason}; give --data-dir to check on real test images)"


def _check_export(
    draft: Path,
    fmt: str,
    module: ExportedClassifier,
    predictor: TorchPredictor,
    images: torch.Tensor,
    description: dict[str, Any],
    tolerance: float,
    int8: bool,
) -> dict[str, Any]:
    """Load the written file afresh and compare it with the eager model on `images`."""
    with torch.no_grad():
        logits, _ = module(images)
    probabilities = predictor.probabilities(images)
    exported_logits, exported_probabilities, exported_description = _run_exported(draft, fmt, images)
    report = {
        "format": fmt,
        "images": len(images),
        "max_abs_diff_logits": (exported_logits - logits).abs().max().item(),
        "max_abs_diff_probabilities": (exported_probabilities - probabilities).abs().max().item(),
        "same_top_class": int((exported_probabilities.argmax(1) == probabilities.argmax(1)).sum()),
        "tolerance": None if int8 else tolerance,  # int8 is checked on agreement instead
        "metadata_ok": ModelCard.from_dict(exported_description, str(draft)) == predictor.card,
        "precision": "int8" if int8 else "fp32",
    }
    if int8:
        report["min_agreement"] = INT8_MIN_AGREEMENT
    return report


def _check_problem(report: dict[str, Any], fmt: str, checked_on: str) -> str | None:
    """Why the export fails its check, or None."""
    if not report["metadata_ok"]:
        return f"the exported {fmt} model's description differs from the checkpoint's model card"
    if report["precision"] == "int8":
        agreement = report["same_top_class"] / max(report["images"], 1)
        if agreement < report["min_agreement"]:
            return (
                f"the int8 model keeps the checkpoint's top class for only {agreement:.1%} of {checked_on}, "
                f"below {report['min_agreement']:.0%} (export without --int8 for the fp32 model)"
            )
    elif not report["max_abs_diff_probabilities"] <= report["tolerance"]:
        return (
            f"the exported {fmt} model differs from the checkpoint by up to "
            f"{report['max_abs_diff_probabilities']:.3g} in probability on {checked_on}, above the tolerance "
            f"{report['tolerance']:g}"
        )
    return None


def export_checkpoint(
    checkpoint: str | Path,
    fmt: str,
    output: str | Path | None = None,
    data_dir: str | None = None,
    check_images: int = EXPORT_CHECK_IMAGES,
    tolerance: float = EXPORT_TOLERANCE,
    int8: bool = False,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Export a checkpoint (or run folder's best.pt) as ONNX or TorchScript, then load the file again and
    compare it with the eager model on the checkpoint's test images.

    Returns a report: the file, what it was checked on, and the largest absolute differences of logits and
    probabilities. Raises ExportMismatch (writing nothing; a file already at the output path stays as it was)
    when probabilities differ by more than `tolerance`, or, for an int8 ONNX model (calibrated on training
    images), when it keeps the top class of fewer than INT8_MIN_AGREEMENT of the check images. cache_dir: where a
    folder's decoded images are kept (data.load_split).
    """
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of: {', '.join(EXPORT_FORMATS)}.")
    if fmt == "onnx":
        require("ONNX export", "onnx", "onnxruntime")
    if int8 and fmt != "onnx":
        raise UserError("--int8 works with --format onnx only (onnxruntime runs the int8 model).")
    source = resolve_path(checkpoint)
    path = Path(output) if output else default_output(source, fmt, int8)
    if path.is_dir():
        raise UserError(f"-o {path} is a folder; give the file name to write the {fmt} model to.")
    if path.resolve() == source.resolve():
        raise UserError(f"-o {path} is the checkpoint itself; give another file name for the {fmt} model.")
    if path.name in RUN_FILES and path.exists():
        raise UserError(
            f"-o {path} is a file of a training run, which the export would replace; give another file name."
        )
    path.parent.mkdir(parents=True, exist_ok=True)

    # The reference: the checkpoint's own model, in fp32 on the CPU, as exported.
    predictor = TorchPredictor.from_checkpoint(source, device="cpu", precision="fp32")
    module = ExportedClassifier(PixelClassifier.from_card(predictor.network, predictor.card)).eval()
    description = describe(predictor)
    calibration = _calibration_images(predictor, data_dir, INT8_CALIBRATION_IMAGES, cache_dir) if int8 else None
    images, checked_on = _check_images(predictor, data_dir, check_images, cache_dir)
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
            report["calibrated_on"] = f"{len(calibration)} {predictor.card.dataset} training images"
        problem = _check_problem(report, fmt, checked_on)
        if problem:
            raise ExportMismatch(problem + "; it was not kept.")
        draft.replace(path)
    finally:
        draft.unlink(missing_ok=True)
    return report
