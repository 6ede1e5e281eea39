"""The export formats, as one table: how `resnetlab export` writes each file, how predict, eval and serve load it
again (picked by the file's suffix), whether it can be int8, and what `export --help` says about it.

Every format holds the same model, preprocess.ExportedClassifier traced: uint8 pixels [N, C, H, W] in, float32
logits and probabilities [N, num_classes] out. And every format carries the export's description (the model
card under the keys a checkpoint uses, and how to call the model): ONNX as metadata_props (one key per field;
lists and numbers JSON-encoded), TorchScript as the extra file resnetlab.json inside the archive (read it with
torch.jit.load(path, _extra_files=...)).

The table sits below inference (which picks a file's loader from it) and is read by export (which writes through
it) and by the CLI's --format choices and help, which are built without loading the exporter. Adding a format is
one ExportFormat entry in EXPORT_FORMATS, with its writer and loader beside it here, and its test.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import UserError
from .onnxlight import (
    ONNX_INPUT,
    ONNX_JSON_FIELDS,
    ONNX_OUTPUTS,
    ONNX_SUFFIX,
    check_exported,
    onnx_session,
    read_onnx_metadata,
)
from .runtime import cpu_has_vnni, select_device

TORCHSCRIPT_METADATA = "resnetlab.json"


@dataclass(frozen=True)
class ExportedModel:
    """An exported file loaded to run: what a format's loader returns."""

    run: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # uint8 pixels -> logits, probabilities (CPU)
    metadata: dict[str, Any]  # the description the export wrote into the file
    runs_on: str  # for predict and eval to print: what runs it, on what, in which precision


# write(module, example_images, path, description) -> path; load(path, device) -> ExportedModel;
# quantize(fp32_path, path, calibration_images, description) -> path.
Writer = Callable[[nn.Module, torch.Tensor, Path, dict[str, Any]], Path]
Loader = Callable[[Path, str], ExportedModel]
Quantizer = Callable[[Path, Path, torch.Tensor, dict[str, Any]], Path]


@dataclass(frozen=True)
class ExportFormat:
    """One export format: everything export, predict, eval, serve and the CLI's help know about it."""

    name: str  # the value of --format
    title: str  # how messages name it ("no ONNX model at ...")
    suffix: str  # lowercase: the default file name's ending, and how predict, eval and serve recognize the file
    runs_with: str  # what runs the file, for --format's help and the messages
    write: Writer
    load: Loader
    quantize: Quantizer | None = None  # --int8: rewrites the fp32 file `write` made as int8; None: no --int8
    write_needs: tuple[str, ...] = ()  # optional packages that writing it needs (the export extra)
    load_needs: tuple[str, ...] = ()  # optional packages that running it needs

    @property
    def int8(self) -> bool:
        return self.quantize is not None

    @property
    def help(self) -> str:
        extra = " (the export extra)" if self.write_needs or self.load_needs else ""
        return f"{self.name} runs with {self.runs_with}{extra}"

    def file_name(self, stem: str, int8: bool = False) -> str:
        """best -> best.onnx, best.int8.onnx, best.torchscript.pt."""
        return stem + (".int8" if int8 else "") + self.suffix


def require(purpose: str, *modules: str) -> None:
    """A UserError naming the export extra when an optional package is missing."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(
            f"{purpose} needs the {' and '.join(missing)} package{'s' if len(missing) > 1 else ''}, "
            "which is not installed; install it from the resnetlab folder with: "
            "pip install -e '.[export]'."
        )


# ONNX


def export_onnx(module: nn.Module, example: torch.Tensor, path: Path, description: dict[str, Any]) -> Path:
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


def load_onnx(path: Path, device: str = "auto") -> ExportedModel:
    """An ONNX model in an onnxruntime session: on the CUDA GPU where asked (or auto) and available, else the CPU."""
    session = onnx_session(path, device)
    metadata = read_onnx_metadata(session.get_modelmeta().custom_metadata_map)

    def run(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, probabilities = session.run(list(ONNX_OUTPUTS), {ONNX_INPUT: images.contiguous().numpy()})
        return torch.from_numpy(logits), torch.from_numpy(probabilities)

    used = ", ".join(p.replace("ExecutionProvider", "") for p in session.get_providers())
    return ExportedModel(run, metadata, f"onnxruntime, {used}, {metadata.get('precision', 'fp32')}")


# TorchScript


def export_torchscript(module: nn.Module, example: torch.Tensor, path: Path, description: dict[str, Any]) -> Path:
    """Write module as a traced TorchScript archive, with the description as the extra file resnetlab.json."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated upstream; it still loads in C++ and Python
        traced = torch.jit.trace(module, example, check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_METADATA: json.dumps(description, indent=1)})
    return path


def load_torchscript(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """An exported TorchScript model and its description."""
    extra = {TORCHSCRIPT_METADATA: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location=map_location, _extra_files=extra)
    return module, json.loads(extra[TORCHSCRIPT_METADATA] or "{}")


def load_torchscript_model(path: Path, device: str = "auto") -> ExportedModel:
    """A TorchScript archive on the device asked for (auto: a GPU where there is one), in fp32 as traced."""
    target = select_device(device)
    module, description = load_torchscript(path, target)

    @torch.no_grad()
    def run(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, probabilities = module(images.to(target))
        return logits.float().cpu(), probabilities.float().cpu()

    return ExportedModel(run, description, f"torch.jit, {target.type}, fp32")


# The table. The first entry is --format's default.
EXPORT_FORMATS: dict[str, ExportFormat] = {
    fmt.name: fmt
    for fmt in [
        ExportFormat(
            name="onnx",
            title="ONNX",
            suffix=ONNX_SUFFIX,
            runs_with="onnxruntime",
            write=export_onnx,
            load=load_onnx,
            quantize=quantize_int8,
            write_needs=("onnx",),
            load_needs=("onnxruntime",),
        ),
        ExportFormat(
            name="torchscript",
            title="TorchScript",
            suffix=".torchscript.pt",
            runs_with="torch.jit.load",
            write=export_torchscript,
            load=load_torchscript_model,
        ),
    ]
}


def get_format(name: str) -> ExportFormat:
    try:
        return EXPORT_FORMATS[name]
    except KeyError:
        raise UserError(f"unknown export format {name!r}; choose one of: {', '.join(EXPORT_FORMATS)}.") from None


def int8_formats() -> list[ExportFormat]:
    """The formats --int8 works with."""
    return [fmt for fmt in EXPORT_FORMATS.values() if fmt.int8]


def format_of(path: str | Path) -> ExportFormat | None:
    """The format whose suffix the file's name ends with (the longest, where several do), or None: a checkpoint
    or a run folder."""
    name = Path(path).name.lower()
    matches = [fmt for fmt in EXPORT_FORMATS.values() if name.endswith(fmt.suffix)]
    return max(matches, key=lambda fmt: len(fmt.suffix), default=None)


def open_exported(path: str | Path, device: str = "auto", fmt: ExportFormat | None = None) -> ExportedModel:
    """A file written by resnetlab export, loaded by its format (by default the one its suffix names)."""
    path = Path(path)
    fmt = fmt or format_of(path)
    if fmt is None:
        suffixes = ", ".join(f.suffix for f in EXPORT_FORMATS.values())
        raise UserError(f"{path} does not end in {suffixes}; give a file written by resnetlab export.")
    require(f"running {fmt.title} models", *fmt.load_needs)
    if not path.is_file():
        raise UserError(
            f"no {fmt.title} model at {path}; export one first (resnetlab export CKPT --format {fmt.name})."
        )
    try:
        model = fmt.load(path, device)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - each runtime raises its own exception types for a bad file
        raise UserError(f"{path} is not a readable {fmt.title} model ({type(e).__name__}); export it again.") from None
    check_exported(path, model.metadata)
    return model
