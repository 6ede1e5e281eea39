"""Probe airbench's CIFAR-10 tricks (K. Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU", 2024) on this
machine's CPU, on residual nets: the search behind the `airbench` recipe (benchmarks/README.md). A loop of its own,
so that each trick can be switched off alone.

    python benchmarks/airbench_probe.py --arch res9 --epochs 10 --data-dir data/
    python benchmarks/airbench_probe.py --arch res9 --no-whiten --no-lookahead ...   # ablations

Archs: airbench (airbench94's net: a frozen 2x2 whitening conv, then three conv-pool-BN-GELU-conv-BN-GELU groups of
64/256/256 channels, no shortcut), res9 (the same stem and widths in resnet9's layout: each stage opens with
conv-pool-BN-act, stages one and three add a basic block with the identity shortcut), res9-111 (a block in every
stage). Tricks, each on by default: the whitening stem (PCA of 2x2 patches of 5,000 training images, frozen; its
bias trains for 3 epochs), lookahead (every 5 steps the weights move to an EMA whose decay rises as t^3), BN with
frozen scales, momentum 0.4 and biases at 64x the learning rate, Dirac-initialized convs, label smoothing 0.2, the
summed loss at batch 1024 with SGD-Nesterov momentum 0.85, alternating flips and random 2-pixel translation with
reflection padding, and test-time augmentation by flips and 1-pixel translations (--tta 2). Prints one JSON line
per epoch (accuracy without test-time augmentation, training seconds so far), then the final accuracy at each
--tta level with the seconds it took.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from time_to_accuracy import skip_md5  # noqa: E402

from resnetlab.data import DATASETS  # noqa: E402


class BatchNorm(nn.BatchNorm2d):
    def __init__(self, channels: int, momentum: float, train_weight: bool) -> None:
        super().__init__(channels, eps=1e-12, momentum=1 - momentum)
        self.weight.requires_grad = train_weight


class Conv(nn.Conv2d):
    def __init__(self, c_in: int, c_out: int, dirac: bool) -> None:
        super().__init__(c_in, c_out, kernel_size=3, padding="same", bias=False)
        if dirac:
            torch.nn.init.dirac_(self.weight.data[: self.weight.size(1)])


class Opening(nn.Module):
    """conv, 2x2 max-pool, BN, activation: airbench's group opening and resnet9's stage transition."""

    def __init__(self, c_in: int, c_out: int, a: argparse.Namespace) -> None:
        super().__init__()
        self.conv, self.bn = Conv(c_in, c_out, a.dirac), BatchNorm(c_out, a.bn_momentum, a.bn_weight)
        self.act = nn.GELU() if a.act == "gelu" else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(F.max_pool2d(self.conv(x), 2)))


class ConvBnAct(nn.Module):
    def __init__(self, c: int, a: argparse.Namespace) -> None:
        super().__init__()
        self.conv, self.bn = Conv(c, c, a.dirac), BatchNorm(c, a.bn_momentum, a.bn_weight)
        self.act = nn.GELU() if a.act == "gelu" else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Basic(nn.Module):
    """The basic block: act(BN(conv(act(BN(conv x)))) + x)."""

    def __init__(self, c: int, a: argparse.Namespace) -> None:
        super().__init__()
        self.conv1, self.bn1 = Conv(c, c, a.dirac), BatchNorm(c, a.bn_momentum, a.bn_weight)
        self.conv2, self.bn2 = Conv(c, c, a.dirac), BatchNorm(c, a.bn_momentum, a.bn_weight)
        self.act = nn.GELU() if a.act == "gelu" else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn2(self.conv2(self.act(self.bn1(self.conv1(x))))) + x)


class Net(nn.Module):
    def __init__(self, a: argparse.Namespace) -> None:
        super().__init__()
        widths = [int(w) for w in a.widths.split(",")]
        if a.whiten:
            self.stem = nn.Conv2d(3, 24, kernel_size=2, padding=0, bias=True)
            self.stem.weight.requires_grad = False
            c = 24
        else:
            self.stem = nn.Sequential(Conv(3, 32, False), BatchNorm(32, a.bn_momentum, a.bn_weight))
            c = 32
        self.stem_act = nn.GELU() if a.act == "gelu" else nn.ReLU()
        blocks = {"airbench": [0, 0, 0], "res9": [1, 0, 1], "res9-111": [1, 1, 1]}[a.arch]
        layers: list[nn.Module] = []
        for width, n in zip(widths, blocks):
            layers.append(Opening(c, width, a))
            if a.arch == "airbench":
                layers.append(ConvBnAct(width, a))
            layers += [Basic(width, a) for _ in range(n)]
            c = width
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(c, 10, bias=False)
        self.scale = a.logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(self.stem_act(self.stem(x)))
        return self.fc(F.adaptive_max_pool2d(x, 1).flatten(1)) * self.scale


def init_whitening(conv: nn.Conv2d, images: torch.Tensor, eps: float = 5e-4) -> None:
    """airbench's whitening: the eigenvectors of the 2x2 patches' covariance, scaled by 1/sqrt(eigenvalue), and
    their negatives (so a GELU after it keeps both signs)."""
    h, w = conv.weight.shape[2:]
    c = images.shape[1]
    patches = images.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c * h * w).double()
    cov = patches.T @ patches / len(patches)
    values, vectors = torch.linalg.eigh(cov)
    values, vectors = values.flip(0), vectors.T.flip(0).reshape(c * h * w, c, h, w)
    scaled = vectors / torch.sqrt(values + eps).view(-1, 1, 1, 1)
    conv.weight.data[:] = torch.cat((scaled, -scaled)).float()


def translate(images: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to pad pixels, reflection-padded, per image."""
    n, c, h, w = images.shape
    padded = F.pad(images, (pad,) * 4, mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="res9", choices=["airbench", "res9", "res9-111"])
    p.add_argument("--widths", default="64,256,256")
    p.add_argument("--data-dir", default="./data")
    p.add_argument("--epochs", type=float, default=10)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--lr", type=float, default=11.5, help="per 1024 examples, as airbench")
    p.add_argument("--momentum", type=float, default=0.85)
    p.add_argument("--wd", type=float, default=0.0153, help="per 1024 examples, as airbench")
    p.add_argument("--bias-scaler", type=float, default=64.0)
    p.add_argument("--ls", type=float, default=0.2)
    p.add_argument("--bn-momentum", type=float, default=0.6)
    p.add_argument("--logit-scale", type=float, default=1 / 9)
    p.add_argument("--act", default="gelu", choices=["gelu", "relu"])
    p.add_argument("--translate", type=int, default=2)
    p.add_argument("--tta", type=int, default=2)
    p.add_argument("--no-whiten", dest="whiten", action="store_false")
    p.add_argument("--no-lookahead", dest="lookahead", action="store_false")
    p.add_argument("--no-dirac", dest="dirac", action="store_false")
    p.add_argument("--bn-weight", action="store_true", help="train BN scales (airbench freezes them)")
    p.add_argument("--random-flip", action="store_true", help="random flips each epoch, not alternating")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=1)
    a = p.parse_args()
    skip_md5()
    torch.manual_seed(a.seed)
    spec = DATASETS["cifar10"]
    train, test = spec.load_split(a.data_dir, True), spec.load_split(a.data_dir, False)
    started = time.perf_counter()
    mean = torch.tensor(train.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(train.std).view(1, 3, 1, 1) * 255
    x_train = ((train.images.float() - mean) / std).contiguous(memory_format=torch.channels_last)
    x_test = ((test.images.float() - mean) / std).contiguous(memory_format=torch.channels_last)
    y_train, y_test = train.labels, test.labels
    net = Net(a).to(memory_format=torch.channels_last)
    if a.whiten:
        init_whitening(net.stem, x_train[:5000])

    kilostep = 1024 * (1 + 1 / (1 - a.momentum))
    lr, wd = a.lr / kilostep, a.wd * a.batch / kilostep
    lr_bias = lr * a.bias_scaler
    norm = [q for n, q in net.named_parameters() if ".bn" in n and q.requires_grad]
    other = [q for n, q in net.named_parameters() if ".bn" not in n and q.requires_grad]
    opt = torch.optim.SGD(
        [
            {"params": norm, "lr": lr_bias, "weight_decay": wd / lr_bias},
            {"params": other, "lr": lr, "weight_decay": wd / lr},
        ],
        momentum=a.momentum,
        nesterov=True,
    )
    steps_per_epoch = len(x_train) // a.batch
    total = math.ceil(steps_per_epoch * a.epochs)
    warm = int(total * 0.23)

    def lr_factor(step: int) -> float:
        if step < warm:
            return 0.2 + 0.8 * step / warm
        return 1.0 - 0.93 * (step - warm) / (total - warm)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    alpha = 0.95**5 * (torch.arange(total + 1) / total) ** 3
    ema = {k: v.clone() for k, v in net.state_dict().items()} if a.lookahead else None

    def lookahead(decay: float) -> None:
        for e, v in zip(ema.values(), net.state_dict().values()):
            if v.dtype.is_floating_point:
                e.lerp_(v, 1 - decay)
                v.copy_(e)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return net(x).float()

    @torch.no_grad()
    def evaluate(level: int) -> float:
        net.eval()
        correct = 0
        for i in range(0, len(x_test), 1000):
            x = x_test[i : i + 1000]
            logits = forward(x)
            if level >= 1:
                logits = 0.5 * logits + 0.5 * forward(x.flip(-1))
            if level >= 2:
                padded = F.pad(x, (1,) * 4, mode="reflect")
                shifted = [padded[:, :, :32, :32], padded[:, :, 2:, 2:]]
                moved = sum(0.5 * forward(s) + 0.5 * forward(s.flip(-1)) for s in shifted) / 2
                logits = 0.5 * logits + 0.5 * moved
            correct += (logits.argmax(1) == y_test[i : i + 1000]).sum().item()
        net.train()
        return correct / len(x_test)

    base_flip = torch.rand(len(x_train), generator=torch.Generator().manual_seed(a.seed)) < 0.5
    prep_seconds = time.perf_counter() - started
    train_seconds, step = 0.0, 0
    rows = []
    for epoch in range(math.ceil(a.epochs)):
        t0 = time.perf_counter()
        if a.whiten:
            net.stem.bias.requires_grad = epoch < 3
        gen = torch.Generator().manual_seed(a.seed * 1000 + epoch)
        order = torch.randperm(len(x_train), generator=gen)
        flips = (torch.rand(len(x_train), generator=gen) < 0.5) if a.random_flip else base_flip ^ bool(epoch % 2)
        net.train()
        for b in range(steps_per_epoch):
            if step >= total:
                break
            index = order[b * a.batch : (b + 1) * a.batch]
            x = x_train[index]
            x = torch.where(flips[index, None, None, None], x.flip(-1), x)
            if a.translate:
                x = translate(x, a.translate, gen)
            x = x.contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(forward(x), y_train[index], label_smoothing=a.ls, reduction="sum")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if ema is not None and step % 5 == 0:
                lookahead(alpha[step].item())
        if ema is not None and step >= total:
            lookahead(1.0)
        train_seconds += time.perf_counter() - t0
        row = {"epoch": epoch + 1, "train_seconds": round(train_seconds, 1), "loss": round(loss.item() / a.batch, 4)}
        if (epoch + 1) % a.eval_every == 0 or step >= total:
            t1 = time.perf_counter()
            row["test_accuracy"] = evaluate(0)
            row["eval_seconds"] = round(time.perf_counter() - t1, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    final = {}
    for level in range(a.tta + 1):
        t1 = time.perf_counter()
        final[f"tta{level}"] = {"accuracy": evaluate(level), "seconds": round(time.perf_counter() - t1, 1)}
    print(
        json.dumps(
            {
                "final": final,
                "train_seconds": round(train_seconds, 1),
                "prep_seconds": round(prep_seconds, 1),
                "wall_seconds": round(time.perf_counter() - started, 1),
                "settings": vars(a),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
