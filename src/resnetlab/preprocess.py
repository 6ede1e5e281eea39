"""The one preprocessing path from pixels to logits, shared by train, eval, predict, export, explain and serve.

Every model input starts as uint8 pixels [N, C, H, W] (0-255, with the card's channels), resized to the card's
size with `resize`, scaled to [0, 1] and standardized per channel with the training set's mean and std; where
the card says so, each image's logits are averaged with those of its mirror image (test-time flip) and of its copies
moved by one pixel (test-time translation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .card import ModelCard


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float, scaled to [0, 1], then standardized per channel."""
    return (images.float() / 255 - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [N, C, H, W] resized to size x size (bilinear, antialiased: what PIL does when shrinking)."""
    if images.shape[-2:] == (size, size):
        return images
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(images, [size, size], antialias=True)


def flip_average(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The mean of the logits of x and of x mirrored left to right (fp32)."""
    return (model(x).float() + model(x.flip(3)).float()) / 2


def translate_average(
    view: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """airbench's test-time translation: half the logits of x, a quarter each of x moved one pixel down-right and
    one pixel up-left (the edge row and column reflected in). view gives the logits of one version of the images."""
    height, width = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    moved = [padded[..., :height, :width], padded[..., 2:, 2:]]
    return (
        view(x) / 2
        + (
            view(moved[0].contiguous(memory_format=memory_format))
            + view(moved[1].contiguous(memory_format=memory_format))
        )
        / 4
    )


class PixelClassifier(nn.Module):
    """A model that takes uint8 pixels: normalization, the network, and the test-time flip and translation where
    asked.

    It holds the network, it does not copy it: wrapping a training network gives the evaluation path the same
    weights. Exported models are this module traced, so they take pixels too.
    """

    def __init__(
        self,
        network: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        flip: bool = False,
        memory_format: torch.memory_format = torch.contiguous_format,
        translate: bool = False,
    ) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32), persistent=False)
        self.flip, self.translate = flip, translate
        self.memory_format = memory_format

    @classmethod
    def from_card(cls, network: nn.Module, card: ModelCard, **kwargs) -> PixelClassifier:
        return cls(network, card.mean, card.std, card.test_time_flip, translate=card.test_time_translate, **kwargs)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 pixels -> the network's normalized float input."""
        return normalize(images, self.mean, self.std).contiguous(memory_format=self.memory_format)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (fp32) of normalized input x, with the test-time flip and translation where the card asks."""
        return translate_average(self._view, x, self.memory_format) if self.translate else self._view(x)

    def _view(self, x: torch.Tensor) -> torch.Tensor:
        return flip_average(self.network, x) if self.flip else self.network(x).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classify(self.prepare(images))


class ExportedClassifier(nn.Module):
    """What `resnetlab export` writes: uint8 pixels in; logits and probabilities out, the probabilities calibrated:
    softmax(logits / temperature), the card's temperature (confidence.py) a constant of the traced graph."""

    def __init__(self, classifier: PixelClassifier, temperature: float) -> None:
        super().__init__()
        self.classifier = classifier
        self.temperature = float(temperature)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.classifier(images)
        return logits, (logits / self.temperature).softmax(1)
