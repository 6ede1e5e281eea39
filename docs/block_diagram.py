"""Draw the basic block and the bottleneck block with their shortcuts (identity, option A, option B), as in
src/resnetlab/models.py: python docs/block_diagram.py [docs/images/blocks.png]

Each column is one block, read from the top: the layers of the residual function F(x) on the left, the
shortcut on the right, their sum, then the ReLU that follows it (as in He et al. 2015; the 2016 pre-activation
ResNet moves it into F).
"""

import sys

from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyBboxPatch

LAYER, SHORTCUT, SUM = "#dbe8f6", "#fbe3c8", "#ffffff"
BOX_W, BOX_H, STEP = 3.4, 0.62, 1.0  # layer box size and vertical distance between layers (data units)
SHORT_DX, SHORT_W = 4.0, 3.4  # the shortcut's distance right of the residual branch, and its box's width
COLUMN = 9.5  # distance between the blocks
INCH = 0.5  # inches per data unit, so that text and boxes keep their proportions


def box(ax, x, y, text, color, width=BOX_W, height=BOX_H) -> None:
    ax.add_patch(
        FancyBboxPatch(
            (x - width / 2, y - height / 2),
            width,
            height,
            boxstyle="round,pad=0.04",
            facecolor=color,
            edgecolor="#333333",
            linewidth=1,
            zorder=3,
        )
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=9, zorder=4)


def arrow(ax, start, end) -> None:
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        arrowprops={"arrowstyle": "-|>", "color": "#333333", "lw": 1.1, "shrinkA": 0, "shrinkB": 0},
    )


def block(ax, x: float, title: str, layers: list[str], shortcut: str | None, x_in: str, x_out: str) -> None:
    """One block centred on x: input, the layers of F(x), the shortcut (None: identity), the sum, the ReLU."""
    ax.text(x + SHORT_DX / 2 - 0.6, 1.25, title, ha="center", va="center", fontsize=10)
    ax.text(x, 0, x_in, ha="center", va="center", fontsize=9)
    ys = [-STEP * (i + 1) for i in range(len(layers))]
    arrow(ax, (x, -0.2), (x, ys[0] + BOX_H / 2 + 0.04))
    for i, (text, y) in enumerate(zip(layers, ys)):
        box(ax, x, y, text, LAYER)
        if i + 1 < len(ys):
            arrow(ax, (x, y - BOX_H / 2 - 0.04), (x, ys[i + 1] + BOX_H / 2 + 0.04))
    y_sum = ys[-1] - STEP
    arrow(ax, (x, ys[-1] - BOX_H / 2 - 0.04), (x, y_sum + 0.22))
    ax.add_patch(Circle((x, y_sum), 0.22, facecolor=SUM, edgecolor="#333333", linewidth=1.1))
    ax.text(x, y_sum, "+", ha="center", va="center", fontsize=13)
    # F(x): a bracket left of its layers
    x_b = x - BOX_W / 2 - 0.25
    ax.plot([x_b, x_b], [ys[0] + BOX_H / 2, ys[-1] - BOX_H / 2], color="#1f5f9f", lw=1.4)
    ax.text(x_b - 0.12, (ys[0] + ys[-1]) / 2, "F(x)", ha="right", va="center", fontsize=10, color="#1f5f9f")
    # The shortcut: right from the input, down (through option A or B), back into the sum.
    x_s, y_start = x + SHORT_DX, -0.45
    ax.plot([x, x_s, x_s], [y_start, y_start, y_sum], color="#b35900", lw=1.3)
    ax.plot([x], [y_start], marker="o", markersize=3.5, color="#b35900")
    if shortcut:
        box(ax, x_s, (y_start + y_sum) / 2, shortcut, SHORTCUT, width=SHORT_W, height=1.3)
    else:
        ax.text(
            x_s + 0.15,
            (y_start + y_sum) / 2,
            "identity:\nx itself",
            ha="left",
            va="center",
            fontsize=9,
            color="#b35900",
        )
    arrow(ax, (x_s, y_sum), (x + 0.22, y_sum))
    y_relu = y_sum - STEP
    arrow(ax, (x, y_sum - 0.22), (x, y_relu + BOX_H / 2 + 0.04))
    box(ax, x, y_relu, "ReLU", LAYER)
    arrow(ax, (x, y_relu - BOX_H / 2 - 0.04), (x, y_relu - STEP + 0.25))
    ax.text(x, y_relu - STEP + 0.05, x_out, ha="center", va="center", fontsize=9)


def main(path: str = "docs/images/blocks.png") -> None:
    left, right, bottom, top = -3.0, 3 * COLUMN + SHORT_DX + 2.0, -9.9, 2.4
    fig = Figure(figsize=((right - left) * INCH, (top - bottom) * INCH))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.axis("off")
    basic = ["3x3 conv, 16", "BN", "ReLU", "3x3 conv, 16", "BN"]
    first = ["3x3 conv, 32, stride 2", "BN", "ReLU", "3x3 conv, 32", "BN"]
    block(
        ax,
        0,
        "basic block, identity shortcut\n(resnet20, stage 1: 16 channels)",
        basic,
        None,
        "x: 16 x 32 x 32",
        "16 x 32 x 32",
    )
    block(
        ax,
        COLUMN,
        "basic block, first of stage 2:\nshortcut option A (no parameters)",
        first,
        "option A: every 2nd pixel;\nchannels 16..31 are zeros",
        "x: 16 x 32 x 32",
        "32 x 16 x 16",
    )
    block(
        ax,
        2 * COLUMN,
        "basic block, first of stage 2:\nshortcut option B (projection)",
        first,
        "option B: 1x1 conv, 32,\nstride 2, then BN",
        "x: 16 x 32 x 32",
        "32 x 16 x 16",
    )
    block(
        ax,
        3 * COLUMN,
        "bottleneck block, identity shortcut\n(resnet50, stage 1: 256 channels)",
        ["1x1 conv, 64", "BN, ReLU", "3x3 conv, 64", "BN, ReLU", "1x1 conv, 256", "BN"],
        None,
        "x: 256 x 56 x 56",
        "256 x 56 x 56",
    )
    ax.text(
        (left + right) / 2,
        2.1,
        "Residual blocks as resnetlab builds them (He et al. 2015): output = ReLU(F(x) + shortcut(x))",
        ha="center",
        va="center",
        fontsize=12,
    )
    fig.savefig(path, dpi=100)
    print(path)


if __name__ == "__main__":
    main(*sys.argv[1:2])
