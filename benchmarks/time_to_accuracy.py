"""Time to accuracy on Fashion-MNIST: the tutorial's recipe beside resnetlab's recipes, in one run.

    python benchmarks/time_to_accuracy.py --tutorial-epochs 4 --recipes fast best --best-epochs 15

Records the wall time (data loading, training and the evaluation after each epoch) at which each recipe first
reaches 90..95% test accuracy, and its final accuracy. Writes JSON and prints a markdown table with the
machine. --tutorial-epochs below 4 runs the baseline for that many epochs and extrapolates its 4-epoch time
from the measured time per epoch (the table says so).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from machine import machine_info  # noqa: E402

THRESHOLDS = [0.90, 0.91, 0.92, 0.93, 0.94, 0.95]


def crossings(rows: list[dict]) -> dict[str, float | None]:
    return {
        f"{t:.0%}": next((r["wall_seconds"] for r in rows if r["test_accuracy"] >= t), None) for t in THRESHOLDS
    }


def run_tutorial(data_dir: str, epochs: float) -> dict:
    import tutorial_recipe

    rows = tutorial_recipe.train(data_dir, epochs, on_epoch=lambda r: print("tutorial", r, flush=True))
    per_epoch = rows[-1]["wall_seconds"] / rows[-1]["epoch"]
    return {
        "name": "tutorial (Adam, batch 32, fp32)",
        "epochs": rows[-1]["epoch"],
        "rows": rows,
        "final_accuracy": rows[-1]["test_accuracy"],
        "seconds": rows[-1]["wall_seconds"],
        "seconds_for_4_epochs": per_epoch * 4,
        "extrapolated": rows[-1]["epoch"] < 4,
        "crossings": crossings(rows),
    }


def run_resnetlab(data_dir: str, recipe: str, epochs: int, out: Path, precision: str) -> dict:
    from resnetlab.config import TrainConfig
    from resnetlab.engine import train

    rows: list[dict] = []
    started = time.perf_counter()

    def on_epoch(row: dict) -> None:
        rows.append({**row, "wall_seconds": time.perf_counter() - started})
        print(recipe, rows[-1], flush=True)

    config = TrainConfig(dataset="fashion-mnist", data_dir=data_dir, epochs=epochs, recipe=recipe,
                         out=str(out / recipe), overwrite=True, quiet=True, precision=precision)  # fmt: skip
    summary = train(config, on_epoch=on_epoch)
    return {
        "name": f"resnetlab --recipe {recipe} ({summary['model']}, {summary['precision']})",
        "epochs": epochs,
        "rows": rows,
        "final_accuracy": rows[-1]["test_accuracy"],
        "best_accuracy": summary["best_test_accuracy"],
        "seconds": rows[-1]["wall_seconds"],
        "extrapolated": False,
        "crossings": crossings(rows),
    }


def table(results: list[dict], info: dict) -> str:
    head = "| recipe | epochs | final test accuracy | " + " | ".join(f"to {t:.0%}" for t in THRESHOLDS)
    lines = [head + " | total |", "|" + "---|" * (len(THRESHOLDS) + 4)]
    for r in results:
        cells = [f"{r['crossings'][f'{t:.0%}']:.0f} s" if r["crossings"][f"{t:.0%}"] else "-" for t in THRESHOLDS]
        total = f"{r['seconds']:.0f} s"
        if r.get("extrapolated"):
            total += f" ({r['seconds_for_4_epochs']:.0f} s for 4 epochs, extrapolated)"
        lines.append(f"| {r['name']} | {r['epochs']} | {r['final_accuracy']:.2%} | " + " | ".join(cells)
                     + f" | {total} |")  # fmt: skip
    lines.append("")
    lines.append(f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
                 f"{info['threads']} threads; {info['date']}.")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="./data")
    parser.add_argument("--tutorial-epochs", type=float, default=4)
    parser.add_argument("--recipes", nargs="*", default=["fast"])
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the fast recipe")
    parser.add_argument("--best-epochs", type=int, default=15, help="epochs of the best recipe")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    results = []
    if args.tutorial_epochs > 0:
        results.append(run_tutorial(args.data_dir, args.tutorial_epochs))
    for recipe in args.recipes:
        epochs = args.best_epochs if recipe == "best" else args.epochs
        results.append(run_resnetlab(args.data_dir, recipe, epochs, out / "runs", args.precision))
    (out / "time_to_accuracy.json").write_text(json.dumps({"machine": info, "results": results}, indent=2))
    print(table(results, info))


if __name__ == "__main__":
    main()
