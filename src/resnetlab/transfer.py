"""Where a run's weights start: torchvision's ImageNet weights (train --pretrained) or a resnetlab checkpoint of the
same architecture (train --init).

A `Start` holds the weights and what they fix about the new run's model card: architecture, shortcut and stem,
input channels, and for ImageNet weights the normalization they were trained with. `initialize` copies them into
the new network; the head (fc) is kept only when the classes are the same, otherwise the network keeps its
freshly initialized head for the new classes.
"""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from torch import nn

from .card import ModelCard
from .checkpoint import export_kind, load_checkpoint, resolve_path
from .config import PRETRAINED_DEFAULT_MODEL, TrainConfig
from .errors import ConfigError, UserError
from .models import model_spec, pretrained_models

HEAD = "fc."  # the classifier's parameters: replaced for new classes, trained at the full learning rate

# The normalization torchvision's ImageNet weights were trained with (their transforms().mean and .std).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The weights each model declares (models.ModelSpec.imagenet_weights, pinned there). Whether V2 transfers better
# to small datasets than the V1 weights declared is to be measured.
IMAGENET_WEIGHTS: dict[str, tvm.WeightsEnum] = {
    name: tvm.get_weight(model_spec(name).imagenet_weights) for name in pretrained_models()
}

# The default image size of --pretrained for datasets smaller than this (28 px MNIST-likes, 32 px CIFAR, folders):
# the ImageNet stem (7x7/2 conv + max-pool) and three stride-2 stages shrink 32 px to a 1x1 last feature map; 64 px
# keeps 2x2. Measured (benchmarks/default_throughput.py --models resnet18 --stem imagenet --sizes ..., bf16, 2
# cores): 1,002 training images/s at 32 px, 310 at 64 (about the 32 px colour default's cost), 155 at 96, 98 at
# 128, 30 at 224; above 64 px each step costs 2-3x the time, so larger sizes are for --image-size to ask for.
PRETRAINED_MIN_IMAGE_SIZE = 64


@dataclass(frozen=True)
class Start:
    """Weights a run starts from, and what they fix about its model card."""

    weights: dict[str, torch.Tensor]
    source: str  # the file they came from
    advice: str  # what to do when the file does not fit
    architecture: str
    shortcut: str
    stem: str
    in_channels: int
    classes: tuple[str, ...] = ()  # the head's classes; () for ImageNet's head, which is always replaced
    mean: tuple[float, ...] = ()  # the normalization the weights need; (): the new data's own
    std: tuple[float, ...] = ()
    image_size: int | None = None  # the default image size (a checkpoint's own); None: see min_image_size
    min_image_size: int = 0  # the dataset's own size, raised to at least this

    def image_size_for(self, dataset_size: int) -> int:
        """The image size a run takes without --image-size, for a dataset whose images are dataset_size px."""
        return self.image_size or max(dataset_size, self.min_image_size)

    def keeps_head(self, classes: tuple[str, ...]) -> bool:
        """Whether the head is loaded too: only for the very same classes, in the same order."""
        return self.classes == tuple(classes)

    def describe_weights(self, classes: tuple[str, ...]) -> str:
        """One line for the start of training: where the weights come from and what is new."""
        kept = self.keeps_head(classes)
        head = "its head kept for the same classes" if kept else f"a new head for {len(classes)} classes"
        norm = ", ImageNet's mean/std" if self.mean else ""
        return f"starting from {self.source} ({self.architecture}, {head}{norm})"


def imagenet_weights_file(model: str) -> Path:
    """Where torchvision's weights API keeps (and, offline, looks for) the ImageNet weights of `model`:
    $TORCH_HOME/hub/checkpoints/<the file name in their URL>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(IMAGENET_WEIGHTS[model].url).path).name


def imagenet_start(model: str, progress: bool = True) -> Start:
    """torchvision's ImageNet weights of `model`, downloaded into the hub cache once and read from it after that.

    Raises UserError naming the file, its folder and its URL when it is neither cached nor downloadable.
    """
    if model not in IMAGENET_WEIGHTS:
        raise UserError(f"{model} has no ImageNet weights; --pretrained works with {', '.join(IMAGENET_WEIGHTS)}.")
    weights, file = IMAGENET_WEIGHTS[model], imagenet_weights_file(model)
    cached = file.is_file()
    try:
        # torch.hub announces a download on stdout, which belongs to the run's own output: on stderr, or nowhere.
        with contextlib.redirect_stdout(sys.stderr if progress else io.StringIO()):
            # check_hash: a download must match the hash in its file name; weights_only: a file cannot run code.
            state = weights.get_state_dict(progress=progress, check_hash=True, weights_only=True)
        if not isinstance(state, dict):
            raise TypeError(f"it holds a {type(state).__name__}, not a state dict")
    except Exception as e:  # noqa: BLE001 - a failed download or an unreadable file, whatever raised it
        if not cached and not file.is_file():
            raise UserError(
                f"the ImageNet weights of {model} are not in {file.parent} and could not be downloaded "
                f"({type(e).__name__}: {_first_line(e)}); download {weights.url} into {file}, or run once "
                "online."
            ) from None
        raise UserError(
            f"{file} could not be read as the ImageNet weights of {model} ({type(e).__name__}); delete it "
            f"so that it is downloaded again, or download {weights.url} into it."
        ) from None
    return Start(
        weights=state,
        source=str(file),
        advice=f"delete it so that it is downloaded again from {weights.url}",
        architecture=model,
        shortcut="B",
        stem="imagenet",
        in_channels=3,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        min_image_size=PRETRAINED_MIN_IMAGE_SIZE,
    )


def checkpoint_start(path: str, model: str | None = None, shortcut: str | None = None) -> Start:
    """A resnetlab checkpoint (or a run folder's best.pt) to start from. model and shortcut, when given, must be
    the checkpoint's own: --init only starts a network of the same architecture."""
    file = resolve_path(path)
    kind = export_kind(file)
    if kind:
        raise UserError(
            f"--init {file} is {kind} from resnetlab export, which cannot be a starting point; --init takes "
            "a best.pt, last.pt or run folder written by resnetlab train."
        )
    checkpoint = load_checkpoint(file)
    card, source = checkpoint.card, str(file)
    net = checkpoint.build_model(source)  # checks that the weights fit the card; gives the options it was built with
    if model is not None and model != card.architecture:
        raise UserError(
            f"--init {source} is a {card.architecture}, not a {model}; start from a checkpoint of the "
            f"same architecture, or leave out --model to train a {card.architecture}."
        )
    if shortcut is not None and shortcut != net.shortcut:
        raise UserError(
            f"--init {source} has shortcut {net.shortcut}, not {shortcut}; leave out --shortcut to keep "
            "the checkpoint's."
        )
    return Start(
        weights=checkpoint.state_dict,
        source=source,
        advice="train again or use another checkpoint",
        architecture=card.architecture,
        shortcut=net.shortcut,
        stem=net.stem,
        in_channels=card.in_channels,
        classes=card.classes,
        image_size=card.image_size,
    )


def starting_point(config: TrainConfig) -> Start | None:
    """The weights a run starts from: ImageNet's (--pretrained), a checkpoint's (--init), or None (fresh ones)."""
    if config.pretrained:
        model = config.model or PRETRAINED_DEFAULT_MODEL
        if model not in IMAGENET_WEIGHTS:
            raise ConfigError(
                "pretrained", f"needs a model with ImageNet weights ({', '.join(IMAGENET_WEIGHTS)}), not {model}"
            )
        return imagenet_start(model, progress=not config.quiet)
    if config.init:
        return checkpoint_start(config.init, config.model, config.shortcut)
    return None


def initialize(net: nn.Module, card: ModelCard, start: Start) -> None:
    """Copy start's weights into net, which was built from card: every tensor but the head's, and the head's too
    when the classes are the same. Raises UserError when a tensor is missing, extra or of another shape."""
    keep_head = start.keeps_head(card.classes)
    weights = {k: v for k, v in start.weights.items() if keep_head or not k.startswith(HEAD)}
    expected = net.state_dict()
    # torchvision's older files lack BatchNorm's num_batches_tracked, which nothing but momentum=None reads.
    optional = {k for k in expected if k.endswith("num_batches_tracked") or (k.startswith(HEAD) and not keep_head)}
    wrong = sorted(
        k
        for k, v in weights.items()
        if k not in expected or not isinstance(v, torch.Tensor) or v.shape != expected[k].shape
    )
    wrong += sorted(set(expected) - set(weights) - optional)
    if wrong:
        raise UserError(
            f"{start.source} does not fit {card.architecture} (first difference: {wrong[0]}); {start.advice}."
        )
    net.load_state_dict(weights, strict=False)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:120] if text else "no details"
