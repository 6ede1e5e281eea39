"""Time and peak memory of `resnetlab predict RUN DIR --sort-into OUT` on a folder of photos.

    python benchmarks/sort_into.py RUN DIR [--link] [--device cpu]

Sorts DIR (e.g. the 10,000 CIFAR-10 test JPEGs) into a fresh temporary folder (with --csv too), in a child
process that reports its own peak resident memory (ru_maxrss); then runs the same command again, which should
find the work done (the resume path). Prints seconds, photos per second and peak memory of each, with the
machine and versions.
Memory should not grow with the folder's size: compare a folder of 1,000 with one of 10,000.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from resnetlab import __version__
from resnetlab.imagefiles import expand_image_paths

# The command in a child process that prints its own peak resident memory (KB on Linux) as its last stderr line.
CHILD = (
    "import resource, sys\nfrom resnetlab.cli import main\nstatus = main(sys.argv[1:])\n"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\nsys.exit(status)"
)


def run(arguments: list[str]) -> tuple[float, float]:
    """Seconds and peak resident memory (MB) of `resnetlab ARGUMENTS` in a fresh process."""
    start = time.perf_counter()
    child = subprocess.run([sys.executable, "-c", CHILD, *arguments], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if child.returncode:
        sys.exit(child.stderr)
    return seconds, int(child.stderr.splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder or checkpoint")
    parser.add_argument("folder", help="the photos to sort (not changed)")
    parser.add_argument("--link", action="store_true", help="hard-link instead of copying (OUT on DIR's device)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    photos = len(expand_image_paths([args.folder]))
    print(
        f"resnetlab {__version__}, torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads"
    )
    print(f"{photos} photos in {args.folder}")
    where = Path(args.folder).resolve().parent if args.link else None
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        out = Path(tmp) / "sorted"
        command = ["predict", args.run, args.folder, "--sort-into", str(out)]
        command += ["--csv", str(Path(tmp) / "predictions.csv"), "--device", args.device, "--quiet"]
        command += ["--link"] if args.link else []
        for label in ("sort", "again (all done: resume path)"):
            seconds, peak = run(command)
            print(f"{label}: {seconds:.1f} s, {photos / seconds:.0f} photos/s, peak memory {peak:.0f} MB")
        copies = sum(1 for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))
        print(f"{copies} files in {out} (should be {photos})")


if __name__ == "__main__":
    main()
