"""Running a trained checkpoint: on a dataset's test split, or on image files."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import build_model, load_checkpoint
from .models import fold_batchnorm
from .data import ImageData, TensorBatches, load_split, normalize
from .engine import evaluate, predict_logits
from .errors import UserError
from .folder import image_to_tensor, open_image
from .runtime import Runtime, select_runtime

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"}


@dataclass
class Predictor:
    """A checkpoint loaded for inference: the model (its BN layers folded into the convolutions, which gives the
    same outputs faster), and everything needed to prepare its input."""

    checkpoint: dict[str, Any]
    model: nn.Module
    runtime: Runtime

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto", precision: str = "auto") -> "Predictor":
        checkpoint = load_checkpoint(path)
        runtime = select_runtime(device, precision)
        try:
            model = fold_batchnorm(build_model(checkpoint))
        except (KeyError, RuntimeError, ValueError, TypeError) as e:
            raise UserError(f"{path} is damaged: its weights do not fit its model description ({e}).") from None
        model = model.to(runtime.device, memory_format=runtime.memory_format)
        return cls(checkpoint, model, runtime)

    @property
    def classes(self) -> list[str]:
        return self.checkpoint["classes"]

    @property
    def flip(self) -> bool:
        return bool(self.checkpoint.get("test_time_flip", False))

    def load_test_data(self, data_dir: str | None = None, limit: int | None = None) -> ImageData:
        """The checkpoint's test split, prepared as in training."""
        return self.load_data(data_dir, limit, train=False)

    def load_data(self, data_dir: str | None = None, limit: int | None = None, train: bool = False) -> ImageData:
        """The checkpoint's training or test split, prepared as in training."""
        ckpt = self.checkpoint
        data_dir = data_dir or ckpt.get("data_dir") or "./data"
        data = load_split(ckpt["dataset"], data_dir, train=train, image_size=ckpt["image_size"])
        if data.channels != ckpt["in_channels"] or len(data.classes) != len(self.classes):
            raise UserError(
                f"the data in {data_dir} ({data.channels} channels, {len(data.classes)} classes) does not fit this "
                f"checkpoint ({ckpt['in_channels']} channels, {len(self.classes)} classes); give the --data-dir it "
                "was trained on."
            )
        if limit is not None:
            data = replace(data, images=data.images[:limit], labels=data.labels[:limit])
        return replace(data, mean=tuple(ckpt["mean"]), std=tuple(ckpt["std"]))

    def batches(self, data: ImageData, batch_size: int = 500) -> TensorBatches:
        return TensorBatches(data, batch_size, device=self.runtime.device, memory_format=self.runtime.memory_format)

    def describe(self) -> str:
        return self.runtime.describe()

    def evaluate(self, data: ImageData) -> dict[str, Any]:
        return evaluate(self.model, self.batches(data), self.runtime, len(self.classes), flip=self.flip)

    def probabilities(self, data: ImageData) -> tuple[torch.Tensor, torch.Tensor]:
        logits, labels = predict_logits(self.model, self.batches(data), self.runtime, self.flip)
        return logits.softmax(1), labels

    def prepare_images(self, paths: list[Path]) -> torch.Tensor:
        """Image files as a uint8 batch, converted to the model's channels and size."""
        size, channels = self.checkpoint["image_size"], self.checkpoint["in_channels"]
        return torch.stack([image_to_tensor(open_image(p), channels, size) for p in paths])

    def probabilities_of_images(self, images: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.checkpoint["mean"], device=self.runtime.device)
        std = torch.tensor(self.checkpoint["std"], device=self.runtime.device)
        x = normalize(images.to(self.runtime.device), mean, std).contiguous(memory_format=self.runtime.memory_format)
        self.model.eval()
        with torch.no_grad(), self.runtime.autocast():
            logits = self.model(x).float()
            if self.flip:
                logits = (logits + self.model(x.flip(3)).float()) / 2
        return logits.softmax(1).cpu()

    def top_classes(self, probabilities: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
        values, indices = probabilities.topk(min(k, probabilities.shape[1]), dim=1)
        return [
            [(self.classes[i], float(p)) for p, i in zip(row_values.tolist(), row_indices.tolist())]
            for row_values, row_indices in zip(values, indices)
        ]


def expand_image_paths(inputs: list[str]) -> list[Path]:
    """Image files named directly, and the image files inside named folders (recursively, sorted)."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"the folder {path} has no image files ({', '.join(sorted(IMAGE_SUFFIXES))}).")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise UserError(f"{path} does not exist; give image files or folders of images.")
    return paths


def open_predictor(path: str | Path, device: str = "auto", precision: str = "auto"):
    """A Predictor for a checkpoint or run folder, or an export.OnnxPredictor for an exported .onnx file; both
    have classes, prepare_images, probabilities_of_images, top_classes, load_test_data and probabilities."""
    if Path(path).suffix.lower() == ".onnx":
        from .export import OnnxPredictor

        return OnnxPredictor.from_file(path, device)
    return Predictor.from_checkpoint(path, device, precision)
