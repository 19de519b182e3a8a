"""Sharded batches, the hand-written ring all-reduce and DDP training under torchrun (gloo, CPU processes)."""

import ast
import subprocess
from pathlib import Path

import pytest
import torch

import lib
from lib import distributed
from lib.data import Batches
from lib.dist_scripts.ddp import make_model


def _epoch(batches: Batches) -> list[torch.Tensor]:
    return [x for (x,) in batches]


@pytest.mark.parametrize("n, world, batch_size", [(20, 2, 3), (23, 3, 4), (16, 4, 4)])
def test_sharded_batches_are_disjoint_cover_the_epoch_and_share_the_permutation(n, world, batch_size):
    data = torch.arange(n)
    shards = [_epoch(Batches(data, batch_size=batch_size, seed=7, rank=r, world_size=world)) for r in range(world)]
    assert len({len(s) for s in shards}) == 1, "every rank must get the same number of batches (DDP needs it)"
    seen = torch.cat([torch.cat(s) for s in shards])
    assert len(seen) == len(set(seen.tolist())) == n - n % world, "ranks overlap or drop more than n % world"
    # the same permutation on every rank: batch i of all ranks together is batch i of one process
    single = _epoch(Batches(data[: n], batch_size=batch_size * world, seed=7))
    for i, together in enumerate(zip(*shards, strict=True)):
        joint = torch.stack(list(together), dim=1).flatten()  # rank r holds positions r, r + world, ...
        assert torch.equal(joint, single[i][: len(joint)])


def test_one_rank_batches_are_unchanged():
    data = torch.arange(10)
    assert [b.tolist() for b in _epoch(Batches(data, batch_size=4, seed=1))] == [
        b.tolist() for b in _epoch(Batches(data, batch_size=4, seed=1, rank=0, world_size=1))]


def test_sharded_batches_reject_a_rank_outside_the_world():
    with pytest.raises(ValueError, match="rank 2 of 2"):
        Batches(torch.arange(4), batch_size=2, rank=2, world_size=2)


@pytest.mark.parametrize("nproc", [2, 3])
def test_ring_all_reduce_equals_the_library_and_sends_2_n_minus_1_over_n(nproc):
    result = distributed.launch("lib.dist_scripts.ring", nproc, "--size=3000", timeout=120)
    assert result["world_size"] == nproc and result["max_diff"] <= 1e-5
    assert result["elements_sent"] == 2 * (nproc - 1) * 3000 // nproc


def test_two_process_fit_equals_one_process_fit(tmp_path):
    weights = tmp_path / "ddp.pt"
    result = distributed.launch("lib.dist_scripts.ddp", 2, "--epochs=1", "--train-size=512", "--batch-size=64",
                                f"--weights={weights}", timeout=180)
    assert result["max_grad_diff"] <= 1e-6
    split = lib.data.offline_mnist()
    x, y = split.train_x[:512], split.train_y[:512]
    torch.manual_seed(0)
    model = make_model("mlp")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    lib.fit(lib.supervised_step(model, optimizer), Batches(x, y, batch_size=64, seed=0), 1, live=False,
            progress=False)
    trained = torch.load(weights, weights_only=True)
    for name, value in model.state_dict().items():
        lib.close(trained[name], value, name, atol=1e-5, quiet=True)


def test_a_failing_worker_raises_one_error_that_names_it():
    with pytest.raises(distributed.WorkerError, match="rank 1 failed on purpose"):
        distributed.launch("lib.dist_scripts.ring", 2, "--fail-rank=1", timeout=120)


@pytest.mark.parametrize("script", sorted((Path(distributed.__file__).parent / "dist_scripts").glob("[!_]*.py")),
                         ids=lambda path: path.stem)
def test_every_worker_script_leaves_through_exit_now(script):
    """Python's shutdown can abort a finished gloo worker, so each script's main block must end with exit_now()."""
    main_blocks = [node for node in ast.parse(script.read_text()).body if isinstance(node, ast.If)
                   and ast.unparse(node.test) == "__name__ == '__main__'"]
    assert len(main_blocks) == 1, f"{script.name} needs one `if __name__ == \"__main__\":` block"
    assert ast.unparse(main_blocks[0].body[-1]) == "exit_now()", f"{script.name} must end with exit_now()"


def test_a_worker_killed_by_a_signal_is_reported_with_where_it_died():
    with pytest.raises(distributed.WorkerError) as error:
        distributed.launch("tests.abort_worker", 2, timeout=120)
    message = str(error.value)
    assert "exit code 1" in message and "SIGABRT" in message, message
    assert "Fatal Python error: Aborted" in message and "abort_worker.py" in message, message  # the fault handler


def test_a_launch_past_its_timeout_is_killed_with_its_workers():
    with pytest.raises(distributed.WorkerError, match="longer than 1 s"):
        distributed.launch("lib.dist_scripts.ring", 2, "--size=100000000", timeout=1)
    leftover = subprocess.run(["pgrep", "-f", "lib.dist_scripts.ring --size=100000000"], capture_output=True)
    assert leftover.stdout == b"", "a worker survived the timeout"


def test_launch_rejects_no_processes():
    with pytest.raises(ValueError, match="at least 1"):
        distributed.launch_command("lib.dist_scripts.ring", 0)
