"""The tutorial's recipe, rebuilt as the baseline to beat (a baseline, not a product model).

A 3x3 conv with stride 3 and no padding (1 -> 32 channels) + BN + ReLU, so 28x28 becomes 9x9; four basic
residual blocks at 9x9, stride 1, channels 32->64->128->256->256, a 1x1 conv + BN shortcut where the channel
count changes and the identity otherwise; global average pool; linear 256 -> 10. Adam at lr 1e-3, batch 32,
images only converted to tensors (no normalization, no augmentation), fp32, a plain shuffled DataLoader.
Its inference loop runs one image at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader


class TutorialBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Identity()
        if in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class TutorialNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, stride=3, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        widths = [32, 64, 128, 256, 256]
        self.blocks = nn.Sequential(*[TutorialBlock(a, b) for a, b in zip(widths, widths[1:])])
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


def datasets(data_dir: str):
    """Fashion-MNIST as the tutorial loads it: torchvision datasets with ToTensor only."""
    from torchvision import datasets as tvd
    from torchvision import transforms

    from resnetlab.data import load_split  # puts a system copy where torchvision looks, if there is one

    load_split("fashion-mnist", data_dir, train=False)
    pipeline = transforms.ToTensor()
    train = tvd.FashionMNIST(data_dir, train=True, download=True, transform=pipeline)
    test = tvd.FashionMNIST(data_dir, train=False, download=True, transform=pipeline)
    return train, test


@torch.no_grad()
def evaluate(model: nn.Module, test_set, batch_size: int = 32) -> tuple[float, float]:
    """Average test loss and accuracy, as the tutorial computes them after each epoch."""
    model.eval()
    loss, correct = 0.0, 0
    for x, y in DataLoader(test_set, batch_size=batch_size, shuffle=True):
        out = model(x)
        loss += F.cross_entropy(out, y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
    return loss / len(test_set), correct / len(test_set)


def train(
    data_dir: str,
    epochs: float = 4,
    seed: int = 0,
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train the tutorial's way. Fractional epochs stop the last epoch early (for a quick baseline), and
    still evaluate on the whole test set."""
    torch.manual_seed(seed)
    train_set, test_set = datasets(data_dir)
    model = TutorialNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(train_set, batch_size=32, shuffle=True)
    rows, started, done = [], time.perf_counter(), 0
    total = max(round(epochs * len(loader)), 1)  # optimizer steps in all (a fractional last epoch stops early)
    while done < total:
        steps = min(len(loader), total - done)
        model.train()
        train_start, seen = time.perf_counter(), 0
        for step, (x, y) in enumerate(loader):
            if step == steps:
                break
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(y)
        train_seconds = time.perf_counter() - train_start
        eval_start = time.perf_counter()
        test_loss, test_accuracy = evaluate(model, test_set)
        done += steps
        row = {
            "epoch": round(done / len(loader), 3),
            "test_loss": test_loss,
            "test_accuracy": test_accuracy,
            "train_images_per_second": seen / train_seconds,
            "train_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - eval_start,
            "wall_seconds": time.perf_counter() - started,
        }
        rows.append(row)
        if on_epoch:
            on_epoch(row)
    return rows


@torch.no_grad()
def one_at_a_time(model: nn.Module, images: torch.Tensor) -> float:
    """The tutorial's inference loop: one image per forward pass. Returns images per second."""
    model.eval()
    start = time.perf_counter()
    for image in images:
        model(image.unsqueeze(0)).argmax(1)
    return len(images) / (time.perf_counter() - start)
