"""The machine a benchmark ran on, printed beside its figures."""

from __future__ import annotations

import datetime
import os
import platform


def cpu_model() -> str:
    """The CPU's model name (without importing torch, for the scripts that only drive a server)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine() or "unknown CPU"


# The CPU flags that decide what runs fast here: AVX2 / AVX-512 kernels, bf16 and int8 (VNNI) in hardware, AMX.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")


def cpu_flags() -> list[str]:
    """Which of SPEED_FLAGS the CPU has (Linux's /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return []
    return [flag for flag in SPEED_FLAGS if flag in flags]


def machine_info() -> dict:
    import torch

    from resnetlab.runtime import cpu_has_fast_bf16

    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "hardware_bf16": cpu_has_fast_bf16(),
        "date": datetime.date.today().isoformat(),
    }


def matmul_peak_gflops(n: int = 4096, repeats: int = 5, dtype=None) -> float:
    """The machine's practical peak: the median GFLOP/s of an n x n matmul in the given dtype (fp32 by default)."""
    import statistics
    import time

    import torch

    dtype = dtype or torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        seconds.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(seconds) / 1e9


def forward_flops(model, image_shape: tuple[int, ...]) -> int:
    """Floating-point operations of one forward pass of one image through the model's convolutions and linear
    layers (2 per multiply-add; BN, ReLU and pooling are left out, as usual). A training step costs about 3x."""
    import torch
    from torch import nn

    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += 2 * output.numel() * per_output
        else:
            total += 2 * module.in_features * module.out_features * output.shape[0]

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *image_shape))
    model.train(was_training)
    for hook in hooks:
        hook.remove()
    return total
