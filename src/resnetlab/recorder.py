"""The files and console output of a training run: one object that `fit` hands each epoch's results to.

A run folder holds best.pt (the epoch with the best test accuracy), last.pt (the latest epoch and what
--resume needs), metrics.csv, curves.png, summary.json and, with --tensorboard, tensorboard/.
"""

from __future__ import annotations

import csv
import json
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn
from tqdm import tqdm

from .card import ModelCard
from .checkpoint import Checkpoint, load_checkpoint, save_atomic
from .confidence import describe_calibration
from .config import TrainConfig
from .errors import Interrupted, UserError
from .job import Job, Progress
from .metrics import describe_accuracy
from .plots import training_curves
from .tensorboard_log import TensorBoardLog

METRICS_COLUMNS = ["epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr", "seconds"]
OPTIONAL_COLUMNS = ["test_balanced_accuracy"]  # written when best.pt is chosen by it (imbalanced classes)
RUN_FILES = (
    "best.pt",
    "last.pt",
    "metrics.csv",
    "summary.json",
    "curves.png",
    "split.json",
    "skipped.txt",
    "tensorboard",
)
EpochCallback = Callable[[dict[str, Any], nn.Module], None]


def _new_run_dir(base: str) -> Path:
    path, n = Path(base), 2
    while path.exists():
        path, n = Path(f"{base}-{n}"), n + 1
    return path


def choose_out_dir(out: str | None, dataset: str, model_name: str, overwrite: bool) -> Path:
    """The run folder: out, or a fresh runs/<dataset>-<model>[-N]. Never silently replaces a file a run owns."""
    if out is None:
        return _new_run_dir(f"runs/{dataset}-{model_name}")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} is a file; give a folder for the run's files.")
    owned = [name for name in RUN_FILES if (path / name).exists()]
    if owned and not overwrite:
        resume = f"continue it with resnetlab train --resume {path}, " if "last.pt" in owned else ""
        raise UserError(
            f"{path} already holds a run ({', '.join(owned)}); {resume}choose another --out, or pass "
            "--overwrite to replace it."
        )
    return path


def _create(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to the output folder {out} ({e.strerror}); choose another --out.") from None
    return out


def _save(obj: Any, path: Path) -> None:
    try:
        save_atomic(obj, path)
    except OSError as e:
        raise UserError(
            f"could not write {path} ({e.strerror or e}); free some space or choose another --out (the "
            "files saved before are intact)."
        ) from None


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = METRICS_COLUMNS + [c for c in OPTIONAL_COLUMNS if any(c in row for row in rows)]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


class RunRecorder:
    """Writes a run's files and prints its progress. Only the main process of a distributed run writes files;
    with quiet (or on the other processes) nothing is printed."""

    def __init__(
        self, out: Path, card: ModelCard, config: TrainConfig, main: bool = True, on_epoch: EpochCallback | None = None
    ) -> None:
        self.out, self.card, self.config, self.main = out, card, config, main
        self.quiet = config.quiet or not main
        self.callbacks: list[EpochCallback] = [on_epoch] if on_epoch else []
        self.stop_signal: Callable[[], int] = lambda: signal.SIGINT
        self.tensorboard: TensorBoardLog | None = None
        if main:
            _create(out)
            if config.tensorboard:
                self.tensorboard = TensorBoardLog(out / "tensorboard")

    def say(self, message: str) -> None:
        if not self.quiet:
            print(message, flush=True)

    def start(self, description: str, notes: list[str] = (), skipped: tuple[str, ...] = ()) -> None:
        """Say what the run is; write split.json (a held-out share) and skipped.txt (files left out, --skip-bad)."""
        for note in notes:
            self.say(f"note: {note}")
        self.say(f"{description}; writing to {self.out}")
        if self.main and self.card.holdout:
            split = {
                "data_dir": self.card.data_dir,
                "val_split": self.config.val_split,
                "seed": self.config.seed,
                "validation": list(self.card.holdout),
            }
            (self.out / "split.json").write_text(json.dumps(split, indent=1) + "\n")
        if self.main and skipped:
            (self.out / "skipped.txt").write_text("".join(f"{line}\n" for line in skipped))
        elif self.main:
            (self.out / "skipped.txt").unlink(missing_ok=True)  # an overwritten run's

    def progress_bar(self, epoch: int, epochs: int, steps: int) -> tqdm:
        return tqdm(
            total=steps,
            desc=f"epoch {epoch}/{epochs}",
            disable=self.quiet or not sys.stderr.isatty(),
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def _checkpoint(self, job: Job, progress: Progress, row: dict[str, Any]) -> Checkpoint:
        return Checkpoint(
            self.card,
            job.weights(),
            epoch=progress.epoch,
            metrics=row,
            best_test_accuracy=progress.best_accuracy,
            config=self.config.to_dict(),
        )

    def epoch_end(
        self, job: Job, progress: Progress, row: dict[str, Any], improved: bool, images_per_second: float
    ) -> None:
        test = (
            f"test average loss {row['test_loss']:.4f}, accuracy {row['test_accuracy']:.2%}"
            if row["test_accuracy"] is not None
            else f"no test evaluation (every {job.eval_every} epochs)"
        )
        self.say(
            f"epoch {row['epoch']}/{job.epochs}: train loss {row['train_loss']:.4f}, {images_per_second:.0f} "
            f"img/s | {test} | {row['seconds']:.0f} s"
        )
        if not self.main:
            return
        checkpoint = self._checkpoint(job, progress, row)
        if improved:
            _save(checkpoint.to_dict(), self.out / "best.pt")
        _save(replace(checkpoint, train_state=job.train_state(progress)).to_dict(), self.out / "last.pt")
        write_metrics(self.out / "metrics.csv", progress.rows)
        training_curves(progress.rows, self.out / "curves.png", f"{self.card.architecture} on {self.card.dataset}")
        if self.tensorboard is not None:
            self.tensorboard.log_epoch(row)
        for callback in self.callbacks:
            callback({**row, "train_images_per_second": images_per_second}, job.net)

    def interrupted(self, job: Job, progress: Progress) -> None:
        """Save last.pt where training stopped, then raise Interrupted with the command that continues it."""
        if self.main:
            last = self._checkpoint(job, progress, progress.rows[-1] if progress.rows else {})
            _save(replace(last, train_state=job.train_state(progress)).to_dict(), self.out / "last.pt")
        number = self.stop_signal()
        raise Interrupted(
            f"{signal.Signals(number).name}: stopped in epoch {progress.epoch + 1} at step "
            f"{progress.step}, saved {self.out / 'last.pt'}; continue with: resnetlab train --resume "
            f"{self.out}",
            number,
        )

    def best_weights(self) -> dict[str, Any] | None:
        """best.pt's weights, or None where no epoch improved on the start (no best.pt)."""
        path = self.out / "best.pt"
        return load_checkpoint(path).state_dict if path.is_file() else None

    def calibrated(self, report: dict[str, Any]) -> None:
        """Keep the temperature fitted on best.pt's held-out logits in best.pt's model card, and say it."""
        if self.main:
            best = load_checkpoint(self.out / "best.pt")
            card = replace(best.card, temperature=report["temperature"])
            _save(replace(best, card=card).to_dict(), self.out / "best.pt")
        self.say(describe_calibration(report, f"fitted on best.pt's logits of the {report['images']} test images"))

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.main:
            try:
                (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            except OSError as e:
                raise UserError(
                    f"could not write {self.out / 'summary.json'} ({e.strerror}); free some space."
                ) from None
        balanced = summary.get("best_test_balanced_accuracy")
        self.say(
            f"best test accuracy {describe_accuracy(summary['best_test_accuracy'], summary['test_images'])}"
            + (f" (balanced accuracy {balanced:.2%}, which chose it)" if balanced is not None else "")
            + f" at epoch {summary['best_epoch']}; weights "
            f"in {self.out / 'best.pt'} (predict with: resnetlab predict {self.out / 'best.pt'})"
        )
        return summary
