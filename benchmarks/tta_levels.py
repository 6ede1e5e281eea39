"""Test accuracy of one checkpoint at each level of test-time augmentation: none, flips, flips and 1-pixel moves.

    python benchmarks/tta_levels.py benchmarks/results/runs/cifar10-airbench/best.pt --data-dir /work/data/cifar

The checkpoint runs as `resnetlab eval` runs it (BN folded, --precision auto); only the card's test-time
augmentation changes between the three lines. CIFAR-10 files made by cifar_jpegs_to_batches.py are accepted
without torchvision's md5 check.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from time_to_accuracy import skip_md5  # noqa: E402

from resnetlab.inference import TorchPredictor  # noqa: E402
from resnetlab.preprocess import PixelClassifier  # noqa: E402

LEVELS = {"none": (False, False), "flip": (True, False), "translate": (True, True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--data-dir", default=None, help="default: the folder the checkpoint was trained from")
    args = parser.parse_args()
    skip_md5()
    predictor = TorchPredictor.from_checkpoint(args.checkpoint)
    data = predictor.load_test_data(args.data_dir)
    for name, (flip, translate) in LEVELS.items():
        card = predictor.card
        predictor.classifier = PixelClassifier(
            predictor.network, card.mean, card.std, flip, predictor.runtime.memory_format, translate
        ).eval()
        started = time.perf_counter()
        accuracy = predictor.evaluate(data)["accuracy"]
        print(
            f"--tta {name}: {accuracy:.2%} of {len(data)} test images in {time.perf_counter() - started:.1f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
