"""The decoded-image cache of --dataset folder against decoding into memory at every run.

    python benchmarks/folder_cache.py                 # 200,000 synthetic 64 px JPEGs in 10 class folders
    python benchmarks/folder_cache.py --images 2000   # a quick check that it works

Writes a synthetic folder DIR/<class>/<i>.jpg (a bright block whose place is the class, on noise; --keep DIR
keeps it for another run), then runs, each in a process of its own: the in-memory path (--no-cache), the cached
path with an empty cache folder (cold: decodes into the cache), and the cached path again (warm: the cache file is
in the page cache, as it is right after a first run). Each process loads both splits as `resnetlab train` does
(20% of each class held out), then trains --steps batches of a small model, and reports: the load time, the time
from its start until the first training batch is ready, the time of the steps, the peak of its anonymous memory
(RssAnon, sampled every 5 ms: what the process owns, not the page cache) and its peak resident size (VmHWM,
including the mapped cache file's pages). Prints a markdown table with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing import Pool
from pathlib import Path

STARTED = time.perf_counter()  # a run's clock starts before torch and resnetlab are imported
RUNS = {"in memory (--no-cache)": "none", "cached, first run (cold)": "cold", "cached, second run (warm)": "warm"}


def _write_class(job: tuple[Path, int, int, int, str, int]) -> None:
    import numpy as np
    from PIL import Image

    root, label, first, count, suffix, size = job
    folder = root / f"class{label}"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(label * 1_000_003 + first)
    cell = size // 4
    r, c = divmod(label % 16, 4)
    for i in range(first, first + count):
        image = rng.integers(0, 80, size=(size, size, 3), dtype=np.uint8)
        image[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = 180 + rng.integers(0, 75, size=3, dtype=np.uint8)
        Image.fromarray(image).save(folder / f"{i:07d}{suffix}", quality=90)


def make_folder(root: Path, images: int, classes: int, size: int, suffix: str) -> Path:
    """root/class<k>/<i><suffix>: `images` in all, as even as can be, written on every core."""
    per_class = [images // classes + (k < images % classes) for k in range(classes)]
    jobs = [
        (root, k, first, min(1000, n - first), suffix, size)
        for k, n in enumerate(per_class)
        for first in range(0, n, 1000)
    ]
    with Pool(os.cpu_count()) as pool:
        pool.map(_write_class, jobs)
    return root


def _status(field: str) -> int:
    """A field of /proc/self/status in bytes (0 where there is none)."""
    try:
        with open("/proc/self/status") as status:
            return next((int(line.split()[1]) * 1024 for line in status if line.startswith(field + ":")), 0)
    except OSError:
        return 0


def child(options: dict) -> dict:
    """One run: load both splits, train options["steps"] batches; the figures as a dict."""
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _status("RssAnon"))
            time.sleep(0.005)

    threading.Thread(target=sample, daemon=True).start()
    import torch

    from resnetlab.batches import TensorBatches
    from resnetlab.config import RECIPES
    from resnetlab.data import load_train_test
    from resnetlab.engine import build_scheduler, train_one_epoch
    from resnetlab.models import create_model
    from resnetlab.preprocess import PixelClassifier
    from resnetlab.runtime import select_runtime

    imported = time.perf_counter()
    train, test = load_train_test("folder", options["data"], options["image_size"], cache_dir=options["cache_dir"])
    loaded = time.perf_counter()
    runtime = select_runtime(options["device"], options["precision"])
    network = create_model(options["model"], num_classes=len(train.classes), in_channels=train.channels)
    model = PixelClassifier(network, train.mean, train.std).to(runtime.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    batches = TensorBatches(
        train,
        options["batch_size"],
        shuffle=True,
        augment=True,
        crop_padding=4,
        hflip=True,
        drop_last=True,
        device=runtime.device,
    )
    steps, first_batch = [0], [0.0]

    def enough() -> bool:  # asked before each step, once its batch is ready
        if steps[0] == 0:
            first_batch[0] = time.perf_counter()
        steps[0] += 1
        return steps[0] > options["steps"]

    scheduler = build_scheduler(RECIPES["fast"], optimizer, len(batches))
    train_one_epoch(model, batches, optimizer, scheduler, runtime, should_stop=enough)
    finished = time.perf_counter()
    done.set()
    return {
        "images": len(train) + len(test),
        "import_s": imported - STARTED,
        "load_s": loaded - imported,
        "first_batch_s": first_batch[0] - STARTED,
        "steps": min(steps[0], options["steps"]),
        "steps_s": finished - first_batch[0],
        "peak_rss_anon": max(peak[0], _status("RssAnon")),
        "vm_hwm": _status("VmHWM"),
        "notes": train.notes,
        "runtime": runtime.runs_on,
    }


CGROUP_V1_MEMORY = Path("/sys/fs/cgroup/memory")


def memory_cgroup(limit_mb: int) -> Path:
    """A cgroup (v1 memory controller; needs root) that holds its processes to limit_mb of memory, page cache
    included: mapped cache pages are reclaimed under the limit, anonymous memory is not."""
    group = CGROUP_V1_MEMORY / f"resnetlab-bench-{os.getpid()}"
    group.mkdir(exist_ok=True)
    (group / "memory.limit_in_bytes").write_text(str(limit_mb * 2**20))
    return group


def run_child(options: dict, cgroup: Path | None = None) -> dict:
    """The child's figures, or {"failed": how} when it did not finish (killed under a memory limit)."""
    enter = (lambda: (cgroup / "cgroup.procs").write_text(str(os.getpid()))) if cgroup else None
    result = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(options)],
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=enter,
    )
    if result.returncode != 0:
        if cgroup is not None:
            return {"failed": f"exit status {result.returncode} (killed under the limit)"}
        sys.exit(f"the {options['cache_dir']!r} run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200_000, help="images in the synthetic folder")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--source-size", type=int, default=64, help="pixels of each image file, square")
    parser.add_argument("--format", default="jpg", choices=["jpg", "png"])
    parser.add_argument("--image-size", type=int, default=32, help="the training size (train --image-size)")
    parser.add_argument("--model", default="resnet8w")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="training steps after loading")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        metavar="DIR",
        help="write the synthetic folder here and keep it (reused when it is already there)",
    )
    parser.add_argument(
        "--memory-limit",
        type=int,
        default=None,
        metavar="MB",
        help="also run the in-memory and the warm cached path in a cgroup limited to MB (root, cgroup "
        "v1 memory controller)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    from machine import machine_info

    work = Path(tempfile.mkdtemp(prefix="folder-cache-"))
    try:
        data = args.keep or work / "photos"
        if not data.is_dir():
            start = time.perf_counter()
            make_folder(data, args.images, args.classes, args.source_size, f".{args.format}")
            seconds = time.perf_counter() - start
            print(
                f"wrote {args.images:,} {args.source_size} px {args.format} files in {seconds:.0f} s", file=sys.stderr
            )
        options = {
            "data": str(data),
            "image_size": args.image_size,
            "model": args.model,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "device": args.device,
            "precision": args.precision,
        }
        cache = work / "cache"
        results = {}
        for label, kind in RUNS.items():
            print(f"running: {label}", file=sys.stderr)
            results[label] = run_child({**options, "cache_dir": "" if kind == "none" else str(cache)})
        if args.memory_limit:
            group = memory_cgroup(args.memory_limit)
            try:
                for label, kind in [("in memory (--no-cache)", "none"), ("cached (warm)", "warm")]:
                    label = f"{label}, limited to {args.memory_limit:,} MB"
                    print(f"running: {label}", file=sys.stderr)
                    results[label] = run_child({**options, "cache_dir": "" if kind == "none" else str(cache)}, group)
            finally:
                group.rmdir()
        report(args, data, cache, results, machine_info())
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(args: argparse.Namespace, data: Path, cache: Path, results: dict, machine: dict) -> None:
    images = next(iter(results.values()))["images"]
    decoded = images * 3 * args.image_size**2
    cached = sum(p.stat().st_size for p in cache.glob("*.npy")) if cache.is_dir() else 0
    print(
        f"\n{images:,} {args.source_size} px {args.format.upper()} files in {args.classes} class folders "
        f"({_folder_bytes(data) / 1e6:,.0f} MB), decoded at {args.image_size} px: {decoded / 1e6:,.0f} MB "
        f"(cache files: {cached / 1e6:,.0f} MB); then {args.steps} training steps of {args.model} at batch "
        f"{args.batch_size} ({next(iter(results.values()))['runtime']}).\n"
    )
    print("| run | load (both splits) s | start to first batch s | steps s | peak RssAnon MB | VmHWM MB |")
    print("|---|---|---|---|---|---|")
    for label, r in results.items():
        if "failed" in r:
            print(f"| {label} | {r['failed']} | | | | |")
            continue
        print(
            f"| {label} | {r['load_s']:.2f} | {r['first_batch_s']:.2f} | {r['steps_s']:.2f} | "
            f"{r['peak_rss_anon'] / 1e6:,.0f} | {r['vm_hwm'] / 1e6:,.0f} |"
        )
    notes = {
        note for r in results.values() for note in r.get("notes", []) if "could not cache" in note or "cached" in note
    }
    for note in sorted(notes):
        print(f"\nnote: {note}")
    print(
        f"\nmachine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} "
        f"({machine['threads']} threads), {machine['date']}. Start times include importing torch "
        f"({next(iter(results.values()))['import_s']:.1f} s in the first run)."
    )


if __name__ == "__main__":
    main()
