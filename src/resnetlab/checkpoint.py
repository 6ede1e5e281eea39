"""Self-describing checkpoints: a model card, weights and, in last.pt, the training state; written atomically,
loaded without running code from the file and without letting the file decide how much memory we use."""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .card import ModelCard
from .errors import NotARegularFile, UserError

FORMAT = "resnetlab-checkpoint"
VERSION = 1
# torch.save stores tensors uncompressed, so a real checkpoint unpacks to about its own size. A crafted file can
# deflate a few MB into gigabytes; it is refused from its zip directory, before anything is unpacked.
MAX_INFLATION = 2.0
INFLATION_SLACK = 16 * 1024 * 1024  # bytes


@dataclass
class Checkpoint:
    """What a best.pt or last.pt holds: the model card, the weights, and where training stood."""

    card: ModelCard
    state_dict: dict[str, torch.Tensor]
    epoch: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)  # the epoch's row of metrics.csv
    best_test_accuracy: float | None = None
    config: dict[str, Any] | None = None  # the TrainConfig that trained it
    train_state: dict[str, Any] | None = None  # last.pt only: what --resume needs
    resnetlab_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        """The layout written to disk (the card's fields at the top level, as in every version so far)."""
        saved = {
            "format": FORMAT,
            "version": VERSION,
            "resnetlab_version": self.resnetlab_version,
            **self.card.to_dict(),
            "epoch": self.epoch,
            "metrics": self.metrics,
            "best_test_accuracy": self.best_test_accuracy,
            "state_dict": self.state_dict,
            "config": self.config,
        }
        if self.train_state is not None:
            saved["train_state"] = self.train_state
        return saved

    @classmethod
    def from_dict(cls, saved: dict[str, Any], source: str) -> Checkpoint:
        card = ModelCard.from_dict(saved, source)
        state_dict = saved.get("state_dict")
        if not isinstance(state_dict, dict):
            raise UserError(f"{source} has no weights (state_dict); use a best.pt or last.pt written by resnetlab.")
        best = saved.get("best_test_accuracy")
        return cls(
            card,
            state_dict,
            epoch=int(saved.get("epoch") or 0),
            metrics=dict(saved.get("metrics") or {}),
            best_test_accuracy=float(best) if isinstance(best, (int, float)) else None,
            config=saved.get("config"),
            train_state=saved.get("train_state"),
            resnetlab_version=str(saved.get("resnetlab_version", "")),
        )

    def build_model(self, source: str = "the checkpoint") -> nn.Module:
        """The model the card describes, with these weights, in eval mode."""
        model = self.card.build_model()
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in self.state_dict.items() if isinstance(v, torch.Tensor)}
        if expected != found:
            wrong = sorted(set(expected.items()) ^ set(found.items()))[:1]
            raise UserError(
                f"{source} is damaged: its weights do not fit its model description (first difference: "
                f"{wrong[0][0] if wrong else '?'}); train again or use another file."
            )
        model.load_state_dict(self.state_dict)
        return model.eval()


def save_atomic(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over path.

    A crash at any instant leaves either the old file or the new one, never a torn one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes the file private; a checkpoint is meant to be shared
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def resolve_path(path: str | Path) -> Path:
    """A checkpoint file, or a run folder (its best.pt)."""
    path = Path(path)
    if path.is_dir():
        if (path / "best.pt").is_file():
            return path / "best.pt"
        if (path / "last.pt").is_file():  # a run stopped before its first evaluation
            raise UserError(
                f"{path} is a folder without best.pt, but its last.pt is there (where training stopped); give "
                f"{path / 'last.pt'} to use it, or continue training with resnetlab train --resume {path}."
            )
        raise UserError(f"{path} is a folder without best.pt; give the path of a checkpoint file.")
    if not path.exists():
        raise UserError(f"no checkpoint at {path}; train one first (resnetlab train) or check the path.")
    if not path.is_file():
        raise NotARegularFile(path, "give a best.pt or last.pt written by resnetlab train, or its run folder")
    return path


def _check_inflation(path: Path) -> None:
    """Refuse a zip archive that would unpack to much more than its own size."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a zip archive: torch.load says what it is
    if unpacked > MAX_INFLATION * size + INFLATION_SLACK:
        raise UserError(
            f"{path} would unpack to {unpacked / 1e9:.1f} GB from {size / 1e6:.1f} MB, which no checkpoint "
            "written by resnetlab does; it was not loaded."
        )


def export_kind(path: Path) -> str | None:
    """ "an ONNX model" or "a TorchScript model" for a file of the kinds resnetlab export writes, None for any other."""
    if path.suffix.lower() == ".onnx":
        return "an ONNX model"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    return "a TorchScript model" if any(name.endswith("/constants.pkl") or "/code/" in name for name in names) else None


def _not_a_checkpoint(path: Path) -> str | None:
    """Why a file is certainly not a checkpoint, before torch.load reads it: an export, or neither a zip archive nor
    a pickle (torch.load's unpickler would refuse its first byte in words meant for a pickle that could run code)."""
    kind = export_kind(path)
    if kind:
        return (
            f"{path} is {kind} from resnetlab export, not a checkpoint; give the best.pt or last.pt it "
            "was exported from, or its run folder."
        )
    try:
        with open(path, "rb") as f:
            start = f.read(4)
    except OSError:
        return None  # torch.load says why it cannot be read
    if start != b"PK\x03\x04" and not start.startswith(b"\x80"):  # torch.save's zip archive, or its older pickle
        return (
            f"{path} is not a readable checkpoint (another kind of file); use a best.pt or last.pt written by "
            "resnetlab train."
        )
    return None


def _first_sentence(error: Exception) -> str:
    """The first sentence of torch's refusal, whole (its message runs on for paragraphs)."""
    text = " ".join(str(error).split()) or type(error).__name__
    for marker in ("WeightsUnpickler error: ", "Unsupported global: ", "Trying to load "):
        if marker in text:
            text = text[text.index(marker) + len(marker) :]
    end = text.find(". ")
    if 0 < end < 200:
        return text[:end]
    return text.rstrip(".") if len(text) <= 200 else text[:200].rsplit(" ", 1)[0] + " ..."  # never cut a word in two


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw contents of a resnetlab checkpoint file, loaded onto the CPU.

    torch.load runs with weights_only=True: the unpickler accepts tensors and plain containers only, so a
    crafted file cannot run code; such a file is refused with a UserError.
    """
    path = resolve_path(path)
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty (0 bytes); it is not a checkpoint, train again or use another file.")
    _check_inflation(path)
    refusal = _not_a_checkpoint(path)
    if refusal:
        raise UserError(refusal)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about the same refusal it raises
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(
            f"{path} holds objects other than weights, which could run code, so it was not loaded "
            f"({_first_sentence(e)}); load only checkpoints written by resnetlab."
        ) from None
    except PermissionError:
        raise UserError(f"{path} is not readable; fix its permissions.") from None
    except Exception as e:  # noqa: BLE001 - any failure to parse a foreign or torn file means the same thing
        raise UserError(
            f"{path} is not a readable checkpoint (truncated, or another kind of file: {type(e).__name__}); "
            "use a best.pt or last.pt written by resnetlab train."
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise UserError(
            f"{path} is a PyTorch file but not a resnetlab checkpoint; use a best.pt or last.pt "
            "written by resnetlab train."
        )
    version = checkpoint.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise UserError(f"{path} was written by a newer resnetlab (format {version!r}); upgrade resnetlab.")
    return checkpoint


def load_checkpoint(path: str | Path) -> Checkpoint:
    """A resnetlab checkpoint (or a run folder's best.pt), its model card checked before anything is built."""
    path = resolve_path(path)
    return Checkpoint.from_dict(read_checkpoint(path), str(path))
