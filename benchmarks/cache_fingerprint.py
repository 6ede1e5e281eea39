"""What the content print of each file costs a warm start of the decoded-image cache.

    python benchmarks/cache_fingerprint.py DIR             # DIR: an image folder (train/ and test/, or class folders)
    python benchmarks/cache_fingerprint.py DIR --runs 5

The cache key lists every file of the folder with its size and modification time, and (since the content print)
a hash of its first and last 64 KB (imagecache.content_print), so that a file replaced by another of the same size
with its old modification time restored (cp -p, rsync -a, unzip) is decoded again. A warm start, when nothing has
changed, reads those bytes of every file where it used to read only its status.

Each run is a process of its own (the prints are remembered within a process): it loads both splits as `resnetlab
train` does, from a cache folder filled first by a cold run. Two ways, alternating, --runs times each: with the
content prints, and with the prints left out (the key of before, from os.stat alone). The files' first bytes are in
the page cache after the cold run, as they are on a second run of the same day; after a reboot they are read from
the disk, which this does not measure. Prints mean +- std of the load time with the machine and versions. Nothing
is written into DIR; the cache folders are temporary ones, deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WAYS = {"size and time only (before)": False, "with content prints": True}


def child(data: str, cache_dir: str, image_size: int, prints: bool) -> dict:
    """One warm load of both splits; its time, and how many files it listed."""
    from resnetlab import folder, imagecache
    from resnetlab.data import load_train_test

    if not prints:
        imagecache.content_print = lambda path, size, mtime_ns, ctime_ns: ""  # the key of before
    listed = []
    fingerprint = folder._fingerprint

    def counting(source, samples):
        listed.append(len(samples))
        return fingerprint(source, samples)

    folder._fingerprint = counting
    start = time.perf_counter()
    train, test = load_train_test("folder", data, image_size, cache_dir=cache_dir)
    return {"seconds": time.perf_counter() - start, "images": len(train) + len(test), "listed": sum(listed)}


def run(data: Path, cache_dir: str, image_size: int, prints: bool) -> dict:
    options = json.dumps([str(data), cache_dir, image_size, prints])
    code = f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import cache_fingerprint as b; "
    code += f"print(json.dumps(b.child(*json.loads({options!r}))))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="an image folder, as --data-dir")
    parser.add_argument("--runs", type=int, default=3, help="warm runs of each way (default 3)")
    parser.add_argument("--image-size", type=int, default=32)
    args = parser.parse_args()
    import PIL
    import torch

    import resnetlab

    with tempfile.TemporaryDirectory(prefix="resnetlab-fingerprint-") as cache:
        # a cache folder for each way: an entry written under one key prunes the folder's entries of the other
        folders = {way: str(Path(cache) / str(i)) for i, way in enumerate(WAYS)}
        for way, prints in WAYS.items():  # cold: decode into the cache
            cold = run(args.data, folders[way], args.image_size, prints)
        times: dict[str, list[float]] = {way: [] for way in WAYS}
        for _ in range(args.runs):
            for way, prints in WAYS.items():
                times[way].append(run(args.data, folders[way], args.image_size, prints)["seconds"])
    print(
        f"{args.data}: {cold['images']} images ({cold['listed']} file listings a load), --image-size "
        f"{args.image_size}, {args.runs} warm runs each; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}, "
        f"Pillow {PIL.__version__}, resnetlab {resnetlab.__version__}\n"
    )
    print("| cache key | warm load of both splits (s) |\n|---|---|")
    for way, seconds in times.items():
        spread = statistics.stdev(seconds) if len(seconds) > 1 else 0.0
        print(f"| {way} | {statistics.mean(seconds):.2f} +- {spread:.2f} |")


if __name__ == "__main__":
    main()
