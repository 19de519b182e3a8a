"""All-reduce by hand (a ring of send/recv) checked against `dist.all_reduce`, with its traffic counted.

    python -m torch.distributed.run --nproc-per-node=2 -m lib.dist_scripts.ring --out=ring.json
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.distributed as dist

from lib.distributed import exit_now, process_group, report, ring_all_reduce


def timed(fn, repeats: int = 5) -> float:
    """Median seconds of `fn()` over `repeats` calls, all ranks starting together."""
    times = []
    for _ in range(repeats):
        dist.barrier()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1_000_000, help="elements in the tensor each rank holds")
    parser.add_argument("--fail-rank", type=int, default=-1, help="this rank raises an error (to show failures)")
    parser.add_argument("--out", required=True, help="JSON file for rank 0's results")
    args = parser.parse_args()
    with process_group() as (rank, world):
        if rank == args.fail_rank:
            raise RuntimeError(f"rank {rank} failed on purpose (--fail-rank={args.fail_rank})")
        local = torch.randn(args.size, generator=torch.Generator().manual_seed(rank))  # each rank's own numbers
        by_hand, by_library = local.clone(), local.clone()
        sent = ring_all_reduce(by_hand)
        dist.all_reduce(by_library)  # default op: SUM
        worst = torch.tensor([(by_hand - by_library).abs().max().item(), by_library.abs().max().item()])
        dist.all_reduce(worst, op=dist.ReduceOp.MAX)  # the worst rank
        report(args.out, world_size=world, size=args.size, max_diff=worst[0].item(), max_abs_sum=worst[1].item(),
               elements_sent=sent,
               expected_sent=2 * (world - 1) / world * args.size,
               seconds_by_hand=timed(lambda: ring_all_reduce(local.clone())),
               seconds_library=timed(lambda: dist.all_reduce(local.clone())))


if __name__ == "__main__":
    main()
    exit_now()
