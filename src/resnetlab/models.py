"""Residual networks of He et al. 2015, "Deep Residual Learning for Image Recognition" (arXiv:1512.03385).

A residual block learns the residual function F(x) and outputs H(x) = F(x) + x. When F(x) and x differ in
shape (a stage that halves the resolution and widens the channels), the shortcut matches them:

- option A: subsample x with the block's stride and pad the new channels with zeros (no parameters);
- option B: a projection shortcut, a strided 1x1 convolution + BN.

The families built here:

- CIFAR-style nets (section 4.2): a 3x3 stem, three stages of 16/32/64 channels, n basic blocks per stage,
  6n+2 weighted layers: resnet20/32/44/56/110, option A by default.
- A compact net for small images, resnet8w, the default for 28x28 datasets: a stride-2 3x3 stem, then one
  basic block in each of three stages of 48/96/192 channels (8 weighted layers, option B). On 28x28 images it
  costs three quarters of resnet20's multiply-adds, trains about 1.5 times as fast on a CPU (wider layers use
  the cores better) and, in 4 epochs on Fashion-MNIST, ends more accurate (benchmarks/README.md).
- resnet9, the default for 32x32 colour images: the residual "ResNet-9" with which D. Page trained CIFAR-10
  fastest in DAWNBench (2018, "How to train your ResNet"), at half its width. A 3x3 stem of 32 channels, then
  three stages of 64/128/256 channels; each stage opens with a 3x3 convolution and a 2x2 max-pool (a
  transition, so no shortcut ever needs matching), and stages one and three add a basic block with the identity
  shortcut. 9 weighted layers; global max-pooling and logits scaled by 1/8 as in Page's net.
- resnet9w, the model of the airbench recipe: resnet9's layout with K. Jordan's airbench choices (2024): a fixed
  2x2 whitening stem set from training images (init_whitening), stages of 64/256/256 channels opened by conv,
  max-pool, BN, GELU, BN with its scale fixed at 1, Dirac-initialized convolutions.
- ImageNet-style nets (section 3.4, Table 1): four stages of 64..512 channels, basic or bottleneck blocks:
  resnet18/34/50/101/152, option B by default. With ``stem="imagenet"`` (7x7/2 conv + 3x3/2 max-pool) their
  module names and shapes equal torchvision's, so torchvision state dicts load with ``strict=True``.

``plainN`` are the same nets with every shortcut removed, for the paper's degradation experiment.

Each family is one builder function registered with `register_model` under the names of its depths, declaring its
block, widths, shortcut, stems and options; `create_model`, `list_models`, `resnetlab models`, the model card and
the tests read that registry. Every module that owns a convolution or a BN declares its conv-BN pairs
(`conv_bn_pairs`), which `fold_batchnorm` and `block_3x3_layers` read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from copy import deepcopy
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

WHITEN_KERNEL = 2  # the whitening stem's filters are 2x2, as airbench's
Shortcut = Literal["A", "B"]
Stem = Literal["small", "strided", "imagenet", "whiten"]
Activation = Literal["relu", "gelu"]

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ModelSpec",
    "ProjectionShortcut",
    "ResNet",
    "ZeroPadShortcut",
    "block_3x3_layers",
    "conv_bn_layers",
    "create_model",
    "fold_batchnorm",
    "get_model",
    "list_models",
    "model_spec",
    "model_summary",
    "pretrained_models",
    "register_model",
    "weighted_layers",
]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def make_activation(kind: Activation) -> nn.Module:
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "gelu":
        return nn.GELU()
    raise ValueError(f"activation must be 'relu' or 'gelu', not {kind!r}")


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: identity on a strided subsample of x, new channels filled with zeros. No parameters."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.extra_channels = out_planes - in_planes
        self.stride = stride

    def conv_bn_pairs(self) -> tuple[tuple[str, str], ...]:
        return ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


class ProjectionShortcut(nn.Sequential):
    """Option B: a strided 1x1 convolution + BN (named 0 and 1, as torchvision's downsample)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__(conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))

    def conv_bn_pairs(self) -> tuple[tuple[str, str], ...]:
        return (("0", "1"),)


def make_shortcut(kind: Shortcut, in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """The shortcut used where F(x) and x differ in shape."""
    if kind == "A":
        return ZeroPadShortcut(in_planes, out_planes, stride)
    if kind == "B":
        return ProjectionShortcut(in_planes, out_planes, stride)
    raise ValueError(f"shortcut must be 'A' or 'B', not {kind!r}")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions: F(x) = BN(conv(ReLU(BN(conv(x))))), H(x) = ReLU(F(x) + x). (GELU in resnet9w.)"""

    expansion = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        residual: bool = True,
        activation: Activation = "relu",
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = make_activation(activation)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.residual = residual

    def conv_bn_pairs(self) -> tuple[tuple[str, str], ...]:
        return (("conv1", "bn1"), ("conv2", "bn2"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 (reduce), 3x3, 1x1 (restore, x4 channels): the three-layer block of the deeper nets."""

    expansion = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        residual: bool = True,
    ) -> None:
        super().__init__()
        # Stride on the 3x3 convolution, as torchvision's "ResNet V1.5" does.
        self.conv1 = conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.residual = residual

    def conv_bn_pairs(self) -> tuple[tuple[str, str], ...]:
        return (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


Block = type[BasicBlock] | type[Bottleneck]


class PoolTransition(nn.Module):
    """A stage's opening in resnet9: conv3x3 to the stage's width, BN, ReLU, then a 2x2 max-pool halves the
    resolution. The blocks after it see x and F(x) of the same shape, so their shortcuts are identities.

    pool_first (resnet9w, as airbench): conv, max-pool, BN, activation: BN and the activation see a quarter of the
    pixels. With BN's scale positive (resnet9w keeps it at 1) the max-pool commutes with BN and ReLU."""

    def __init__(self, in_planes: int, planes: int, activation: Activation = "relu", pool_first: bool = False) -> None:
        super().__init__()
        self.conv = conv3x3(in_planes, planes)
        self.bn = nn.BatchNorm2d(planes)
        self.relu = make_activation(activation)
        self.pool = nn.MaxPool2d(2)
        self.pool_first = pool_first

    def conv_bn_pairs(self) -> tuple[tuple[str, str], ...]:
        return (("conv", "bn"),)

    def folds_bn(self) -> bool:
        """Whether BN folds into the convolution: across the max-pool only where BN keeps the order of values."""
        return not self.pool_first or bool((self.bn.weight > 0).all())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_first:
            return self.relu(self.bn(self.pool(self.conv(x))))
        return self.pool(self.relu(self.bn(self.conv(x))))


class ResNet(nn.Module):
    """A stem, stages of residual blocks, global pooling (average; max in resnet9) and a linear classifier."""

    def __init__(
        self,
        block: Block,
        layers: list[int],
        widths: list[int],
        num_classes: int = 10,
        in_channels: int = 3,
        shortcut: Shortcut = "B",
        stem: Stem = "small",
        residual: bool = True,
        zero_init_residual: bool = False,
        stem_width: int | None = None,
        transition: Literal["stride", "pool"] = "stride",
        head_pool: Literal["avg", "max"] = "avg",
        logit_scale: float = 1.0,
        activation: Activation = "relu",
        pool_first: bool = False,
        fc_bias: bool = True,
    ) -> None:
        super().__init__()
        if len(layers) != len(widths):
            raise ValueError("layers and widths must have the same length")
        self.residual = residual
        self.shortcut = shortcut
        self.stem = stem
        self.transition = transition
        self.logit_scale = logit_scale
        self.activation = activation
        self.pool_first = pool_first
        self.in_planes = stem_width or widths[0]
        if stem == "whiten":
            # airbench's whitening layer: 2x2 filters set from the training images (init_whitening) and frozen; the
            # eigenvectors and their negatives, so the activation after it keeps both signs. No BN.
            self.in_planes = 2 * in_channels * WHITEN_KERNEL**2
            self.conv1 = nn.Conv2d(in_channels, self.in_planes, kernel_size=WHITEN_KERNEL, bias=True)
        elif stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, self.in_planes, kernel_size=7, stride=2, padding=3, bias=False)
        elif stem == "small":
            self.conv1 = conv3x3(in_channels, self.in_planes)
        elif stem == "strided":
            self.conv1 = conv3x3(in_channels, self.in_planes, stride=2)
        else:
            raise ValueError(f"stem must be 'small', 'strided', 'imagenet' or 'whiten', not {stem!r}")
        self.bn1 = nn.Identity() if stem == "whiten" else nn.BatchNorm2d(self.in_planes)
        self.relu = make_activation(activation)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()
        for i, (blocks, width) in enumerate(zip(layers, widths)):
            stage = self._make_layer(block, width, blocks, stride=1 if i == 0 else 2)
            setattr(self, f"layer{i + 1}", stage)
        self.num_stages = len(layers)
        self.global_pool = nn.AdaptiveAvgPool2d((1, 1)) if head_pool == "avg" else nn.AdaptiveMaxPool2d((1, 1))
        self.num_features = widths[-1] * block.expansion
        self.fc = nn.Linear(self.num_features, num_classes, bias=fc_bias)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            # Each block starts as the identity (Goyal et al. 2017, "Accurate, Large Minibatch SGD").
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        if self.transition == "pool":
            opening = PoolTransition(self.in_planes, planes, self.activation, self.pool_first)
            self.in_planes = planes
            return nn.Sequential(
                opening,
                *[block(planes, planes, residual=self.residual, activation=self.activation) for _ in range(blocks)],
            )
        out_planes = planes * block.expansion
        downsample = None
        if self.residual and (stride != 1 or self.in_planes != out_planes):
            downsample = make_shortcut(self.shortcut, self.in_planes, out_planes, stride)
        layers = [block(self.in_planes, planes, stride, downsample, self.residual)]
        self.in_planes = out_planes
        layers += [block(self.in_planes, planes, residual=self.residual) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def conv_bn_pairs(self) -> tuple[tuple[str, str], ...]:
        """The stem's convolution and BN (the whitening stem has no BN)."""
        return (("conv1", "bn1"),) if isinstance(self.bn1, nn.BatchNorm2d) else ()

    def prepare(self, images: Callable[[], torch.Tensor]) -> None:
        """Set-up that depends on the training data, called once before training starts from fresh weights:
        the whitening stem is set from images() (normalized training images, see init_whitening); the other
        stems need none, and images is not called."""
        if self.stem == "whiten":
            self.init_whitening(images())

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the whitening stem from normalized training images [N, C, H, W] (airbench: 5,000 of them): each
        filter is an eigenvector of the covariance of the images' 2x2 patches over the square root of its
        eigenvalue, so the stem's outputs are decorrelated with unit variance; the second half are the negatives."""
        if self.stem != "whiten":
            raise ValueError(f"only the whitening stem is set from images, not the {self.stem!r} stem")
        c, k = self.conv1.in_channels, WHITEN_KERNEL
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
        values, vectors = torch.linalg.eigh(patches.double().T @ patches.double() / len(patches))
        filters = (vectors.T / torch.sqrt(values.clamp(min=0) + eps)[:, None]).flip(0).reshape(c * k * k, c, k, k)
        self.conv1.weight.copy_(torch.cat((filters, -filters)).to(self.conv1.weight.dtype))
        self.conv1.bias.zero_()

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map, before pooling."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.stages():
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc(torch.flatten(self.global_pool(x), 1))
        return logits * self.logit_scale if self.logit_scale != 1.0 else logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


LARGE_IMAGE = 64  # pixels: above this, a model with a large_image_stem defaults to it


@dataclass(frozen=True)
class ModelSpec:
    """What a registered model declares: read by create_model, the model card, `resnetlab models` and the tests."""

    name: str
    family: str
    builder: Callable[..., ResNet]
    description: str
    block: Block
    layers: tuple[int, ...]  # blocks per stage
    widths: tuple[int, ...]  # channels per stage (of the block's 3x3 convolutions)
    shortcut: Shortcut  # the default; "A" or "B" may be asked for
    stems: tuple[Stem, ...]  # the stems it can be built with, its default first
    large_image_stem: Stem | None = None  # the default stem for images over LARGE_IMAGE pixels
    options: Mapping[str, Any] = field(default_factory=dict)  # its other ResNet arguments, fixed
    residual: bool = True  # False: the plain net, every shortcut removed
    min_image_size: int = 1  # pixels
    imagenet_weights: str | None = None  # torchvision's ImageNet weights for it, as torchvision.models.get_weight names

    def default_stem(self, image_size: int | None) -> Stem:
        large = self.large_image_stem is not None and image_size is not None and image_size > LARGE_IMAGE
        return self.large_image_stem if large else self.stems[0]

    def fixed_options(self) -> dict[str, Any]:
        """Everything the model is built with besides its shortcut and stem, as the model card records it."""
        layout = {"block": self.block.__name__, "layers": list(self.layers), "widths": list(self.widths)}
        return {**layout, "residual": self.residual, **self.options}

    def choices(self) -> dict[str, tuple[Any, ...]]:
        """The options that may be chosen, with their allowed values."""
        return {"shortcut": ("A", "B"), "stem": self.stems}


_MODELS: dict[str, ModelSpec] = {}


def register_model(
    family: str,
    depths: Mapping[str, tuple[Block, list[int]]],
    *,
    plain: Mapping[str, str] | None = None,
    weights: Mapping[str, str] | None = None,
    **declared: Any,
) -> Callable[[Callable[..., ResNet]], Callable[..., ResNet]]:
    """Register a family's builder under each name of `depths` (name -> its block and blocks per stage) and of
    `plain` (name -> the residual net whose shortcuts it removes), with what the family declares (the other fields
    of ModelSpec) and, in `weights`, the ImageNet weights of some names. The builder is called with the spec and
    create_model's options, and returns the network."""

    def register(builder: Callable[..., ResNet]) -> Callable[..., ResNet]:
        for name, (block, layers) in depths.items():
            imagenet = (weights or {}).get(name)
            _add(
                ModelSpec(
                    name, family, builder, block=block, layers=tuple(layers), imagenet_weights=imagenet, **declared
                )
            )
        for name, residual_name in (plain or {}).items():
            spec = _MODELS[residual_name]
            _add(ModelSpec(name, family, builder, block=spec.block, layers=spec.layers, residual=False, **declared))
        return builder

    return register


def _add(spec: ModelSpec) -> None:
    if spec.name in _MODELS:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _MODELS[spec.name] = spec


def _resnet(
    spec: ModelSpec, num_classes: int, in_channels: int, shortcut: Shortcut, stem: Stem, **options: Any
) -> ResNet:
    return ResNet(
        spec.block,
        list(spec.layers),
        list(spec.widths),
        num_classes=num_classes,
        in_channels=in_channels,
        shortcut=shortcut,
        stem=stem,
        residual=spec.residual,
        **{**spec.options, **options},
    )


_CIFAR_WIDTHS = (16, 32, 64)
_IMAGENET_WIDTHS = (64, 128, 256, 512)
_ANY_STEM: tuple[Stem, ...] = ("small", "strided", "imagenet", "whiten")


@register_model(
    "cifar",
    {f"resnet{6 * n + 2}": (BasicBlock, [n] * 3) for n in (3, 5, 7, 9, 18)},
    plain={f"plain{6 * n + 2}": f"resnet{6 * n + 2}" for n in (3, 5, 7, 9, 18)},
    widths=_CIFAR_WIDTHS,
    shortcut="A",
    stems=("small",),
    description="CIFAR-style 16/32/64 channels, shortcut A",
)
def cifar_resnet(spec: ModelSpec, **options: Any) -> ResNet:
    """He et al. 2015, section 4.2: 6n+2 weighted layers."""
    return _resnet(spec, **options)


@register_model(
    "compact",
    {"resnet8w": (BasicBlock, [1, 1, 1])},
    plain={"plain8w": "resnet8w"},
    widths=(48, 96, 192),
    shortcut="B",
    stems=("strided", "small", "imagenet", "whiten"),
    description="compact 48/96/192 channels after a stride-2 stem, shortcut B; fast on a CPU",
)
def compact_resnet(spec: ModelSpec, **options: Any) -> ResNet:
    return _resnet(spec, **options)


@register_model(
    "page",
    {"resnet9": (BasicBlock, [1, 0, 1])},
    widths=(64, 128, 256),
    shortcut="B",
    stems=("small",),
    # Page's net: a half-width stem, stages open with conv + pool, max-pooled features, logits / 8
    options={"stem_width": 32, "transition": "pool", "head_pool": "max", "logit_scale": 0.125},
    description="Page's ResNet-9 at half width: 32-channel stem, conv + max-pool stages of 64/128/256, identity "
    "shortcuts; fast to high accuracy on 32x32 colour images",
)
def page_resnet(spec: ModelSpec, **options: Any) -> ResNet:
    return _resnet(spec, **options)


@register_model(
    "airbench",
    {"resnet9w": (BasicBlock, [1, 0, 1])},
    widths=(64, 256, 256),
    shortcut="B",
    stems=("whiten",),
    options={
        "transition": "pool",
        "head_pool": "max",
        "logit_scale": 1 / 9,
        "activation": "gelu",
        "pool_first": True,
        "fc_bias": False,
    },
    min_image_size=16,  # a 2x2 stem and three 2x2 max-pools: 15, 7, 3, 1 pixels
    description="resnet9's layout with airbench's whitening stem, widths 64/256/256, GELU, BN with a fixed scale, "
    "Dirac init: the fastest to 91% on CIFAR-10 (the airbench recipe)",
)
def airbench_resnet(spec: ModelSpec, **options: Any) -> ResNet:
    """airbench's (K. Jordan 2024) choices for its CIFAR-10 net: the whitening stem stays fixed; every 3x3
    convolution starts as the identity on its first in_channels filters (Dirac init); BN keeps its scale at 1,
    trains only its bias, uses its running statistics' momentum 0.4 (airbench's 0.6 in its own convention) and a
    tiny eps."""
    net = _resnet(spec, **options)
    net.conv1.weight.requires_grad_(False)
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3):
            m.reset_parameters()  # PyTorch's default init, as airbench's, under the Dirac filters
            nn.init.dirac_(m.weight.data[: m.in_channels])
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.requires_grad_(False)
            m.eps, m.momentum = 1e-12, 0.4
    return net


@register_model(
    "imagenet",
    {
        "resnet18": (BasicBlock, [2, 2, 2, 2]),
        "resnet34": (BasicBlock, [3, 4, 6, 3]),
        "resnet50": (Bottleneck, [3, 4, 6, 3]),
        "resnet101": (Bottleneck, [3, 4, 23, 3]),
        "resnet152": (Bottleneck, [3, 8, 36, 3]),
    },
    plain={"plain18": "resnet18", "plain34": "resnet34"},
    # torchvision's ImageNet weights (--pretrained), pinned rather than each enum's DEFAULT so that a torchvision
    # upgrade cannot change where a run starts. V1 for all five: the classic weights most transfer results use;
    # resnet50/101/152 also have V2 (a longer, heavily regularized recipe, better on ImageNet itself).
    weights={f"resnet{n}": f"ResNet{n}_Weights.IMAGENET1K_V1" for n in (18, 34, 50, 101, 152)},
    widths=_IMAGENET_WIDTHS,
    shortcut="B",
    stems=("small", "imagenet", "strided", "whiten"),
    large_image_stem="imagenet",
    description="ImageNet-style 64-512 channels, shortcut B",
)
def imagenet_resnet(spec: ModelSpec, **options: Any) -> ResNet:
    """He et al. 2015, section 3.4, Table 1: with the ImageNet stem, torchvision's module names and shapes."""
    return _resnet(spec, **options)


def list_models() -> list[str]:
    """Every name `create_model` accepts: the residual nets, then the plain ones."""
    return [n for n, s in _MODELS.items() if s.residual] + [n for n, s in _MODELS.items() if not s.residual]


def model_spec(name: str) -> ModelSpec:
    """What `name` declares; ValueError naming the valid names when there is no such model."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return _MODELS[name]


def pretrained_models() -> list[str]:
    """The models with ImageNet weights (ModelSpec.imagenet_weights), for --pretrained."""
    return [name for name in list_models() if _MODELS[name].imagenet_weights]


def create_model(
    name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    shortcut: Shortcut | None = None,
    stem: Stem | None = None,
    image_size: int | None = None,
    zero_init_residual: bool = False,
) -> ResNet:
    """Build a registered model by name (see `list_models`) with fresh weights.

    shortcut: "A" (zero-padding) or "B" (1x1 projection); defaults to the model's (A for CIFAR-style nets).
    stem: "small" (3x3/1 conv, no max-pool), "strided" (3x3/2 conv), "imagenet" (7x7/2 conv + max-pool) or "whiten"
    (airbench's); one of the model's stems, its default when None. ImageNet-style nets default to "small" for images
    of 64 px and under (or when image_size is not given) and to "imagenet" above that.
    """
    spec = model_spec(name)
    if stem is not None and stem not in spec.stems:
        stems = " or ".join({"whiten": "whitening"}.get(s, s) for s in spec.stems)
        raise ValueError(f"{name} has only the {stems} stem")
    if image_size is not None and image_size < spec.min_image_size:
        raise ValueError(f"{name} needs images of at least {spec.min_image_size} pixels, not {image_size}")
    return spec.builder(
        spec,
        num_classes=num_classes,
        in_channels=in_channels,
        shortcut=shortcut or spec.shortcut,
        stem=stem or spec.default_stem(image_size),
        zero_init_residual=zero_init_residual,
    )


get_model = create_model  # torchvision's name for it


def option_problem(name: str, options: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first of `options` (as a model card records them: the chosen shortcut and stem, or None for the model's
    default, and the fixed rest of ModelSpec.fixed_options) that the registered model `name` does not have, as
    (option, problem); None when every one fits. Options left out are the model's own."""
    spec, fixed = model_spec(name), model_spec(name).fixed_options()
    for option, value in options.items():
        if option in spec.choices():
            if isinstance(value, bool) or value not in (*spec.choices()[option], None):
                return option, f"is {value!r}, not one of {', '.join(spec.choices()[option])}"
        elif option not in fixed:
            return option, f"is not an option of {name}"
        elif _plain(value) != _plain(fixed[option]):
            return option, f"is {str(value)[:40]!r}, but {name} has {fixed[option]!r}"
    return None


def _plain(value: Any) -> Any:
    """Lists for tuples, as a card read back from JSON has them."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def model_summary(name: str) -> str:
    """A one-line description for `resnetlab models`."""
    spec = model_spec(name)
    layout = f"{spec.block.__name__} x {list(spec.layers)}"
    if not spec.residual:
        return f"{layout}, {spec.description.split(',')[0]}, plain: no shortcuts"
    return f"{layout}, {spec.description}"


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every convolution and linear layer with its name, in network order: the stem first, then each block's
    convolutions (and its projection shortcut, if any), the classifier (fc) last."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def conv_bn_layers(model: nn.Module) -> list[tuple[str, nn.Module, str, str]]:
    """Every conv-BN pair that the model's modules declare (their conv_bn_pairs()), in network order, as (the
    owning module's name, the module, its convolution's attribute, its BN's attribute). Raises TypeError where a
    module owns a convolution or a BN but declares no pairs, or owns a BN that no pair names: folding or measuring
    that model would skip it."""
    layers = []
    for name, module in model.named_modules():
        owned = {n: c for n, c in module.named_children() if isinstance(c, (nn.Conv2d, nn.BatchNorm2d))}
        if not owned:
            continue
        where = f"{type(module).__name__} {name or '(the model)'}"
        if not callable(getattr(module, "conv_bn_pairs", None)):
            raise TypeError(f"{where} has convolutions or BN layers but declares no conv_bn_pairs()")
        pairs = tuple(module.conv_bn_pairs())
        unpaired = [n for n, m in owned.items() if isinstance(m, nn.BatchNorm2d) and n not in {b for _, b in pairs}]
        if unpaired:
            raise TypeError(f"{where}: its BN {unpaired[0]} is in none of its conv_bn_pairs()")
        layers += [(name, module, conv, bn) for conv, bn in pairs]
    return layers


def block_3x3_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d, nn.Module]]:
    """The 3x3 convolutions of the stages (each block's, and the conv + pool openings of resnet9 and resnet9w) in
    network order, each with its name and the BN after it. That BN's output, before the activation and before the
    shortcut is added, is the layer's response in the paper's analysis of layer responses (section 4.2, Figure 7)."""
    return [
        (f"{name}.{conv}", getattr(owner, conv), getattr(owner, bn))
        for name, owner, conv, bn in conv_bn_layers(model)
        if owner is not model and getattr(owner, conv).kernel_size == (3, 3)
    ]


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An inference copy of the model with each BN folded into the convolution before it (same outputs in eval
    mode up to rounding, fewer passes over memory). The copy keeps the module names of the original."""
    folded = deepcopy(model).eval()
    for _, owner, conv_name, bn_name in conv_bn_layers(folded):
        conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
        foldable = getattr(owner, "folds_bn", lambda: True)()  # PoolTransition: not across a max-pool, at times
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and foldable:
            setattr(owner, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(owner, bn_name, nn.Identity())
    return folded
