"""Every picture resnetlab draws: training curves, confusion matrix, reliability diagram, prediction grid, Grad-CAM
grid and the experiments' pictures (error curves, gradient norms, layer responses).

Each is drawn on a bare matplotlib Figure, without pyplot (except a window asked for with --show), so that
training or evaluating inside a notebook neither changes its backend nor opens windows, and each is written
atomically: a viewer never sees half a picture. Nothing here imports the rest of resnetlab.
"""

from __future__ import annotations

import csv
import functools
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

RIGHT_COLOR = "#1a7f37"  # green
WRONG_COLOR = "#c00000"  # red
UNKNOWN_COLOR = "#666666"  # gray: below predict --min-confidence
# Kana, CJK ideographs, Hangul and fullwidth forms: glyphs the default font (DejaVu Sans) lacks.
CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")
CJK_FONTS = ("Noto Sans CJK JP", "Noto Sans CJK SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei")
LABEL_CHARACTERS = 24  # a longer class name is shortened in pictures (the JSON outputs keep it whole)
_NOTED: set[str] = set()  # notes printed by this process, each once


def _figure(size: tuple[float, float], show: bool = False, **kwargs):
    """A bare Figure, or with show a pyplot figure that can open a window."""
    if show:
        import matplotlib.pyplot as plt

        return plt.figure(figsize=size, **kwargs)
    from matplotlib.figure import Figure

    return Figure(figsize=size, **kwargs)


@functools.cache
def _cjk_font() -> str | None:
    """The name of an installed font with CJK glyphs, or None."""
    from matplotlib import font_manager

    def known() -> list[str]:
        names = sorted({font.name for font in font_manager.fontManager.ttflist})
        return [n for n in CJK_FONTS if n in names] + [n for n in names if "CJK" in n]

    if not known():  # installed after matplotlib cached its font list, which it never rescans
        for file in font_manager.findSystemFonts():
            if "cjk" in file.lower() or "wqy" in file.lower():
                font_manager.fontManager.addfont(file)
    return (known() or [None])[0]


def _fall_back_to_cjk(fig) -> None:
    """Text with CJK characters (class names) gets an installed CJK font as fallback, so its glyphs are drawn
    rather than empty boxes; other text keeps the default font."""
    from matplotlib.text import Text

    texts = [text for text in fig.findobj(Text) if CJK.search(text.get_text())]
    if texts and _cjk_font():
        for text in texts:
            text.set_fontfamily([*text.get_fontfamily(), _cjk_font()])


def _font_files() -> list[str]:
    """The default font's file, and the CJK fallback's where one is installed."""
    from matplotlib import font_manager

    fallback = [font_manager.FontProperties(family=_cjk_font())] if _cjk_font() else []
    return [font_manager.findfont(font) for font in [font_manager.FontProperties(), *fallback]]


def _drawable(text: str) -> bool:
    """Whether each character of text has a glyph in the default font or in its CJK fallback."""
    from matplotlib import font_manager

    fonts = [font_manager.get_font(file) for file in _font_files()]
    return all(c.isspace() or any(font.get_char_index(ord(c)) for font in fonts) for c in text)


def short_label(name: str, width: int = LABEL_CHARACTERS) -> str:
    """A class name of at most `width` characters, for a picture or a table: a longer one keeps its start and its
    end around an ellipsis."""
    if len(name) <= width:
        return name
    head = (width - 1) * 2 // 3
    return f"{name[:head]}\u2026{name[len(name) - (width - 1 - head) :]}"


def class_labels(names: Sequence[str], classes: Sequence[str] | None = None) -> list[str]:
    """Class names as the pictures show them: shortened (short_label), and a name with characters no installed
    font can draw as its class index in `classes` ("class 3") rather than as empty boxes, with one note on stderr
    naming the fonts to install."""
    index = {name: i for i, name in enumerate(classes or ())}
    labels, missing = [], []
    for name in names:
        if _drawable(name):
            labels.append(short_label(name))
        else:
            missing.append(name)
            labels.append(f"class {index.get(name, '?')}")
    if missing and "fonts" not in _NOTED:
        _NOTED.add("fonts")
        print(
            f"resnetlab: note: no installed font can draw some class names (e.g. {short_label(missing[0])}), so the "
            "pictures show their class index instead (class 0: the first class of resnetlab eval); for Chinese, "
            "Japanese and Korean names install a CJK font (Debian and Ubuntu: fonts-noto-cjk).",
            file=sys.stderr,
        )
    return labels


def _save(fig, path: str | Path, dpi: int = 110) -> Path:
    """Write the PNG beside path, then rename it over path: a viewer never sees half a picture."""
    _fall_back_to_cjk(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    fig.savefig(partial, dpi=dpi, format="png")
    os.replace(partial, path)
    return path


def _number(value: Any) -> float | None:
    """A metric from a row (a float, or a string read from metrics.csv); None where it is missing."""
    if value is None or value == "":
        return None
    return float(value)


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    """The rows of a run's metrics.csv, one dict per epoch (values as written: strings)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def training_curves(rows: Sequence[dict[str, Any]], path: str | Path, title: str | None = None) -> Path:
    """Loss (train and test) and accuracy per epoch, side by side, from the rows of metrics.csv.

    The train loss is the one optimized, so it includes label smoothing where the recipe uses it; the test
    loss is plain cross-entropy.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    epochs = [int(_number(r["epoch"])) for r in rows]
    marker = "o" if len(epochs) <= 30 else None
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    loss_ax, accuracy_ax = fig.subplots(1, 2)
    curves = [
        (loss_ax, "train_loss", "train loss", "#1f77b4", "-"),
        (loss_ax, "test_loss", "test loss", "#ff7f0e", "-"),
        (accuracy_ax, "train_accuracy", "train accuracy", "#1f77b4", "--"),
        (accuracy_ax, "test_accuracy", "test accuracy", "#ff7f0e", "-"),
    ]
    for ax, key, label, color, style in curves:
        points = [(e, _number(r.get(key))) for e, r in zip(epochs, rows) if _number(r.get(key)) is not None]
        if not points:
            continue
        scale = 100 if ax is accuracy_ax else 1
        ax.plot(
            [e for e, _ in points],
            [v * scale for _, v in points],
            style,
            color=color,
            marker=marker,
            markersize=4,
            label=label,
        )
    test_accuracy = [(_number(r.get("test_accuracy")), e) for e, r in zip(epochs, rows)]
    test_accuracy = [(a, e) for a, e in test_accuracy if a is not None]
    if test_accuracy:
        best, best_epoch = max(test_accuracy, key=lambda t: (t[0], -t[1]))
        accuracy_ax.plot(
            [best_epoch],
            [best * 100],
            "*",
            color="#ff7f0e",
            markersize=13,
            zorder=3,
            linestyle="none",
            label=f"best test accuracy {best:.2%} (epoch {best_epoch})",
        )
    loss_ax.set_title("loss")
    accuracy_ax.set_title("accuracy")
    accuracy_ax.yaxis.set_major_formatter(PercentFormatter(decimals=0))
    for ax in (loss_ax, accuracy_ax):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if epochs:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        if ax.lines:
            ax.legend(fontsize=9)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def confusion_matrix_plot(
    matrix: Sequence[Sequence[int]] | torch.Tensor, classes: Sequence[str], path: str | Path, title: str | None = None
) -> Path:
    """The confusion matrix as a picture: rows are the actual class, columns the predicted one.

    Cells are coloured by their share of the actual class (on a square-root scale, so that rare confusions
    still show) and hold their counts while there is room for them (up to 30 classes). Beyond that the
    counts are left out and the class names shrink to fit, so 100 classes stay legible.
    """
    import numpy as np
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure

    counts = np.asarray(matrix.tolist() if isinstance(matrix, torch.Tensor) else matrix, dtype=np.int64)
    n = len(classes)
    if counts.shape != (n, n):
        raise ValueError(f"a confusion matrix for {n} classes must be {n}x{n}, not {counts.shape}")
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    side = min(max(2.5 + 0.55 * n, 6.5), 18.0)  # inches
    cell_points = side * 0.72 / n * 72
    label_size = min(max(cell_points * 0.72, 4.0), 10.0)
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", norm=PowerNorm(0.5, vmin=0, vmax=1), interpolation="nearest")
    colorbar = fig.colorbar(image, ax=ax, shrink=0.8, pad=0.02)
    colorbar.set_label("share of the actual class")
    labels = class_labels(classes, classes)
    ax.set_xticks(
        range(n),
        labels,
        fontsize=label_size,
        rotation=45 if n <= 12 else 90,
        ha="right" if n <= 12 else "center",
        rotation_mode="anchor" if n <= 12 else "default",
    )
    ax.set_yticks(range(n), labels, fontsize=label_size)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("actual class")
    ax.tick_params(length=0 if n > 30 else 3)
    if n <= 30:
        count_size = min(9.0, cell_points * 0.33)
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    color = "white" if share[i, j] > 0.45 else "black"
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=count_size, color=color)
    total = counts.sum()
    accuracy = np.trace(counts) / max(total, 1)
    heading = f"accuracy {accuracy:.2%} on {total:,} test images"
    ax.set_title(f"{title}\n{heading}" if title else heading)
    return _save(fig, path)


def reliability_diagram(calibration: dict[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Guo et al.'s reliability diagram, before and after temperature scaling side by side: per bin of the top
    probability, the accuracy of its images (bars) against their mean top probability (the red gap to it), and
    the diagonal a calibrated model follows. calibration: confidence.calibration(..., with_bins=True)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    fig = Figure(figsize=(9, 4.4), layout="constrained")
    temperature = calibration["temperature"]
    for ax, when in zip(fig.subplots(1, 2, sharey=True), ("before", "after")):
        bins = [b for b in calibration["reliability"][when] if b["images"]]
        width = [b["upper"] - b["lower"] for b in bins]
        left = [b["lower"] for b in bins]
        accuracy = [100 * b["accuracy"] for b in bins]
        confidence = [100 * b["confidence"] for b in bins]
        ax.bar(left, accuracy, width, align="edge", color="#1f77b4", edgecolor="white", label="accuracy")
        gaps = [c - a for a, c in zip(accuracy, confidence)]
        ax.bar(
            left,
            gaps,
            width,
            bottom=accuracy,
            align="edge",
            color=WRONG_COLOR,
            alpha=0.3,
            hatch="//",
            edgecolor=WRONG_COLOR,
            linewidth=0.5,
            label="gap to the mean top probability",
        )
        ax.plot([0, 1], [0, 100], "--", color="#444444", linewidth=1, label="calibrated")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 100)
        ax.xaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
        ax.yaxis.set_major_formatter(PercentFormatter(decimals=0))
        ax.set_xlabel("top probability")
        shown_t = 1.0 if when == "before" else temperature
        ax.set_title(f"{when} calibration (T = {shown_t:.3g}): ECE {calibration[f'ece_{when}']:.2%}", fontsize=10)
        ax.grid(alpha=0.3)
    fig.axes[0].set_ylabel("accuracy")
    fig.axes[0].legend(fontsize=8, loc="upper left")
    heading = f"reliability on {calibration['images']:,} images, {calibration['bins']} bins"
    fig.suptitle(f"{title}\n{heading}" if title else heading)
    return _save(fig, path)


def prediction_grid(
    images: torch.Tensor,
    predicted: list[str],
    probabilities: list[float],
    actual: list[str] | None,
    path: str | Path,
    show: bool = False,
    captions: list[str] | None = None,
    classes: Sequence[str] | None = None,
    heading: str | None = None,
    unknown: Sequence[bool] | None = None,
) -> Path:
    """One picture of images, each titled with the predicted class and its probability.

    With the actual classes, right predictions are titled in green with a check mark; wrong ones in red with
    a cross, the actual class beneath, and a red frame. captions (e.g. file names) go under each image.
    images: uint8 [N, C, H, W]. classes: the model's, whose index stands for a name no installed font can draw.
    heading: the picture's title instead of the count of right ones.
    unknown: the images whose top probability is below predict --min-confidence, titled "unknown" in gray, with
    the top class and its probability in brackets (neither right nor wrong).
    """
    unknown = list(unknown or [False] * len(images))
    shown = dict(zip([*predicted, *(actual or [])], class_labels([*predicted, *(actual or [])], classes)))
    n = len(images)
    cols = min(n, 10 if n > 20 else 5)
    rows = math.ceil(n / cols)
    height = 2.2 + (0.15 if captions else 0)
    size = (max(cols * 1.9, 3.6), rows * height + 0.45)  # wide enough for the heading over one image
    # a window needs pyplot; a file does not (and importing pyplot costs `predict` half a second)
    fig = _figure(size, show, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:n]):
        image = images[i].permute(1, 2, 0).numpy()
        gray = image.shape[2] == 1
        ax.imshow(image[:, :, 0] if gray else image, cmap="gray" if gray else None, vmin=0, vmax=255)
        guess = f"{shown[predicted[i]]} {probabilities[i]:.0%}"
        if unknown[i]:
            title, color = f"? unknown ({guess})" + (f"\nactual: {shown[actual[i]]}" if actual else ""), UNKNOWN_COLOR
        elif actual is None:
            title, color = guess, "black"
        elif predicted[i] == actual[i]:
            title, color = f"\u2713 {guess}", RIGHT_COLOR
        else:
            title, color = f"\u2717 {guess}\nactual: {shown[actual[i]]}", WRONG_COLOR
        ax.set_title(title, fontsize=8, color=color, fontweight="normal" if color != WRONG_COLOR else "bold")
        if captions is not None:
            caption = captions[i] if len(captions[i]) <= 24 else "\u2026" + captions[i][-23:]
            ax.text(0.5, -0.04, caption, transform=ax.transAxes, ha="center", va="top", fontsize=7, color="#444444")
        if actual is not None and predicted[i] != actual[i] and not unknown[i]:
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(WRONG_COLOR)
                spine.set_linewidth(3)
    if heading is not None:
        fig.suptitle(heading, fontsize=10)
    elif actual is not None:
        wrong = sum(p != a and not u for p, a, u in zip(predicted, actual, unknown))
        right = n - wrong - sum(unknown)
        heading = f"{right} of {n} right ({right / n:.0%})" + (f", {sum(unknown)} unknown" if any(unknown) else "")
        if wrong:
            heading += "; wrong ones in red, with the actual class"
        fig.suptitle(heading + "\npredicted class and its probability", fontsize=10)
    else:
        fig.suptitle("predicted class and its probability", fontsize=10)
    path = _save(fig, path)
    if show:
        import matplotlib.pyplot as plt

        plt.show()
        plt.close(fig)
    return path


def gradcam_grid(
    images: torch.Tensor, maps: torch.Tensor, labels: list[str], wrong: list[bool], path: str | Path, title: str = ""
) -> Path:
    """Each image (uint8 [N, C, H, W]) above its Grad-CAM overlay (maps [N, H, W] in [0, 1]), titled with its
    label (red where the prediction is wrong); up to 8 images per row."""
    from matplotlib.figure import Figure

    n = len(images)
    cols = min(n, 8)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(cols * 1.7, rows * 3.7), layout="constrained")
    axes = fig.subplots(2 * rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        top, bottom = axes[2 * (i // cols), i % cols], axes[2 * (i // cols) + 1, i % cols]
        image = images[i].permute(1, 2, 0).numpy()
        gray = image.shape[2] == 1
        shown = image[:, :, 0] if gray else image
        top.imshow(shown, cmap="gray" if gray else None, vmin=0, vmax=255)
        bottom.imshow(shown, cmap="gray" if gray else None, vmin=0, vmax=255)
        bottom.imshow(maps[i].numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        top.set_title(labels[i], fontsize=8, color=WRONG_COLOR if wrong[i] else "black")
    fig.suptitle(title or "Grad-CAM of the last stage for the predicted class (red: high)", fontsize=10)
    return _save(fig, path)


def _line_style(net: str, colours: dict[str, Any]) -> dict[str, Any]:
    """How a net is drawn in every experiment's picture: plain nets dashed, residual nets solid, one colour per
    depth (the name less its "plain"/"resnet"), as in Figures 1, 6 and 7 of He et al. 2015. colours: the colour
    of each depth so far, added to."""
    from matplotlib import colormaps

    plain = net.startswith("plain")
    size = net.removeprefix("plain").removeprefix("resnet")
    colours.setdefault(size, colormaps["tab10"](len(colours) % 10))
    label = f"{'plain' if plain else 'ResNet'}-{size}" if size.isdigit() else net
    return {
        "color": colours[size],
        "linestyle": "--" if plain else "-",
        "linewidth": 1.8,
        "marker": "o",
        "markersize": 3,
        "label": label,
    }


def _curves(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """An experiment's rows grouped by net, the nets ordered by depth (the number in the name), plain first."""
    curves: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        curves.setdefault(row["net"], []).append(row)
    depth = {net: int((re.findall(r"\d+", net) or ["0"])[0]) for net in curves}
    return dict(sorted(curves.items(), key=lambda item: (depth[item[0]], not item[0].startswith("plain"))))


def _mark_clipped(ax, top: float) -> None:
    """Each point above the y axis's top gets an arrow at the top edge and its value, in its line's colour, so no
    point is hidden by the scale; values of the same epoch are stacked."""
    stacked: dict[float, int] = {}
    for line in list(ax.lines):
        for x, y in zip(line.get_xdata(), line.get_ydata()):
            if y > top:
                stacked[x] = stacked.get(x, 0) + 1
                ax.annotate(
                    f"{y:.0f}%",
                    xy=(x, top),
                    xytext=(6, -12 * stacked[x]),
                    textcoords="offset points",
                    color=line.get_color(),
                    fontsize=9,
                    va="center",
                    annotation_clip=False,
                    arrowprops={"arrowstyle": "->", "color": line.get_color(), "linewidth": 0.8},
                )


def degradation_figure(rows: list[dict[str, Any]], subtitle: str = ""):
    """Training error (left) and test error (right) per epoch: plain nets dashed, residual nets solid, one
    colour per depth, as in Figures 1 and 6 of He et al. 2015. rows: degradation.csv's. The y axis is scaled to
    the epochs after the first, whose errors are far above the rest; a point above it is marked with its value."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.4), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True)
    colours: dict[str, Any] = {}
    top = 0.0
    for net, curve in _curves(rows).items():
        curve = sorted(curve, key=lambda r: r["epoch"])
        style = _line_style(net, colours)
        epochs = [r["epoch"] for r in curve]
        for ax, key in zip(axes, ("train_error", "test_error")):
            values = [100 * r[key] for r in curve]
            ax.plot(epochs, values, **style)
            top = max(top, max(values[1:] or values))
    for ax, title in zip(axes, ("training error", "test error")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel("error (%)")
        ax.set_ylim(0, math.ceil(top * 1.1))
        _mark_clipped(ax, ax.get_ylim()[1])
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[1].legend(title="dashed: plain, solid: residual", fontsize=9, title_fontsize=9)
    fig.suptitle("Plain nets (dashed) and residual nets (solid) of growing depth, trained alike", fontsize=12)
    if subtitle:
        fig.supxlabel(subtitle, fontsize=8, color="#555555")
    return fig


def degradation_curves(rows: list[dict[str, Any]], path: str | Path, subtitle: str = "") -> Path:
    """degradation_figure written to path (PNG)."""
    return _save(degradation_figure(rows, subtitle), path)


def gradient_norms_plot(rows: list[dict[str, Any]], path: str | Path, subtitle: str = "") -> Path:
    """The gradient norm of each weighted layer's weights (log scale) against its place in the network, one line
    per net: plain nets dashed, residual nets solid. rows: gradients.csv's."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.8), layout="constrained")
    ax = fig.subplots()
    colours: dict[str, Any] = {}
    for net, curve in _curves(rows).items():
        ax.plot([r["layer"] for r in curve], [r["grad_norm"] for r in curve], **_line_style(net, colours))
    ax.set_yscale("log")
    ax.set_xlabel("layer (1: the first convolution; last: the classifier)")
    ax.set_ylabel("gradient norm of the layer's weights")
    ax.grid(alpha=0.3, which="both")
    ax.legend(title="dashed: plain, solid: residual", fontsize=9, title_fontsize=9)
    fig.suptitle("Gradient norm of each layer at the start of training", fontsize=12)
    if subtitle:
        fig.supxlabel(subtitle, fontsize=8, color="#555555")
    return _save(fig, path)


def layer_responses_plot(rows: list[dict[str, Any]], path: str | Path, subtitle: str = "") -> Path:
    """As Figure 7 of He et al. 2015: the std of each 3x3 layer's response by its place in the network (top) and
    sorted by magnitude (bottom), one line per net: plain nets dashed, residual nets solid. rows: responses.csv's."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 7.5), layout="constrained")
    by_layer, by_size = fig.subplots(2, 1)
    colours: dict[str, Any] = {}
    for net, curve in _curves(rows).items():
        style = _line_style(net, colours)
        stds = [r["response_std"] for r in sorted(curve, key=lambda r: r["layer"])]
        by_layer.plot(range(1, len(stds) + 1), stds, **style)
        by_size.plot(range(1, len(stds) + 1), sorted(stds, reverse=True), **style)
    by_layer.set_xlabel("layer index (original)")
    by_size.set_xlabel("layer index (sorted by magnitude)")
    for ax in (by_layer, by_size):
        ax.set_ylabel("std")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    by_layer.legend(title="dashed: plain, solid: residual", fontsize=9, title_fontsize=9)
    fig.suptitle(
        "Standard deviation of the responses of each 3x3 layer (after BN, before ReLU and addition)", fontsize=11
    )
    if subtitle:
        fig.supxlabel(subtitle, fontsize=8, color="#555555")
    return _save(fig, path)


def duplicate_sheet(groups: list[list[tuple[Any, str]]], path: str | Path, title: str = "") -> Path:
    """A contact sheet of groups of (near) copies, one row per group: each image (uint8 [H, W, 3] or [H, W]) with
    its caption (its file, class and part), so a person sees at a glance which copies to remove."""
    from matplotlib.figure import Figure

    columns = max(len(group) for group in groups)
    fig = Figure(figsize=(2.2 * columns, 2.4 * len(groups) + 0.4), layout="constrained")
    axes = fig.subplots(len(groups), columns, squeeze=False)
    for row, group in zip(axes, groups):
        for ax in row:
            ax.axis("off")
        for ax, (image, caption) in zip(row, group):
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_title(caption, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
