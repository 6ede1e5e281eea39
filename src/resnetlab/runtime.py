"""Device, precision and memory format, decided in one place."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .errors import UserError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype, None for plain fp32
    memory_format: torch.memory_format

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @property
    def precision(self) -> str:
        return "fp32" if self.amp_dtype is None else "bf16"

    @property
    def runs_on(self) -> str:
        return f"{self.device.type}, {self.precision}"


def cpu_has_fast_bf16() -> bool:
    """True where bf16 convolutions run in hardware (AVX512_BF16 or AMX), not emulated."""
    cpu = torch.cpu
    return bool(
        getattr(cpu, "_is_amx_tile_supported", lambda: False)()
        or getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
    )


def cpu_has_vnni() -> bool:
    """True where the CPU has int8 dot-product instructions (AVX512_VNNI or AVX_VNNI)."""
    return bool(getattr(torch.cpu, "_is_vnni_supported", lambda: False)())


def select_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto.")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps was asked for but Apple's MPS is not available; use --device cpu or auto.")
    if name not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown device {name!r}; choose one of: auto, cpu, cuda, mps.")
    return torch.device(name)


def select_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    """auto precision: bf16 on a CUDA GPU that has it and on a CPU with AVX512_BF16/AMX, fp32 elsewhere."""
    dev = select_device(device)
    if precision == "auto":
        if dev.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        elif dev.type == "cpu":
            precision = "bf16" if cpu_has_fast_bf16() else "fp32"
        else:
            precision = "fp32"
    dtypes = {"fp32": None, "bf16": torch.bfloat16}
    if precision not in dtypes:
        raise UserError(f"unknown precision {precision!r}; choose one of: auto, fp32, bf16.")
    return Runtime(dev, dtypes[precision], torch.channels_last)
