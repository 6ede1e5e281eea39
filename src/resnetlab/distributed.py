"""Multi-process training with torch.distributed, as started by torchrun (gloo on CPU, nccl on CUDA)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and draws progress."""
        return self.rank == 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of tensor over all processes (the tensor itself when there is one process)."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """The tensors (CPU, of any length) of all processes, concatenated in rank order (the tensor itself when
        there is one process)."""
        if not self.enabled:
            return tensor
        parts = [None] * self.world_size
        dist.all_gather_object(parts, tensor.cpu())
        return torch.cat(parts)

    def broadcast_flag(self, flag: bool) -> bool:
        """True on every process if it is True on any (so all stop together)."""
        if not self.enabled:
            return flag
        value = torch.tensor([int(flag)])
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Give every process the first one's buffers (BN running statistics), so that all evaluate the
        weights that the first process saves."""
        if self.enabled:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def reduce_train_stats(self, stats: dict) -> dict:
        """train_one_epoch's loss, accuracy and throughput over all processes (stats itself with one process)."""
        if not self.enabled:
            return stats
        totals = stats["totals"]
        sums = self.all_reduce_sum(
            torch.tensor([totals["loss_sum"], totals["correct"], totals["seen"]], dtype=torch.float64)
        )
        return {
            **stats,
            "train_loss": (sums[0] / sums[2]).item(),
            "train_accuracy": (sums[1] / sums[2]).item(),
            "train_images_per_second": stats["train_images_per_second"] * self.world_size,
        }

    def shard(self, data):
        """This process's share of an ImageData (every world_size-th image), for evaluation."""
        if not self.enabled:
            return data
        return data.select(torch.arange(self.rank, len(data), self.world_size))

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The model behind DistributedDataParallel when there are several processes."""
        if not self.enabled:
            return model
        device_ids = [self.local_rank] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def setup(device_type: str) -> Distributed:
    """Join the process group that torchrun describes in the environment; one process without it."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank)


def teardown(info: Distributed) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
