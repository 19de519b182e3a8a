"""Small helpers for multi-process training with `torch.distributed` on one machine.

Worker side (a script started by `torchrun`, one process per rank):
* `process_group()`: join the group, and on the way out wait for every rank (barrier) and leave it cleanly.
* `ring_all_reduce(tensor)`: the sum over ranks, written as a ring of send/recv (reduce-scatter, all-gather).
* `report(path, **values)`: rank 0 writes the run's results as JSON, for the notebook to read.
* `exit_now()`: the script's last call: leave without Python's shutdown, which can race gloo's threads.

Launcher side (a notebook or a test):
* `launch(module, nproc, *args)`: run `python -m torch.distributed.run` on a free port with one thread per worker,
  return rank 0's JSON; a failing worker raises one `WorkerError` that shows its error output.

A notebook cannot hand functions defined in its cells to child processes (they are not importable), so the
distributed code lives in importable scripts (`lib/dist_scripts/`) that the notebook launches and shows.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import torch
import torch.distributed as dist

REPO = Path(__file__).resolve().parents[1]


class WorkerError(RuntimeError):
    """A distributed launch failed: the message holds the workers' error output."""


# ---------------------------------------------------------------- worker side


@contextlib.contextmanager
def process_group(backend: str = "gloo") -> Iterator[tuple[int, int]]:
    """Join the process group that `torchrun` describes in the environment; yield (rank, world size).

    On success every rank waits at a barrier before the group is destroyed, so no rank tears down its
    connections while another still talks to it (torchrun + gloo can abort at exit without this). On an
    error the group is destroyed without the barrier (the other ranks would wait forever) and the error
    propagates, so torchrun reports it and stops the other workers.
    """
    dist.init_process_group(backend)
    failed = False
    try:
        yield dist.get_rank(), dist.get_world_size()
    except BaseException:
        failed = True
        raise
    finally:
        if not failed:
            dist.barrier()
        dist.destroy_process_group()


def ring_all_reduce(tensor: torch.Tensor) -> int:
    """Sum `tensor` over all ranks in place with a ring; return the number of elements this rank sent.

    The tensor is cut into `n` chunks. Reduce-scatter: in step s, rank r sends chunk (r - s) mod n to its right
    neighbour and adds the chunk (r - s - 1) mod n it receives from its left one; after n - 1 steps rank r holds
    the full sum of chunk (r + 1) mod n. All-gather: n - 1 more steps pass the finished chunks around the ring.
    Each rank sends 2 (n - 1) chunks of size/n elements: 2 (n - 1) / n * size, whatever n is.
    """
    rank, n = dist.get_rank(), dist.get_world_size()
    if n == 1:
        return 0
    chunks = list(tensor.view(-1).tensor_split(n))  # views: writing into them writes into `tensor`
    right, left = (rank + 1) % n, (rank - 1) % n
    sent = 0
    for phase in ("reduce-scatter", "all-gather"):
        for s in range(n - 1):
            send_index = (rank - s + (1 if phase == "all-gather" else 0)) % n
            receive_index = (send_index - 1) % n
            incoming = torch.empty_like(chunks[receive_index])
            requests = [dist.isend(chunks[send_index].contiguous(), right), dist.irecv(incoming, left)]
            for request in requests:
                request.wait()
            sent += chunks[send_index].numel()
            if phase == "reduce-scatter":
                chunks[receive_index] += incoming
            else:
                chunks[receive_index].copy_(incoming)
    return sent


def exit_now() -> NoReturn:
    """End this worker at once with exit code 0, skipping Python's shutdown. Call it last, after the
    `process_group()` block has closed and every result is written.

    At shutdown Python frees what is left (models, optimisers, the group itself) in no fixed order while gloo's
    C++ threads may still hold tensors; that race can abort (SIGABRT) a worker whose work is finished
    (pytorch/pytorch#179291). It once aborted chapter 11's FSDP launch in the course's own tests.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def report(path: str | Path, **values: object) -> None:
    """Rank 0 writes `values` as JSON to `path` (atomically: a temporary file, then a rename)."""
    if dist.is_initialized() and dist.get_rank() != 0:
        return
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(values, indent=2) + "\n")
    temporary.replace(path)


# ---------------------------------------------------------------- launcher side


def free_port() -> int:
    """A TCP port that is free now: bind port 0 and let the operating system choose."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(module: str, nproc: int, *args: str) -> list[str]:
    """The torchrun command line that starts `python -m module args` in `nproc` processes on a free port."""
    if nproc < 1:
        raise ValueError(f"nproc must be at least 1, got {nproc}")
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--nnodes=1",
            "--master-addr=127.0.0.1", f"--master-port={free_port()}", "-m", module, *args]


def launch(module: str, nproc: int, *args: str, timeout: float = 300.0) -> dict:
    """Run `module` (e.g. "lib.dist_scripts.ring") in `nproc` processes under torchrun and return the JSON
    that its rank 0 wrote to the `--out` file this function passes.

    Each worker gets one CPU thread and Python's fault handler (a worker killed by a signal prints where it was).
    If a worker fails, or the run takes longer than `timeout` seconds (then the whole process group is killed, so
    nothing keeps running), this raises `WorkerError` with the error output.
    """
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        command = launch_command(module, nproc, *args, f"--out={out}")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1",
               "PYTHONFAULTHANDLER": "1"}
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_tree(process.pid)
            stdout, stderr = process.communicate()
            raise WorkerError(f"{module} on {nproc} processes took longer than {timeout:.0f} s and was stopped. "
                              f"Its last output:\n{_tail(stdout + stderr)}") from None
        if process.returncode != 0 or not out.exists():
            raise WorkerError(f"{module} on {nproc} processes failed (exit code {process.returncode}). The workers' "
                              f"error output:\n{_worker_errors(stderr)}")
        return json.loads(out.read_text())


def _kill_tree(pid: int) -> None:
    """Kill a process and all its descendants (torchrun starts each worker in a session of its own, so killing
    torchrun's process group would leave the workers running). psutil comes with Jupyter (ipykernel needs it)."""
    import psutil

    root = psutil.Process(pid)
    family = [*root.children(recursive=True), root]
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(family, timeout=10)


def _worker_errors(stderr: str) -> str:
    """Each rank's last error line first, then the workers' tracebacks (lines torchrun prefixes "[rankN]:").

    A rank whose peer died usually fails too ("Connection reset by peer"): look for the rank with a real error.
    """
    worker_lines = [line for line in stderr.splitlines() if re.match(r"\[rank\d+\]:", line)]
    if not worker_lines:
        return _signal_report(stderr)
    last: dict[str, str] = {}
    for line in worker_lines:
        rank, _, text = line.partition(":")
        if re.match(r"\s*[\w.]+(Error|Exception|Interrupt)\b", text):
            last[rank] = text.strip()
    summary = "\n".join(f"{rank} {text}" for rank, text in sorted(last.items()))
    return f"{summary}\n\nTracebacks:\n{_tail(chr(10).join(worker_lines))}"


def _signal_report(stderr: str) -> str:
    """For a worker killed by a signal (no "[rankN]:" traceback): what the workers printed before torchrun's own
    report (with the fault handler, where the dead worker was), then torchrun's "Root Cause" summary."""
    before, _, _ = stderr.partition("failed (exitcode")
    printed = [line for line in before.splitlines() if not re.match(r"[IWE]\d{4} ", line)]  # no launcher logs
    _, found, root_cause = stderr.partition("Root Cause")
    return f"{_tail(chr(10).join(printed), 30)}\n\n{found}{root_cause}".strip()


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
