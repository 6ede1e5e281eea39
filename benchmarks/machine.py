"""The machine a benchmark ran on, printed beside its figures."""

from __future__ import annotations

import datetime
import os
import platform


def machine_info() -> dict:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from resnetlab.runtime import cpu_has_fast_bf16

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "hardware_bf16": cpu_has_fast_bf16(),
        "date": datetime.date.today().isoformat(),
    }
