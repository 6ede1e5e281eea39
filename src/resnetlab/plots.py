"""Pictures, drawn with matplotlib's Agg backend so they are written without a display."""

from __future__ import annotations

import math
from pathlib import Path

import torch


def _pyplot(show: bool = False):
    """pyplot on the Agg backend, unless a window is wanted (--show)."""
    import matplotlib

    if not show:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def prediction_grid(
    images: torch.Tensor,
    predicted: list[str],
    probabilities: list[float],
    actual: list[str] | None,
    path: str | Path,
    show: bool = False,
) -> Path:
    """One picture of images labelled with the predicted class and its probability (and the actual class).

    Wrong predictions get a red title and frame. images: uint8 [N, C, H, W].
    """
    plt = _pyplot(show)
    n = len(images)
    cols = min(n, 10 if n > 20 else 5)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.9, rows * 2.25), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:n]):
        image = images[i].permute(1, 2, 0).numpy()
        gray = image.shape[2] == 1
        ax.imshow(image[:, :, 0] if gray else image, cmap="gray" if gray else None, vmin=0, vmax=255)
        right = actual is None or predicted[i] == actual[i]
        title = f"{predicted[i]}\n{probabilities[i]:.0%}"
        if actual is not None:
            title = f"pred: {predicted[i]} ({probabilities[i]:.0%})\ntrue: {actual[i]}"
        color = "black" if right else "#c00000"
        ax.set_title(title, fontsize=8, color=color)
        if not right:
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(3)
    if actual is not None:
        wrong = sum(p != a for p, a in zip(predicted, actual))
        fig.suptitle(f"{n - wrong} of {n} right" + (" (wrong ones in red)" if wrong else ""), fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    if show:
        plt.show()
    plt.close(fig)
    return path
