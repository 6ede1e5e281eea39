"""TensorBoard event files for a training run (optional: needs the `tensorboard` package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from .errors import UserError

# metrics.csv column -> TensorBoard tag; related curves share a chart through the "loss/" and "accuracy/" prefixes.
TAGS = {
    "train_loss": "loss/train",
    "test_loss": "loss/test",
    "train_accuracy": "accuracy/train",
    "test_accuracy": "accuracy/test",
    "lr": "learning_rate",
    "seconds": "seconds_per_epoch",
}


class TensorBoardLog:
    """Writes each epoch's row of metrics.csv as TensorBoard scalars, stepped by epoch, into `folder`.

    Checks at construction that TensorBoard is installed, so a missing package stops a run before it starts;
    the event file itself is created with the first epoch.
    """

    def __init__(self, folder: str | Path) -> None:
        if importlib.util.find_spec("tensorboard") is None:
            raise UserError(
                "--tensorboard needs the tensorboard package, which is not installed; install it from the "
                "resnetlab folder with: pip install -e '.[tensorboard]', or train without "
                "--tensorboard."
            )
        self.folder = Path(folder)
        self._writer = None

    def log_epoch(self, row: dict[str, Any]) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.folder))
        for column, tag in TAGS.items():
            if row.get(column) is not None:
                self._writer.add_scalar(tag, float(row[column]), int(row["epoch"]))
        self._writer.flush()  # each epoch is on disk at once, for a TensorBoard watching the run

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
