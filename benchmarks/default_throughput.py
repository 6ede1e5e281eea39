"""Training throughput of each dataset's default model at the dataset's real size, and what 4 epochs cost.

    python benchmarks/default_throughput.py
    python benchmarks/default_throughput.py --datasets stl10 --models resnet18 resnet8w   # candidates
    python benchmarks/default_throughput.py --datasets cifar10 --models resnet18 --stem imagenet \
        --sizes 32 64 96 128 160 224   # what --pretrained costs at each image size

Times full training steps (forward, backward, SGD step; the batch size of the default recipe) on random uint8
images of the dataset's shape, through the same PixelClassifier the training loop uses, at the precision
`--precision auto` picks here; no data files are needed. Prints a markdown table with forward MFLOP per image
(multiply-adds x 2), images per second (median of the timed steps) and minutes for 4 epochs of the training split.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from machine import forward_flops, machine_info

from resnetlab.config import RECIPES
from resnetlab.data import DATASETS
from resnetlab.models import create_model
from resnetlab.preprocess import PixelClassifier
from resnetlab.runtime import select_runtime

TRAIN_IMAGES = {
    "mnist": 60_000,
    "kmnist": 60_000,
    "fashion-mnist": 60_000,
    "cifar10": 50_000,
    "svhn": 73_257,
    "stl10": 5_000,
}


def images_per_second(
    model_name: str, channels: int, size: int, batch: int, precision: str, steps: int, stem: str | None = None
) -> float:
    runtime = select_runtime("cpu", precision)
    net = create_model(model_name, 10, channels, image_size=size, stem=stem).to(memory_format=runtime.memory_format)
    model = PixelClassifier(net, [0.5] * channels, [0.25] * channels, memory_format=runtime.memory_format)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    x = torch.randint(0, 256, (batch, channels, size, size), dtype=torch.uint8)
    y = torch.randint(0, 10, (batch,))
    seconds = []
    for _ in range(steps + 2):  # the first two steps warm up the allocator and kernels
        start = time.perf_counter()
        with runtime.autocast():
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - start)
    return batch / statistics.median(seconds[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="*", default=list(TRAIN_IMAGES))
    parser.add_argument("--models", nargs="*", default=None, help="default: each dataset's default model")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="*", default=None, help="default: the dataset's image size")
    parser.add_argument(
        "--stem",
        default=None,
        choices=["small", "strided", "imagenet"],
        help="default: the model's for the size (--pretrained uses imagenet)",
    )
    args = parser.parse_args()
    batch = RECIPES["fast"].batch_size
    precision = select_runtime("cpu", args.precision).precision
    print("| dataset | model | forward MFLOP per image | training images/s | minutes for 4 epochs |")
    print("|---|---|---|---|---|")
    for name in args.datasets:
        spec = DATASETS[name]
        for model_name in args.models or [spec.default_model]:
            for size in args.sizes or [spec.image_size]:
                shape = (spec.channels, size, size)
                net = create_model(model_name, 10, spec.channels, image_size=size, stem=args.stem)
                flops = forward_flops(net, shape)
                speed = images_per_second(model_name, spec.channels, size, batch, args.precision, args.steps, args.stem)
                minutes = 4 * TRAIN_IMAGES[name] / speed / 60
                described = f"{name} ({spec.shape})" if size == spec.image_size else f"{name} at {size} px"
                print(f"| {described} | {model_name} | {flops / 1e6:.0f} | {speed:.0f} | {minutes:.1f} |", flush=True)
    info = machine_info()
    print(
        f"\nbatch {batch}, {precision}, random images (training steps only: no data loading, no evaluation); "
        f"{info['cpu']}, {info['cores']} cores, torch {info['torch']}, {info['threads']} threads; {info['date']}."
    )


if __name__ == "__main__":
    main()
