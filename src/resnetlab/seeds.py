"""`resnetlab train --seeds`: the same training with several seeds, one after another, each into OUT/seed-N, and the
spread of their final test accuracies (OUT/seeds.json).

One run's accuracy says little about the next: the initial weights, the order of the batches and the augmentation
all come from the seed. airbench reports every figure as the mean and spread over runs; this does the same.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .engine import train
from .errors import UserError
from .metrics import describe_accuracy
from .recorder import choose_out_dir


def seeds_out_dir(config: TrainConfig, seeds: list[int]) -> Path:
    """OUT (default: a new runs/<dataset>-seeds[-N]), checked before any training: neither it nor a seed's folder
    holds an earlier run, unless --overwrite."""
    out = choose_out_dir(
        config.out, config.dataset, f"{config.model}-seeds" if config.model else "seeds", config.overwrite
    )
    if (out / "seeds.json").exists() and not config.overwrite:
        raise UserError(
            f"{out} already holds seeds.json from an earlier --seeds run; choose another --out, or pass --overwrite to "
            "replace it."
        )
    for seed in seeds:
        choose_out_dir(str(out / f"seed-{seed}"), config.dataset, "", config.overwrite)
    return out


def train_seeds(config: TrainConfig, seeds: list[int]) -> dict[str, Any]:
    """Train config once per seed, into OUT/seed-N, one after another; returns (and writes into OUT/seeds.json)
    each run's final and best test accuracy and the mean, standard deviation (n - 1) and range of the final ones."""
    out = seeds_out_dir(config, seeds)
    runs = []
    for seed in seeds:
        summary = train(replace(config, seed=seed, out=str(out / f"seed-{seed}")))
        keys = ("final_test_accuracy", "final_test_accuracy_ci95", "best_test_accuracy", "best_epoch", "out")
        runs.append({"seed": seed, **{key: summary[key] for key in keys}})
    finals = [run["final_test_accuracy"] for run in runs]
    result = {
        "model": summary["model"],
        "dataset": summary["dataset"],
        "epochs": summary["epochs"],
        "test_images": summary["test_images"],
        "seeds": list(seeds),
        "final_test_accuracy_mean": statistics.fmean(finals),
        "final_test_accuracy_std": statistics.stdev(finals) if len(finals) > 1 else None,  # n - 1; None for one
        "final_test_accuracy_min": min(finals),
        "final_test_accuracy_max": max(finals),
        "runs": runs,
        "out": str(out),
    }
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, the first process writes, as for a run's files
        partial = out / ".seeds.json.partial"
        partial.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(partial, out / "seeds.json")
    return result


def describe_seeds(result: dict[str, Any]) -> list[str]:
    """What train --seeds prints at the end: each seed's final test accuracy, then their mean and spread."""
    images, runs = result["test_images"], result["runs"]
    lines = [
        f"{len(runs)} runs of {result['model']} on {result['dataset']}, {result['epochs']} epochs each; "
        "final test accuracy:"
    ]
    lines += [
        f"  seed {run['seed']}: {describe_accuracy(run['final_test_accuracy'], images)}  {run['out']}" for run in runs
    ]
    mean, std, low, high = (result[f"final_test_accuracy_{k}"] for k in ("mean", "std", "min", "max"))
    lines.append(
        f"mean {mean:.2%}{f', std {std:.2%}' if std is not None else ''}, min-max {low:.2%}-{high:.2%} over "
        f"{len(runs)} seeds; written to {Path(result['out']) / 'seeds.json'}"
    )
    return lines
