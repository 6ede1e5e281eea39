"""How much temperature scaling helps: for each run folder (or checkpoint), the expected calibration error before and
after the card's temperature, and the share of wrong answers that `predict --min-confidence P` turns into "unknown"
at the P that keeps 95% of the right ones.

    python benchmarks/calibration.py runs/cifar10-resnet20 runs/cifar10-resnet56 --data-dir data/

The checkpoint runs as `resnetlab eval` runs it (BN folded, --precision auto) on its test split. Training fitted the
temperature on the held-out images it evaluated on: the test split for datasets with one (CIFAR, MNIST...), so
there the "after" figures are measured on the images T was fitted on (one parameter: little room to overfit); a
folder dataset held out a validation part, and its test split is the same part. CIFAR-10 files made by
cifar_jpegs_to_batches.py are accepted without torchvision's md5 check.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from machine import machine_info  # noqa: E402
from time_to_accuracy import skip_md5  # noqa: E402

from resnetlab.confidence import calibration  # noqa: E402
from resnetlab.inference import TorchPredictor  # noqa: E402

KEEP_RIGHT = 0.95  # the threshold keeps this share of the right answers


def unknown_share(probabilities: torch.Tensor, labels: torch.Tensor, keep: float = KEEP_RIGHT) -> tuple[float, float]:
    """The threshold P under which (1 - keep) of the right answers' top probabilities fall, and the share of the
    wrong answers whose top probability is below P (those --min-confidence P answers "unknown")."""
    top, predicted = probabilities.max(1)
    right = predicted == labels
    if not right.any():
        return 0.0, 0.0
    threshold = torch.quantile(top[right].double(), 1 - keep, interpolation="lower").item()
    wrong = top[~right]
    return threshold, (wrong < threshold).double().mean().item() if len(wrong) else 0.0


def measure(path: str, data_dir: str | None) -> dict:
    predictor = TorchPredictor.from_checkpoint(path)
    data = predictor.load_test_data(data_dir)
    logits = torch.cat([predictor.logits(images) for images in data.chunks(predictor.chunk_size)])
    temperature = predictor.card.temperature
    report = calibration(logits, data.labels, temperature)
    result = {
        "checkpoint": str(path),
        "model": predictor.card.architecture,
        "dataset": predictor.card.dataset,
        "images": len(data),
        "accuracy": (logits.argmax(1) == data.labels).double().mean().item(),
        **{k: report[k] for k in ("temperature", "ece_before", "ece_after", "loss_before", "loss_after")},
    }
    for when, t in (("before", 1.0), ("after", temperature)):
        threshold, share = unknown_share((logits / t).softmax(1), data.labels)
        result[f"threshold_{when}"], result[f"wrong_unknown_{when}"] = threshold, share
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN_OR_CHECKPOINT")
    parser.add_argument("--data-dir", default=None, help="default: the folder each checkpoint was trained from")
    parser.add_argument("--json", action="store_true", help="one JSON object per run instead of lines")
    args = parser.parse_args()
    skip_md5()
    if not args.json:
        print(" ".join(f"{k}={v}" for k, v in machine_info().items()))
    for run in args.runs:
        r = measure(run, args.data_dir)
        if args.json:
            print(json.dumps(r), flush=True)
            continue
        print(
            f"{r['checkpoint']}: {r['model']} on {r['dataset']}, {r['images']} test images, accuracy "
            f"{r['accuracy']:.2%}; temperature {r['temperature']:.3g}: ECE {r['ece_before']:.2%} -> "
            f"{r['ece_after']:.2%}, loss {r['loss_before']:.4f} -> {r['loss_after']:.4f}; keeping "
            f"{KEEP_RIGHT:.0%} of the right answers, unknown: {r['wrong_unknown_before']:.1%} of the wrong ones "
            f"before (P {r['threshold_before']:.3f}), {r['wrong_unknown_after']:.1%} after (P "
            f"{r['threshold_after']:.3f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
