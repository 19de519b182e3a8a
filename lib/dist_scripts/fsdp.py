"""Sharded data parallel (FSDP2, `fully_shard`) next to DDP: memory per rank and the same training result.

    python -m torch.distributed.run --nproc-per-node=2 -m lib.dist_scripts.fsdp --out=fsdp.json

FSDP keeps only 1/world of every parameter, gradient and Adam state on each rank (ZeRO stage 3). Before a
layer runs it all-gathers the layer's full weights, and after backward it reduce-scatters the gradients, so each
rank updates only its own shard.
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

import lib
from lib.dist_scripts.ddp import make_model
from lib.distributed import exit_now, process_group, report


def local_elements(tensors) -> int:
    """Elements this rank stores: a sharded DTensor's local shard, or the whole plain tensor."""
    return sum((t.to_local() if hasattr(t, "to_local") else t).numel() for t in tensors)


def adam_state(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Adam's m and s for every parameter (not the step counters)."""
    return [v for state in optimizer.state.values() for k, v in state.items() if k in ("exp_avg", "exp_avg_sq")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch: each rank gets its share")
    parser.add_argument("--out", required=True, help="JSON file for rank 0's results")
    args = parser.parse_args()
    with process_group() as (rank, world):
        split = lib.data.offline_mnist()
        torch.manual_seed(0)
        sharded = make_model("mlp")
        ddp = DistributedDataParallel(copy.deepcopy(sharded))  # the same starting weights
        for layer in sharded:
            if isinstance(layer, nn.Linear):
                fully_shard(layer)  # each Linear is one unit: gathered just before it runs, freed after
        fully_shard(sharded)
        optimizers = {"fsdp": torch.optim.Adam(sharded.parameters(), lr=1e-3),
                      "ddp": torch.optim.Adam(ddp.parameters(), lr=1e-3)}
        batches = lib.Batches(split.train_x, split.train_y, batch_size=args.batch_size // world, rank=rank,
                              world_size=world)
        for _, (x, y) in zip(range(args.steps), batches, strict=False):
            for name, model in (("fsdp", sharded), ("ddp", ddp)):
                optimizers[name].zero_grad()
                F.cross_entropy(model(x), y).backward()
                optimizers[name].step()
        total = sum(p.numel() for p in sharded.parameters())
        full = {name: tensor.full_tensor() for name, tensor in sharded.state_dict().items()}  # a collective
        weight_diff = max((full[name] - tensor).abs().max().item() for name, tensor in ddp.module.state_dict().items())
        shares = torch.tensor([local_elements(sharded.parameters()) / total,
                               local_elements(adam_state(optimizers["fsdp"])) / (2 * total),
                               local_elements(adam_state(optimizers["ddp"])) / (2 * total)])
        every_rank = [torch.zeros(3) for _ in range(world)]
        dist.all_gather(every_rank, shares)
        report(args.out, world_size=world, steps=args.steps, parameters=total,
               param_share_per_rank=[s[0].item() for s in every_rank],
               adam_share_per_rank=[s[1].item() for s in every_rank],
               ddp_adam_share_per_rank=[s[2].item() for s in every_rank], max_weight_diff_vs_ddp=weight_diff,
               parameter_type=type(next(sharded.parameters())).__name__)


if __name__ == "__main__":
    main()
    exit_now()
