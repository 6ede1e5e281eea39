"""Grad-CAM (Selvaraju et al. 2017, arXiv:1610.02391): where in the image a stage's features drove the class.

For class c and a stage's output feature maps A^k (k = channel), Grad-CAM weighs each map by the average
gradient of the class score over it, alpha_k = mean_ij d y_c / d A^k_ij, and keeps the positive part of the
weighted sum, ReLU(sum_k alpha_k A^k), upsampled to the image's size. On the last stage of a ResNet, whose
output goes only through global average pooling into the classifier, this is the class activation map.

Written here rather than taken from the `grad-cam` package, which needs OpenCV and scikit-learn for what is a
dozen lines of PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError
from .imagefiles import expand_image_paths
from .inference import TorchPredictor
from .plots import gradcam_grid
from .preprocess import PixelClassifier


def grad_cam(
    model: nn.Module, x: torch.Tensor, layer: nn.Module, target: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM maps of `layer`'s output for a batch of normalized images x [N, C, H, W].

    target: the class to explain per image; default: the predicted class. Returns (maps [N, H, W] scaled to
    [0, 1] per image, logits [N, classes]). The model should be in eval mode.
    """
    activations: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda module, inputs, output: activations.append(output))
    try:
        with torch.enable_grad():
            # The input requires grad so the graph exists even where the weights are frozen.
            logits = model(x.detach().requires_grad_(True)).float()
            target = logits.argmax(1) if target is None else target.to(logits.device)
            score = logits.gather(1, target.view(-1, 1)).sum()
            (gradients,) = torch.autograd.grad(score, activations[-1])
    finally:
        handle.remove()
    features = activations[-1].detach().float()
    weights = gradients.float().mean(dim=(2, 3), keepdim=True)  # alpha_k: one weight per channel
    cam = F.relu((weights * features).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return cam / peak, logits.detach()


@dataclass
class Explanation:
    """Grad-CAM of a batch: the images as given (uint8), their maps, and what the model predicted."""

    images: torch.Tensor  # uint8 [N, C, H, W]
    maps: torch.Tensor  # [N, H, W] in [0, 1]
    predicted: list[str]
    confidence: list[float]
    names: list[str]  # "test image 3" or the file name
    actual: list[str | None]  # the true class of test images; None for files


def _is_index(item: str) -> bool:
    return item.isdigit() and not Path(item).exists()


def cam_of(
    classifier: PixelClassifier, images: torch.Tensor, stage: nn.Module, target: torch.Tensor | None = None
) -> torch.Tensor:
    """Grad-CAM maps [N, H, W] of uint8 images through a PixelClassifier's network (normalized as everywhere)."""
    return grad_cam(classifier.network, classifier.prepare(images), stage, target)[0]


def _gather(
    predictor: TorchPredictor, items: list[str], data_dir: str | None, cache_dir: str | None = None
) -> tuple[torch.Tensor, list, list]:
    """The images to explain (test images by index, image files or folders), their names and true classes."""
    indices = [int(item) for item in items if _is_index(item)]
    test = predictor.load_test_data(data_dir, cache_dir=cache_dir) if indices else None
    images, names, actual = [], [], []
    for item in items:
        if _is_index(item):
            i = int(item)
            if i >= len(test):
                raise UserError(
                    f"test image {i} does not exist: the test split has {len(test)} images (0 to {len(test) - 1})."
                )
            images.append(test.take(torch.tensor([i]))[0])
            names.append(f"test image {i}")
            actual.append(predictor.card.classes[int(test.labels[i])])
        else:
            paths = expand_image_paths([item])
            images += list(predictor.decode_files(paths))
            names += [p.name for p in paths]
            actual += [None] * len(paths)
    return torch.stack(images), names, actual


def explain_checkpoint(
    checkpoint: str | Path,
    items: list[str],
    data_dir: str | None = None,
    stage: int | None = None,
    device: str = "auto",
    cache_dir: str | None = None,
) -> Explanation:
    """Grad-CAM of a checkpoint's model for test images (given by index) and image files or folders. The
    probabilities are the ones `predict` gives (with the checkpoint's test-time flip, if any); each map is of
    the image as given. cache_dir: where a folder's decoded images are kept (data.load_split)."""
    # fp32: gradients of a bf16 forward pass make noisier maps, and one batch is fast either way.
    predictor = TorchPredictor.from_checkpoint(checkpoint, device, "fp32")
    stages = predictor.network.stages()
    stage = stage or len(stages)
    if not 1 <= stage <= len(stages):
        raise UserError(f"--stage must be between 1 and {len(stages)} for this model, not {stage}.")
    batch, names, actual = _gather(predictor, items, data_dir, cache_dir)
    probabilities = predictor.probabilities(batch)
    confidence, predicted = probabilities.max(1)
    device_batch = batch.to(predictor.runtime.device)
    maps = [
        cam_of(predictor.classifier, chunk, stages[stage - 1], target.to(chunk.device)).cpu()
        for chunk, target in zip(device_batch.split(64), predicted.split(64))
    ]
    return Explanation(
        images=batch,
        maps=torch.cat(maps),
        predicted=[predictor.card.classes[i] for i in predicted.tolist()],
        confidence=confidence.tolist(),
        names=names,
        actual=actual,
    )


def explanation_lines(explanation: Explanation) -> list[str]:
    """One line per image: what it is, what the model predicted, and the true class where known."""
    lines = []
    for name, p, c, a in zip(explanation.names, explanation.predicted, explanation.confidence, explanation.actual):
        lines.append(f'{name}: predicted "{p}" ({c:.1%})' + (f', actual "{a}"' if a is not None else ""))
    return lines


def draw_explanation(explanation: Explanation, path: str | Path, title: str = "") -> Path:
    """Each image above its Grad-CAM overlay, titled with the prediction (and the true class where known)."""
    labels, wrong = [], []
    for predicted, confidence, actual in zip(explanation.predicted, explanation.confidence, explanation.actual):
        labels.append(f"{predicted} {confidence:.0%}" + (f"\ntrue: {actual}" if actual is not None else ""))
        wrong.append(actual is not None and actual != predicted)
    return gradcam_grid(explanation.images, explanation.maps, labels, wrong, path, title)
