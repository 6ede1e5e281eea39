"""Probe candidate nets and recipe settings on CIFAR-10 in a few epochs: the search behind the default for 32x32
colour images (benchmarks/README.md). A plain loop of its own, so that settings resnetlab has no flag for (another
block layout, translation strength) can be tried without touching the library; resnetlab's own figures come from
time_to_accuracy.py.

    python benchmarks/cifar_probe.py lib:resnet9 --batch 128 --lr 0.2 --data-dir data/
    OMP_NUM_THREADS=1 python benchmarks/cifar_probe.py page9 ...   # two probes side by side, one core each

Models: lib:NAME (any resnetlab model), page9 (Page's own residual block: x + ReLU(BN(conv(ReLU(BN(conv x))))),
no ReLU after the sum, PyTorch's default init, no bias in the classifier), r9-111 (resnet9 with a block in every
stage), r9-stem64 (resnet9 with a 64-channel stem). Prints one JSON line per epoch (test accuracy with flip
test-time augmentation when --tta 1); accuracy only: probes run side by side are not timed fairly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from time_to_accuracy import skip_md5

from resnetlab.batches import TensorBatches
from resnetlab.data import DATASETS
from resnetlab.models import BasicBlock, ResNet, create_model


def conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class PageResidual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.f = nn.Sequential(*conv_bn_relu(c, c), *conv_bn_relu(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(x)


class Page9(nn.Module):
    """Page's ResNet-9 at half width (32, 64, 128, 256), as in his DAWNBench code."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256), blocks: tuple[int, ...] = (1, 0, 1)) -> None:
        super().__init__()
        layers, c = conv_bn_relu(3, widths[0]), widths[0]
        for width, n in zip(widths[1:], blocks):
            layers += [*conv_bn_relu(c, width), nn.MaxPool2d(2)] + [PageResidual(width) for _ in range(n)]
            c = width
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(c, 10, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_max_pool2d(self.body(x), 1).flatten(1)) * 0.125


def build(name: str) -> nn.Module:
    page = {"transition": "pool", "head_pool": "max", "logit_scale": 0.125}
    if name.startswith("lib:"):
        return create_model(name[4:])
    if name == "page9":
        return Page9()
    if name == "r9-111":
        return ResNet(BasicBlock, [1, 1, 1], [64, 128, 256], stem_width=32, **page)
    if name == "r9-stem64":
        return ResNet(BasicBlock, [1, 0, 1], [64, 128, 256], stem_width=64, **page)
    raise SystemExit(f"unknown model {name}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--data-dir", default="./data")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.4, help="peak of the one-cycle schedule (SGD, Nesterov)")
    p.add_argument("--wd", type=float, default=5e-4)
    p.add_argument("--ls", type=float, default=0.2, help="label smoothing")
    p.add_argument("--flip", type=int, default=1)
    p.add_argument("--pad", type=int, default=0, help="random translation by up to this many pixels")
    p.add_argument("--tta", type=int, default=1)
    p.add_argument("--warm", type=float, default=0.2, help="share of the steps warming up")
    a = p.parse_args()
    skip_md5()
    torch.manual_seed(0)
    spec = DATASETS["cifar10"]
    train, test = spec.load_split(a.data_dir, True), spec.load_split(a.data_dir, False)
    net = build(a.model).to(memory_format=torch.channels_last)
    mean = torch.tensor(train.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(train.std).view(1, 3, 1, 1) * 255

    def forward(x: torch.Tensor) -> torch.Tensor:
        x = ((x.float() - mean) / std).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return net(x).float()

    batches = TensorBatches(
        train,
        a.batch,
        shuffle=True,
        augment=bool(a.flip or a.pad),
        crop_padding=a.pad,
        hflip=bool(a.flip),
        drop_last=True,
    )
    decay = [q for q in net.parameters() if q.ndim > 1]
    other = [q for q in net.parameters() if q.ndim <= 1]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": a.wd}, {"params": other, "weight_decay": 0}],
        lr=a.lr,
        momentum=0.9,
        nesterov=True,
    )
    total = a.epochs * len(batches)
    warm = int(a.warm * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (total - s) / (total - warm))
    )
    started = time.perf_counter()
    for epoch in range(a.epochs):
        net.train()
        batches.set_epoch(epoch)
        for x, y in batches:
            loss = F.cross_entropy(forward(x), y, label_smoothing=a.ls)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        net.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(test), 1000):
                x, y = test.images[i : i + 1000], test.labels[i : i + 1000]
                p_ = forward(x).softmax(1) + (forward(x.flip(-1)).softmax(1) if a.tta else 0)
                correct += (p_.argmax(1) == y).sum().item()
        print(
            json.dumps(
                {
                    "epoch": epoch + 1,
                    "test_accuracy": correct / len(test),
                    "wall_seconds": round(time.perf_counter() - started, 1),
                }
            ),
            flush=True,
        )
    print(json.dumps({"settings": vars(a)}))


if __name__ == "__main__":
    main()
