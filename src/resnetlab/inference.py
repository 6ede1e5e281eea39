"""Running a trained model: a checkpoint with PyTorch, or a file written by resnetlab export with its format's
loader (formats.py).

Both take uint8 pixels [N, C, H, W] prepared by imagefiles.decode (or a dataset's loader) and run them in
chunks of `chunk_size` images, so memory stays flat however many images there are.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch

from .answers import CHUNK_SIZE
from .batches import ImageData
from .card import ModelCard
from .checkpoint import Checkpoint, load_checkpoint, resolve_path
from .confidence import calibration
from .data import find_data, load_split
from .errors import UserError
from .folder import Holdout
from .formats import ExportedModel, format_of, get_format, open_exported
from .imagefiles import decode
from .metrics import ImageScores, score_images
from .models import fold_batchnorm
from .preprocess import PixelClassifier
from .runtime import Runtime, select_runtime


class Predictor(Protocol):
    """A trained classifier, whatever runs it: its card and its logits for uint8 pixels."""

    card: ModelCard

    def logits(self, images: torch.Tensor) -> torch.Tensor: ...

    @property
    def runs_on(self) -> str: ...  # what runs it, on what, in which precision


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
        """Calibrated softmax probabilities [N, classes] of uint8 images [N, C, H, W]: of the logits divided by the
        card's temperature (confidence.py), as the exported files compute them."""
        return (self.logits(images) / self.card.temperature).softmax(1)

    def top_classes(self, probabilities: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
        values, indices = probabilities.topk(min(k, probabilities.shape[1]), dim=1)
        return [
            [(self.card.classes[i], float(p)) for p, i in zip(row_values.tolist(), row_indices.tolist())]
            for row_values, row_indices in zip(values, indices)
        ]

    def evaluate(self, data: ImageData) -> dict[str, Any]:
        """metrics.score on a split: loss, accuracy, per-class accuracy, confusion matrix, throughput; and under
        "calibration", the ECE before and after the card's temperature, with the reliability bins."""
        return self.evaluate_images(data)[0]

    def evaluate_images(self, data: ImageData) -> tuple[dict[str, Any], ImageScores]:
        """evaluate's figures (and the top-5 accuracy) and each image's prediction (metrics.ImageScores), a chunk
        at a time; the logits are kept (images x classes) only for the calibration figures."""
        start = time.perf_counter()
        parts, chunks, done = [], [], 0
        for images in data.chunks(self.chunk_size):
            chunks.append(self.logits(images))
            parts.append(ImageScores.of(chunks[-1], data.labels[done : done + len(images)]))
            done += len(images)
        scores = ImageScores.cat(parts)
        stats = score_images(scores, self.card.num_classes, time.perf_counter() - start)
        logits = torch.cat(chunks) if chunks else torch.empty(0, self.card.num_classes)
        stats["calibration"] = calibration(logits, data.labels, self.card.temperature, with_bins=True)
        return stats, scores

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

    @property
    def runs_on(self) -> str:
        return self.runtime.runs_on


class ExportedPredictor(PredictorBase):
    """A file written by resnetlab export, run by its format's loader (formats.EXPORT_FORMATS: onnxruntime for
    .onnx, torch.jit for .torchscript.pt); its card read from the file's metadata."""

    def __init__(self, model: ExportedModel, card: ModelCard) -> None:
        self.model, self.card, self.metadata = model, card, model.metadata

    @classmethod
    def from_file(cls, path: str | Path, device: str = "auto", fmt: str | None = None) -> ExportedPredictor:
        """fmt: the format's name; by default, the one whose suffix the file name ends with."""
        model = open_exported(path, device, get_format(fmt) if fmt else None)
        return cls(model, ModelCard.from_dict(model.metadata, str(path)))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        outputs = [torch.empty(0, self.card.num_classes)]
        for chunk in images.split(self.chunk_size):
            outputs.append(self.model.run(chunk)[0])
        return torch.cat(outputs)

    @property
    def epoch(self) -> int | None:
        return self.metadata.get("epoch")

    @property
    def best_test_accuracy(self) -> float | None:
        return self.metadata.get("best_test_accuracy")

    @property
    def runs_on(self) -> str:
        return self.model.runs_on


OnnxPredictor = ExportedPredictor  # its name from when .onnx files were the only exported models that ran


def open_predictor(path: str | Path, device: str = "auto", precision: str = "auto") -> PredictorBase:
    """A TorchPredictor for a checkpoint or run folder, or an ExportedPredictor for a file written by resnetlab
    export (told apart by the suffixes of formats.EXPORT_FORMATS)."""
    if format_of(path) is not None:
        return ExportedPredictor.from_file(path, device)
    return TorchPredictor.from_checkpoint(resolve_path(path), device, precision)
