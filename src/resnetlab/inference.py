"""Running a trained model: a checkpoint with PyTorch, or an exported .onnx file with onnxruntime.

Both take uint8 pixels [N, C, H, W] prepared by imagefiles.decode (or a dataset's loader) and run them in
chunks of `chunk_size` images, so memory stays flat however many images there are.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch

from .batches import ImageData
from .card import ModelCard
from .checkpoint import Checkpoint, load_checkpoint, resolve_path
from .data import find_data, load_split
from .errors import UserError
from .folder import Holdout
from .imagefiles import decode
from .metrics import score
from .models import fold_batchnorm
from .preprocess import PixelClassifier
from .runtime import Runtime, select_runtime

CHUNK_SIZE = 256  # images per forward pass, and image files decoded at a time
# ONNX models written by resnetlab export: their two outputs and one input.
ONNX_INPUT = "images"
ONNX_OUTPUTS = ("logits", "probabilities")
EXPORT_FORMAT = "resnetlab-export"
# Metadata fields stored JSON-encoded in ONNX metadata_props; the other fields are plain strings.
ONNX_JSON_FIELDS = frozenset(
    {
        "model",
        "classes",
        "num_classes",
        "in_channels",
        "image_size",
        "mean",
        "std",
        "test_time_flip",
        "test_time_translate",
        "version",
        "epoch",
        "best_test_accuracy",
        "holdout",
    }
)


class Predictor(Protocol):
    """A trained classifier, whatever runs it: its card and its logits for uint8 pixels."""

    card: ModelCard

    def logits(self, images: torch.Tensor) -> torch.Tensor: ...

    def describe(self) -> str: ...


class PredictorBase:
    """What every Predictor can do, built on its `logits`."""

    card: ModelCard
    chunk_size: int = CHUNK_SIZE

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    @property
    def epoch(self) -> int | None:
        """The training epoch the weights are from, where recorded."""
        return None

    @property
    def best_test_accuracy(self) -> float | None:
        return None

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities [N, classes] of uint8 images [N, C, H, W]."""
        return self.logits(images).softmax(1)

    def top_classes(self, probabilities: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
        values, indices = probabilities.topk(min(k, probabilities.shape[1]), dim=1)
        return [
            [(self.card.classes[i], float(p)) for p, i in zip(row_values.tolist(), row_indices.tolist())]
            for row_values, row_indices in zip(values, indices)
        ]

    def evaluate(self, data: ImageData) -> dict[str, Any]:
        """metrics.score on a split: loss, accuracy, per-class accuracy, confusion matrix, throughput."""
        start = time.perf_counter()
        chunks = [self.logits(images) for images in data.chunks(self.chunk_size)]  # never the whole split at once
        logits = torch.cat(chunks) if chunks else torch.empty(0, self.card.num_classes)
        return score(logits, data.labels, self.card.num_classes, time.perf_counter() - start)

    def load_data(
        self, data_dir: str | None = None, limit: int | None = None, train: bool = False, cache_dir: str | None = None
    ) -> ImageData:
        """The card's training or test split (its first `limit` images), prepared as in training. cache_dir: where
        a folder's decoded images are kept (data.load_split)."""
        folder = self.card.data_folder(data_dir)
        holdout = Holdout(files=self.card.holdout) if self.card.holdout else None
        data = load_split(
            self.card.dataset,
            folder,
            train=train,
            image_size=self.card.image_size,
            holdout=holdout,
            cache_dir=cache_dir,
        )
        if data.channels == 1 and self.card.in_channels == 3:
            data = data.with_channels(3)  # a grayscale dataset that trained an RGB model (train --pretrained)
        if data.channels != self.card.in_channels or len(data.classes) != self.card.num_classes:
            raise UserError(
                f"the data in {folder} ({data.channels} channels, {len(data.classes)} classes) does not fit this "
                f"checkpoint ({self.card.in_channels} channels, {self.card.num_classes} classes); give the --data-dir "
                "it was trained on."
            )
        return data.select(slice(0, limit)) if limit is not None else data

    def load_test_data(
        self, data_dir: str | None = None, limit: int | None = None, cache_dir: str | None = None
    ) -> ImageData:
        return self.load_data(data_dir, limit, train=False, cache_dir=cache_dir)

    def has_data(self, data_dir: str | None = None) -> bool:
        """Whether the card's dataset can be found without downloading it."""
        return find_data(self.card.dataset, self.card.data_folder(data_dir)) is not None

    def decode_files(self, paths: list[Path]) -> torch.Tensor:
        """Image files as the model's uint8 input [N, C, H, W]."""
        size, channels = self.card.image_size, self.card.in_channels
        if not paths:
            return torch.empty(0, channels, size, size, dtype=torch.uint8)
        return torch.stack([decode(path, channels, size) for path in paths])

    def predict_files(self, paths: list[Path]) -> Iterator[tuple[list[Path], torch.Tensor, torch.Tensor]]:
        """(paths, uint8 images, probabilities) for chunk_size files at a time."""
        for start in range(0, len(paths), self.chunk_size):
            chunk = paths[start : start + self.chunk_size]
            images = self.decode_files(chunk)
            yield chunk, images, self.probabilities(images)


class TorchPredictor(PredictorBase):
    """A checkpoint run with PyTorch: its network with BN folded into the convolutions (same outputs, faster)."""

    def __init__(self, checkpoint: Checkpoint, network: torch.nn.Module, runtime: Runtime) -> None:
        self.checkpoint = checkpoint
        self.card = checkpoint.card
        self.runtime = runtime
        self.network = network.to(runtime.device, memory_format=runtime.memory_format).eval()
        self.classifier = PixelClassifier.from_card(self.network, self.card, memory_format=runtime.memory_format)
        self.classifier = self.classifier.to(runtime.device).eval()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", precision: str = "auto") -> TorchPredictor:
        checkpoint = load_checkpoint(path)
        runtime = select_runtime(device, precision)
        return cls(checkpoint, fold_batchnorm(checkpoint.build_model(str(path))), runtime)

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        outputs = [torch.empty(0, self.card.num_classes)]
        for chunk in images.split(self.chunk_size):
            with self.runtime.autocast():
                outputs.append(self.classifier(chunk.to(self.runtime.device)).float().cpu())
        return torch.cat(outputs)

    @property
    def epoch(self) -> int | None:
        return self.checkpoint.epoch

    @property
    def best_test_accuracy(self) -> float | None:
        return self.checkpoint.best_test_accuracy

    def describe(self) -> str:
        return self.runtime.describe()


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


def read_onnx_metadata(metadata: dict[str, str]) -> dict[str, Any]:
    """An ONNX model's metadata_props (as onnxruntime's custom_metadata_map gives them) as resnetlab export
    wrote them."""
    try:
        return {k: json.loads(v) if k in ONNX_JSON_FIELDS else v for k, v in metadata.items()}
    except ValueError:
        raise UserError("the ONNX model's metadata is damaged; export the model again.") from None


class OnnxPredictor(PredictorBase):
    """An exported .onnx model run with onnxruntime; its card read from the model's metadata."""

    def __init__(self, session: Any, card: ModelCard, metadata: dict[str, Any]) -> None:
        self.session, self.card, self.metadata = session, card, metadata

    @classmethod
    def from_file(cls, path: str | Path, device: str = "auto") -> OnnxPredictor:
        require("running an ONNX model", "onnxruntime")
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
        metadata = read_onnx_metadata(session.get_modelmeta().custom_metadata_map)
        if metadata.get("format") != EXPORT_FORMAT or "classes" not in metadata:
            raise UserError(
                f"{path} was not written by resnetlab export (its metadata has no class names); "
                "export the model with resnetlab export."
            )
        return cls(session, ModelCard.from_dict(metadata, str(path)), metadata)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        outputs = [torch.empty(0, self.card.num_classes)]
        for chunk in images.split(self.chunk_size):
            (result,) = self.session.run([ONNX_OUTPUTS[0]], {ONNX_INPUT: chunk.contiguous().numpy()})
            outputs.append(torch.from_numpy(result))
        return torch.cat(outputs)

    @property
    def epoch(self) -> int | None:
        return self.metadata.get("epoch")

    @property
    def best_test_accuracy(self) -> float | None:
        return self.metadata.get("best_test_accuracy")

    def describe(self) -> str:
        providers = ", ".join(p.replace("ExecutionProvider", "") for p in self.session.get_providers())
        return f"onnxruntime, {providers}, {self.metadata.get('precision', 'fp32')}"


def open_predictor(path: str | Path, device: str = "auto", precision: str = "auto") -> PredictorBase:
    """A TorchPredictor for a checkpoint or run folder, or an OnnxPredictor for an exported .onnx file."""
    if Path(path).suffix.lower() == ".onnx":
        return OnnxPredictor.from_file(path, device)
    return TorchPredictor.from_checkpoint(resolve_path(path), device, precision)
