"""How long one `resnetlab predict` of one photo takes from the shell, cold: a checkpoint against its .onnx export.

    python benchmarks/predict_latency.py CKPT [PHOTO] [--repeats 7]

Exports CKPT to ONNX in a temporary folder, then runs each command --repeats times in a fresh process, interleaved,
and prints the median wall time of each with the machine: importing torch alone, predict with the checkpoint, and
predict with the .onnx file (answered without importing torch: src/resnetlab/onnxlight.py), each with --json (no
picture) and with the picture written. PHOTO defaults to a 640x480 JPEG made here. "Cold" means a fresh Python
process; the files are in the page cache after the first run, as they are when a user runs predict twice.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from machine import cpu_model  # noqa: E402


def wall(arguments: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(arguments, check=True, capture_output=True)
    return time.perf_counter() - start


def latency(commands: dict[str, list[str]], repeats: int) -> dict[str, float]:
    """The median wall time of each command, run repeats times, interleaved."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, arguments in commands.items():
            times[name].append(wall(arguments))
    return {name: statistics.median(values) for name, values in times.items()}


def predict_commands(model: Path, image: Path) -> dict[str, list[str]]:
    """`resnetlab predict MODEL IMAGE` with --json (no picture) and with its picture."""
    predict = [sys.executable, "-m", "resnetlab", "predict", str(model), str(image)]
    name = "ONNX" if model.suffix == ".onnx" else "CKPT"
    return {
        f"resnetlab predict {name} IMAGE --json (no picture)": [*predict, "--json"],
        f"resnetlab predict {name} IMAGE (prints, writes predictions.png)": [
            *predict,
            "--quiet",
            "--save",
            str(image.with_name(f"predictions-{name}.png")),
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("photo", type=Path, nargs="?")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="resnetlab-latency-"))
    photo = args.photo
    if photo is None:
        import numpy as np
        from PIL import Image

        photo = folder / "photo.jpg"
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(photo, quality=90)
    onnx = folder / "model.onnx"
    export = [
        sys.executable,
        "-m",
        "resnetlab",
        "export",
        str(args.checkpoint),
        "-o",
        str(onnx),
        "--check-images",
        "10",
    ]
    subprocess.run(export, check=True, capture_output=True)
    commands = {
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "python -c 'import onnxruntime, PIL.Image'": [sys.executable, "-c", "import onnxruntime, PIL.Image"],
        **predict_commands(args.checkpoint, photo),
        **predict_commands(onnx, photo),
    }
    medians = latency(commands, args.repeats)
    print(f"{cpu_model()}, {os.cpu_count()} cores; median of {args.repeats} cold runs\n")
    print("| command | wall time (s) |\n|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.2f} |")
    print(json.dumps(medians))


if __name__ == "__main__":
    main()
