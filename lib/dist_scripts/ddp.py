"""Data-parallel training with `DistributedDataParallel` and `lib.fit`, on CPU (gloo) or GPUs (nccl).

    python -m torch.distributed.run --nproc-per-node=2 -m lib.dist_scripts.ddp --model=cnn --out=ddp.json

Each rank trains on its shard of every batch (`lib.Batches(..., rank=, world_size=)`); DDP averages the
gradients over the ranks during `backward()`, so every rank takes the same optimiser step.
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import lib
from lib.distributed import exit_now, process_group, report


def make_model(name: str) -> nn.Module:
    """"mlp": 784-256-10 without dropout (so one process and many compute the same thing);
    "cnn": chapter 03's digit CNN (conv5-BN-ReLU-pool, conv3-BN-ReLU-pool, 1568-128-10 with dropout 0.3)."""
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    if name == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, 10))
    raise ValueError(f"unknown model {name!r}: use 'mlp' or 'cnn'")


def device_and_backend() -> tuple[torch.device, str]:
    """One GPU per rank with nccl where there are GPUs, else the CPU with gloo."""
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank), "nccl"
    return torch.device("cpu"), "gloo"


def gradient_difference(model: nn.Module, ddp: DistributedDataParallel, x: torch.Tensor, y: torch.Tensor,
                        rank: int, world: int) -> float:
    """Largest |DDP's averaged gradient - the one-process gradient of the whole batch (x, y)|, over all ranks."""
    single = copy.deepcopy(model)  # same weights, no DDP: the single-process reference
    F.cross_entropy(single(x), y).backward()
    F.cross_entropy(ddp(x[rank::world]), y[rank::world]).backward()  # this rank's shard, as Batches cuts it
    pairs = zip(single.parameters(), ddp.module.parameters(), strict=True)
    worst = max((a.grad - b.grad).abs().max() for a, b in pairs)
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    ddp.zero_grad(set_to_none=True)
    return worst.item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch: each rank gets its share")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--train-size", type=int, default=3500, help="training digits used (of 3,500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", default="", help="rank 0 saves the trained weights here")
    parser.add_argument("--out", required=True, help="JSON file for rank 0's results")
    args = parser.parse_args()
    device, backend = device_and_backend()
    with process_group(backend) as (rank, world):
        if args.batch_size % world:
            raise ValueError(f"--batch-size {args.batch_size} must be a multiple of the {world} processes")
        split = lib.data.offline_mnist().to(device)
        x, y = split.train_x[: args.train_size], split.train_y[: args.train_size]
        torch.manual_seed(args.seed)
        model = make_model(args.model).to(device)
        ddp = DistributedDataParallel(model)  # broadcasts rank 0's weights, then averages gradients in backward
        grad_diff = gradient_difference(model, ddp, x[: args.batch_size], y[: args.batch_size], rank, world)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=0.9)
        batches = lib.Batches(x, y, batch_size=args.batch_size // world, seed=args.seed, rank=rank, world_size=world)
        dist.barrier()
        started, cpu_started = time.perf_counter(), time.process_time()
        history = lib.fit(lib.supervised_step(ddp, optimizer), batches, args.epochs, live=False, progress=False)
        cpu_share = torch.tensor((time.process_time() - cpu_started) / (time.perf_counter() - started))
        dist.barrier()
        seconds = time.perf_counter() - started
        dist.all_reduce(cpu_share)  # the mean over ranks of the share of the time each process ran on a core
        if args.weights and rank == 0:
            torch.save(model.state_dict(), args.weights)
        report(args.out, world_size=world, backend=backend, model=args.model, max_grad_diff=grad_diff,
               train_seconds=seconds, cpu_share=cpu_share.item() / world, steps=len(batches) * args.epochs,
               train_loss=history.records[-1]["loss"],
               val_accuracy=lib.accuracy(model.eval(), split.val_x, split.val_y),
               parameters=sum(p.numel() for p in model.parameters()))


if __name__ == "__main__":
    main()
    exit_now()
