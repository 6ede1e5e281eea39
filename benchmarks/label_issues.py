"""eval --worst's ranking (the held-out images of the highest loss) against cleanlab's label-issue finder.

    python benchmarks/label_issues.py RUN [--worst 50]          # pip install cleanlab (the bench extra)

Runs RUN's best.pt on its test split as `resnetlab eval` does (calibrated probabilities), ranks the images by
loss as `eval --worst` does, and asks cleanlab.filter.find_label_issues (confident learning, Northcutt et al. 2021)
which labels it doubts, ranked by self-confidence. Prints how many images cleanlab flags, how many of the worst N
by loss it flags too, the overlap of the two top-N lists, and the top-N files of each (for a folder), so that the
pictures can be looked at. These are held-out predictions: the model never trained on these images.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from machine import machine_info  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder or checkpoint")
    parser.add_argument("--worst", type=int, default=50)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    from cleanlab.filter import find_label_issues

    from resnetlab.checkpoint import resolve_path
    from resnetlab.inference import TorchPredictor

    predictor = TorchPredictor.from_checkpoint(resolve_path(args.run), "cpu", "fp32")
    data = predictor.load_test_data(args.data_dir)
    probabilities = torch.cat([predictor.probabilities(chunk) for chunk in data.chunks(1000)])
    labels = data.labels
    loss = -probabilities[torch.arange(len(labels)), labels].clamp_min(1e-12).log()
    by_loss = loss.argsort(descending=True)[: args.worst].tolist()
    issues = find_label_issues(labels.numpy(), probabilities.numpy(), return_indices_ranked_by="self_confidence")
    flagged = set(issues.tolist())
    top_cleanlab = issues[: args.worst].tolist()

    def name(i: int) -> str:
        return data.files[i] if data.files else str(i)

    classes = predictor.card.classes
    result = {
        "images": len(labels),
        "accuracy": float((probabilities.argmax(1) == labels).float().mean()),
        "cleanlab_flagged": len(flagged),
        "worst_by_loss_flagged_by_cleanlab": sum(i in flagged for i in by_loss),
        "top_n_overlap": len(set(by_loss) & set(top_cleanlab)),
        "n": args.worst,
        "worst_by_loss": [
            [name(i), classes[labels[i]], classes[int(probabilities[i].argmax())], round(float(loss[i]), 3)]
            for i in by_loss
        ],
        "cleanlab_top": [[name(i), classes[labels[i]], classes[int(probabilities[i].argmax())]] for i in top_cleanlab],
        "machine": machine_info(),
    }
    print(
        f"{result['images']} held-out images, accuracy {result['accuracy']:.2%}; cleanlab flags {len(flagged)} "
        f"({len(flagged) / len(labels):.1%}); of the worst {args.worst} by loss it flags "
        f"{result['worst_by_loss_flagged_by_cleanlab']}; the two top-{args.worst} lists share {result['top_n_overlap']}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
