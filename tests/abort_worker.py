"""A worker for tests/test_distributed.py: joins the group, leaves it cleanly, then rank 1 dies of SIGABRT."""

import os

from lib.distributed import process_group

if __name__ == "__main__":
    with process_group() as (rank, world):
        pass
    if rank == 1:
        os.abort()
