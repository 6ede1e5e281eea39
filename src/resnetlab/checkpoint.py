"""Self-describing checkpoints: written atomically, loaded without running code from the file."""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import UserError
from .models import create_model

FORMAT = "resnetlab-checkpoint"
VERSION = 1


def describe_model(name: str, num_classes: int, in_channels: int, model: nn.Module) -> dict[str, Any]:
    """The arguments that rebuild `model` exactly with `create_model`."""
    return {
        "name": name,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "options": {"shortcut": model.shortcut, "stem": model.stem},
    }


def build_model(checkpoint: dict[str, Any]) -> nn.Module:
    """Rebuild the model a checkpoint describes and load its weights."""
    spec = checkpoint["model"]
    model = create_model(spec["name"], spec["num_classes"], spec["in_channels"], **spec["options"])
    model.load_state_dict(checkpoint["state_dict"])
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
        raise UserError(f"{path} is a folder without best.pt; give the path of a checkpoint file.")
    if not path.exists():
        raise UserError(f"no checkpoint at {path}; train one first (resnetlab train) or check the path.")
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a resnetlab checkpoint onto the CPU.

    torch.load runs with weights_only=True: the unpickler accepts tensors and plain containers only, so a
    crafted file cannot run code; such a file is refused with a UserError.
    """
    path = resolve_path(path)
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty (0 bytes); it is not a checkpoint, train again or use another file.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{path} holds objects other than weights, which could run code, so it was not loaded ({first[:160]}); "
            "load only checkpoints written by resnetlab."
        ) from None
    except PermissionError:
        raise UserError(f"{path} is not readable; fix its permissions.") from None
    except Exception as e:  # noqa: BLE001 - any failure to parse a foreign or torn file means the same thing
        raise UserError(
            f"{path} is not a readable checkpoint (truncated, or another kind of file: {type(e).__name__}); "
            "use a best.pt or last.pt written by resnetlab train."
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise UserError(f"{path} is a PyTorch file but not a resnetlab checkpoint; use a best.pt or last.pt "
                        "written by resnetlab train.")
    if checkpoint.get("version", 0) > VERSION:
        raise UserError(f"{path} was written by a newer resnetlab (format {checkpoint['version']}); upgrade resnetlab.")
    return checkpoint
