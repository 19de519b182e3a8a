"""Scripts that `torchrun` launches, one process per rank (chapter 11). Run from the course root, e.g.

    python -m torch.distributed.run --nproc-per-node=2 -m lib.dist_scripts.ring --out=ring.json

or from a notebook with `lib.distributed.launch("lib.dist_scripts.ring", 2)`.
"""
