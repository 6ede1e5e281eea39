"""Time to accuracy on Fashion-MNIST: the tutorial's recipe beside resnetlab's recipes, in one run.

    python benchmarks/time_to_accuracy.py --tutorial-epochs 4 --recipes fast fast-flip --fast-flip-epochs 15

Records the wall time (data loading, training and the evaluation after each epoch) at which each recipe first
reaches 90..95% test accuracy, and its final accuracy; and the training FLOP/s each achieved (3x the forward
pass's multiply-adds x 2 per image, the usual estimate for forward + backward) as a fraction of the machine's
measured peak (a 4096x4096 fp32 matmul). Writes JSON and prints a markdown table with the
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

from machine import forward_flops, machine_info, matmul_peak_gflops  # noqa: E402

TUTORIAL_4_EPOCHS = 0.8957  # the tutorial recipe's test accuracy after its 4 epochs (an earlier full run)
THRESHOLDS = [TUTORIAL_4_EPOCHS, 0.90, 0.91, 0.92, 0.93, 0.94, 0.95]
# CIFAR-10: the colour issue's goals (85% in 4 epochs; the paper's ResNet-20, 91.25%) and the steps around them.
CIFAR_THRESHOLDS = [0.80, 0.85, 0.88, 0.90, 0.9125, 0.92, 0.93]


def label(threshold: float) -> str:
    return f"{threshold * 100:g}%"


def crossings(rows: list[dict]) -> dict[str, float | None]:
    return {
        label(t): next((r["wall_seconds"] for r in rows if (r["test_accuracy"] or 0) >= t), None) for t in THRESHOLDS
    }


def run_tutorial(data_dir: str, epochs: float) -> dict:
    import tutorial_recipe

    rows = tutorial_recipe.train(data_dir, epochs, on_epoch=lambda r: print("tutorial", r, flush=True))
    # Four epochs of training at the speed measured, and the four evaluations the tutorial makes (an evaluation
    # of the whole test set ends each run, even a fractional one, so its time is measured too).
    per_epoch = sum(r["train_seconds"] for r in rows) / rows[-1]["epoch"] + _median([r["eval_seconds"] for r in rows])
    flops = forward_flops(tutorial_recipe.TutorialNet(), (1, 28, 28))
    return {
        "forward_flops": flops,
        "train_gflops": 3 * flops * _median([r["train_images_per_second"] for r in rows]) / 1e9,
        "name": "tutorial (Adam, batch 32, fp32)",
        "epochs": rows[-1]["epoch"],
        "rows": rows,
        "final_accuracy": rows[-1]["test_accuracy"],
        "seconds": rows[-1]["wall_seconds"],
        "seconds_for_4_epochs": per_epoch * 4,
        "extrapolated": rows[-1]["epoch"] < 4,
        "crossings": crossings(rows),
    }


def skip_md5() -> None:
    """Accept CIFAR-10 files written by cifar_jpegs_to_batches.py, which cannot match torchvision's md5 sums."""
    import torchvision.datasets.cifar

    torchvision.datasets.cifar.check_integrity = lambda path, md5=None: Path(path).is_file()


def run_resnetlab(
    data_dir: str,
    recipe: str,
    epochs: int,
    out: Path,
    precision: str,
    dataset: str = "fashion-mnist",
    model: str | None = None,
    eval_every: int = 1,
    tta: str | None = None,
) -> dict:
    from torch import nn

    from resnetlab.config import TrainConfig
    from resnetlab.engine import train

    rows: list[dict] = []
    started = time.perf_counter()

    def on_epoch(row: dict, model: nn.Module) -> None:
        rows.append({**row, "wall_seconds": time.perf_counter() - started})
        print(recipe, rows[-1], flush=True)

    config = TrainConfig(
        dataset=dataset,
        data_dir=data_dir,
        epochs=epochs,
        model=model,
        recipe=None if recipe == "default" else recipe,
        out=str(out / f"{dataset}-{recipe}"),
        overwrite=True,
        quiet=True,
        precision=precision,
        eval_every=eval_every,
        tta=tta,
    )
    summary = train(config, on_epoch=on_epoch)
    from resnetlab.data import get_spec
    from resnetlab.models import create_model

    spec = get_spec(dataset)
    shape = (spec.channels, spec.image_size, spec.image_size)
    flops = forward_flops(create_model(summary["model"], 10, spec.channels, image_size=spec.image_size), shape)
    return {
        "forward_flops": flops,
        "train_gflops": 3 * flops * _median([r["train_images_per_second"] for r in rows]) / 1e9,
        "name": f"resnetlab --recipe {summary['recipe']}"
        + (f" --tta {tta}" if tta else "")
        + (f" --eval-every {eval_every}" if eval_every > 1 else "")
        + f" ({summary['model']}, {summary['precision']})",
        "epochs": epochs,
        "rows": rows,
        "final_accuracy": rows[-1]["test_accuracy"],
        "best_accuracy": summary["best_test_accuracy"],
        "seconds": rows[-1]["wall_seconds"],
        "extrapolated": False,
        "crossings": crossings(rows),
    }


def _median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


def table(results: list[dict], info: dict) -> str:
    head = "| recipe | epochs | final test accuracy | " + " | ".join(f"to {label(t)}" for t in THRESHOLDS)
    lines = [head + " | total |", "|" + "---|" * (len(THRESHOLDS) + 4)]
    for r in results:
        cells = [f"{r['crossings'][label(t)]:.0f} s" if r["crossings"][label(t)] else "-" for t in THRESHOLDS]
        total = f"{r['seconds']:.0f} s"
        if r.get("extrapolated"):
            total += f" ({r['seconds_for_4_epochs']:.0f} s for 4 epochs, extrapolated)"
        lines.append(
            f"| {r['name']} | {r['epochs']} | {r['final_accuracy']:.2%} | " + " | ".join(cells) + f" | {total} |"
        )
    tutorial = next((r for r in results if r["name"].startswith("tutorial")), None)
    if tutorial is not None:
        # The tutorial reaches its own 4-epoch accuracy at its 4th epoch; when it ran fewer, that time is the
        # extrapolated 4-epoch time.
        base = tutorial["crossings"][label(TUTORIAL_4_EPOCHS)] or tutorial["seconds_for_4_epochs"]
        lines.append("")
        for r in results:
            reached = r["crossings"][label(TUTORIAL_4_EPOCHS)]
            if r is not tutorial and reached:
                lines.append(
                    f"- {r['name']} reached the tutorial's 4-epoch accuracy ({label(TUTORIAL_4_EPOCHS)}) "
                    f"in {reached:.0f} s, {base / reached:.1f}x sooner than the tutorial's {base:.0f} s."
                )
    lines += [
        "",
        "| recipe | forward MFLOP per image | training GFLOP/s (median epoch) | of measured peak |",
        "|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['forward_flops'] / 1e6:.0f} | {r['train_gflops']:.1f} | "
            f"{r['train_gflops'] / info['peak_gflops']:.0%} |"
        )
    lines.append("")
    lines.append(
        f"Peak: {info['peak_gflops']:.0f} GFLOP/s (4096x4096 fp32 matmul, median of 5). "
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
        f"{info['threads']} threads; {info['date']}."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="./data")
    parser.add_argument("--tutorial-epochs", type=float, default=4)
    parser.add_argument(
        "--recipes", nargs="*", default=["fast"], help="recipes to run; 'default' for the dataset's own"
    )
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the fast recipe")
    parser.add_argument("--fast-flip-epochs", type=int, default=14, help="epochs of the fast-flip recipe")
    parser.add_argument("--long-epochs", type=int, default=14, help="epochs of the photo-long recipe")
    parser.add_argument("--tag", default="", help="added to the JSON file's name, to keep several runs")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument(
        "--dataset",
        default="fashion-mnist",
        help="fashion-mnist (with the tutorial baseline) or "
        "cifar10 (no tutorial baseline; its files made by cifar_jpegs_to_batches.py are accepted "
        "without torchvision's md5 check)",
    )
    parser.add_argument("--model", default=None, help="default: the dataset's")
    parser.add_argument("--eval-every", type=int, default=1, help="resnetlab train's --eval-every")
    parser.add_argument("--tta", default=None, help="resnetlab train's --tta; default: the recipe's")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    info["peak_gflops"] = matmul_peak_gflops()
    results = []
    if args.tutorial_epochs > 0 and args.dataset == "fashion-mnist":
        results.append(run_tutorial(args.data_dir, args.tutorial_epochs))
    if args.dataset == "cifar10":
        skip_md5()
        THRESHOLDS[:] = CIFAR_THRESHOLDS
    for recipe in args.recipes:
        epochs = {"fast-flip": args.fast_flip_epochs, "photo-long": args.long_epochs}.get(recipe, args.epochs)
        results.append(
            run_resnetlab(
                args.data_dir,
                recipe,
                epochs,
                out / "runs",
                args.precision,
                args.dataset,
                args.model,
                args.eval_every,
                args.tta,
            )
        )
    name = "time_to_accuracy" + ("" if args.dataset == "fashion-mnist" else f"_{args.dataset}") + args.tag + ".json"
    (out / name).write_text(json.dumps({"machine": info, "results": results}, indent=2))
    print(table(results, info))


if __name__ == "__main__":
    main()
