"""Export a checkpoint for other programs (a format of formats.EXPORT_FORMATS: ONNX or TorchScript) and check it
against eager PyTorch.

The exported model takes what an image decoder gives: uint8 pixels [N, C, H, W] (0-255, grayscale or RGB
as the checkpoint says, already resized to image_size x image_size). Normalization with the training set's
mean and std, and the test-time flip where the checkpoint uses it, happen inside the exported graph, so a
caller cannot get them wrong. It returns two float32 [N, num_classes] outputs: logits and probabilities.

The checkpoint's description (class names, input size, channels, mean/std, ...) travels with the model, each
format storing it its own way (formats.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from . import __version__
from .card import ModelCard
from .checkpoint import resolve_path
from .config import EXPORT_CHECK_IMAGES, EXPORT_TOLERANCE, INT8_CALIBRATION_IMAGES, INT8_MIN_AGREEMENT
from .errors import UserError
from .formats import EXPORT_FORMATS, get_format, int8_formats, require
from .formats import load_torchscript as load_torchscript  # where it was before formats.py: scripts import it here
from .inference import TorchPredictor
from .onnxlight import EXPORT_MARKER, ONNX_INPUT, ONNX_OUTPUTS
from .preprocess import ExportedClassifier, PixelClassifier
from .recorder import RUN_FILES


class ExportMismatch(UserError):
    """The exported model disagrees with the checkpoint beyond the tolerance."""

    exit_code = 1


def export_metadata(predictor: TorchPredictor) -> dict[str, Any]:
    """What an exported model carries about itself: its model card (under the keys a checkpoint uses), and how
    to call it."""
    card, checkpoint = predictor.card, predictor.checkpoint
    size = card.image_size
    return {
        "format": EXPORT_MARKER,
        "version": 1,
        **card.to_dict(),
        "num_classes": card.num_classes,
        "input": f"{ONNX_INPUT}: uint8 [N, {card.in_channels}, {size}, {size}], pixels 0-255 ({card.color})",
        "outputs": f"{', '.join(ONNX_OUTPUTS)}: float32 [N, {card.num_classes}]",
        "probabilities": f"softmax(logits / temperature), temperature {card.temperature:.6g} (fitted after "
        "training; 1: not calibrated)",
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
    """best.pt -> best.onnx, best.int8.onnx or best.torchscript.pt (the format's suffix), beside the checkpoint."""
    return checkpoint_path.with_name(get_format(fmt).file_name(checkpoint_path.stem, int8))


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


def _run_exported(path: Path, fmt: str, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Logits, probabilities and description from the exported file, loaded afresh on the CPU as a user would."""
    model = EXPORT_FORMATS[fmt].load(path, "cpu")
    logits, probabilities = model.run(images)
    return logits, probabilities, model.metadata


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
    """Export a checkpoint (or run folder's best.pt) in a format of formats.EXPORT_FORMATS (ONNX, TorchScript),
    then load the file again and compare it with the eager model on the checkpoint's test images.

    Returns a report: the file, what it was checked on, and the largest absolute differences of logits and
    probabilities. Raises ExportMismatch (writing nothing; a file already at the output path stays as it was)
    when probabilities differ by more than `tolerance`, or, for an int8 model (calibrated on training
    images), when it keeps the top class of fewer than INT8_MIN_AGREEMENT of the check images. cache_dir: where a
    folder's decoded images are kept (data.load_split).
    """
    writer = get_format(fmt)
    require(f"{writer.title} export", *writer.write_needs, *writer.load_needs)  # the check runs the file too
    if int8 and not writer.int8:
        names, runners = " or ".join(f.name for f in int8_formats()), " or ".join(f.runs_with for f in int8_formats())
        raise UserError(f"--int8 works with --format {names} only ({runners} runs the int8 model).")
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
    card = predictor.card
    module = ExportedClassifier(PixelClassifier.from_card(predictor.network, card), card.temperature).eval()
    description = export_metadata(predictor)
    calibration = _calibration_images(predictor, data_dir, INT8_CALIBRATION_IMAGES, cache_dir) if int8 else None
    images, checked_on = _check_images(predictor, data_dir, check_images, cache_dir)
    # Written beside the target and moved into place only once checked, so that a failed export leaves a file
    # the user had at that path as it was.
    draft = path.with_name(path.name + ".tmp")
    try:
        if int8:
            fp32_path = path.with_name(path.name + ".fp32.tmp")
            try:
                writer.quantize(
                    writer.write(module, images[:2], fp32_path, description), draft, calibration, description
                )
            finally:
                fp32_path.unlink(missing_ok=True)
        else:
            writer.write(module, images[:2], draft, description)
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
