"""Training throughput: DataLoader loop vs hand-written tensor loop vs `lib.fit`, in one process.

The same LeNet-5-sized CNN is trained for the same number of steps (batch 64) on the offline MNIST digits by
(a) an idiomatic `DataLoader(TensorDataset)` loop, (b) a hand-written loop over pre-loaded tensors,
(c) `lib.fit` with its progress bar and history on, the model set up by `lib.prepare_model` (channels_last
convolutions), and (d) the same as (c) without channels_last, to separate the two effects. Runs alternate
in a rotating order and repeat; the table shows the median images/second of each, the ratios c/a and c/b,
and the achieved GFLOP/s against a matrix-multiply peak measured on the same machine in the same process.

    python benchmarks/train_speed.py [--repeats 7] [--epochs 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

import lib

BATCH = 64


def lenet() -> nn.Module:
    """LeNet-5 sized CNN for 28×28 digits (61,706 parameters)."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )


def fresh(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = lenet()
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def run_dataloader(x: torch.Tensor, y: torch.Tensor, epochs: int) -> int:
    """(a) The idiomatic PyTorch loop: DataLoader over a TensorDataset."""
    model, optimizer = fresh()
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)
    images = 0
    for _ in range(epochs):
        running = 0.0
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            running += loss.item()
            images += len(xb)
    return images


def run_tensor_loop(x: torch.Tensor, y: torch.Tensor, epochs: int) -> int:
    """(b) A hand-written loop: random permutation, then slices of the pre-loaded tensors."""
    model, optimizer = fresh()
    images = 0
    for _ in range(epochs):
        order = torch.randperm(len(x))
        running = 0.0
        for start in range(0, len(x), BATCH):
            idx = order[start : start + BATCH]
            xb, yb = x[idx], y[idx]
            optimizer.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            running += loss.item()
            images += len(xb)
    return images


def run_lib_fit(x: torch.Tensor, y: torch.Tensor, epochs: int, channels_last: bool = True) -> int:
    """(c) The course's loop as chapters use it: lib.prepare_model, lib.Batches, lib.fit with
    lib.supervised_step, progress bar and history on."""
    model, optimizer = fresh()
    if channels_last:
        model = lib.prepare_model(model, torch.device("cpu"))
    history = lib.fit(lib.supervised_step(model, optimizer), lib.Batches(x, y, batch_size=BATCH), epochs,
                      live=False, progress=True)
    assert len(history) == epochs
    return epochs * len(x)


def fetch_microseconds(batches: Iterable, epochs: int = 5) -> float:
    """Time to produce one batch with no training at all: the data-loading cost on its own."""
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for _ in batches:
            count += 1
    return (time.perf_counter() - start) / count * 1e6


def training_flops_per_image() -> float:
    """Forward + backward FLOPs of one training image, counted by PyTorch."""
    model, _ = fresh()
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(torch.zeros(BATCH, 1, 28, 28)), torch.zeros(BATCH, dtype=torch.long)).backward()
    return counter.get_total_flops() / BATCH


def matmul_peak_gflops(size: int = 1024, repeats: int = 20) -> float:
    """Best-of-N float32 matrix-multiply GFLOP/s on this machine: the practical CPU peak."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    lib.runtime.set_threads(args.threads)
    split = lib.data.offline_mnist()
    x, y = split.train_x, split.train_y
    runs = {"a DataLoader(TensorDataset)": run_dataloader, "b hand-written tensor loop": run_tensor_loop,
            "c lib.fit": run_lib_fit,
            "d lib.fit, NCHW layout": lambda x, y, epochs: run_lib_fit(x, y, epochs, channels_last=False)}
    names = list(runs)
    run_dataloader(x, y, 1)  # warm-up: first-call allocations and kernel selection
    speeds: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        order = names[repeat % len(names):] + names[: repeat % len(names)]  # rotate who goes first
        for name in order:
            start = time.perf_counter()
            images = runs[name](x, y, args.epochs)
            speeds[name].append(images / (time.perf_counter() - start))
    fetch_loader = fetch_microseconds(DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True))
    fetch_batches = fetch_microseconds(lib.Batches(x, y, batch_size=BATCH))
    flops = training_flops_per_image()
    peak = matmul_peak_gflops()
    median = {name: statistics.median(v) for name, v in speeds.items()}
    print(f"\n{lib.banner()}")
    print(f"LeNet-5 CNN, batch {BATCH}, {args.epochs} epochs x {len(x)} offline MNIST digits per run, "
          f"{args.repeats} alternating repeats; {flops / 1e6:.2f} MFLOP per training image; "
          f"float32 matmul peak {peak:.1f} GFLOP/s")
    print(f"{'loop':<30}{'images/s (median)':>18}{'min':>9}{'max':>9}{'GFLOP/s':>10}{'% of peak':>11}")
    for name in names:
        achieved = median[name] * flops / 1e9
        print(f"{name:<30}{median[name]:>18.0f}{min(speeds[name]):>9.0f}{max(speeds[name]):>9.0f}"
              f"{achieved:>10.2f}{100 * achieved / peak:>10.1f}%")
    c_over_a = median[names[2]] / median[names[0]]
    c_over_b = median[names[2]] / median[names[1]]
    print(f"c/a = {c_over_a:.2f} (lib.fit vs a DataLoader over a TensorDataset)")
    print(f"c/b = {c_over_b:.2f} (target ≥ 0.95: the abstraction costs nothing)")
    print(f"d/b = {median[names[3]] / median[names[1]]:.2f} (lib.fit alone, same memory layout as b); "
          f"c/d = {median[names[2]] / median[names[3]]:.2f} (gain from prepare_model's channels_last)")
    step_b = BATCH / median[names[1]] * 1e6
    print(f"Per batch of {BATCH}: fetching it costs {fetch_loader:.0f} µs with the DataLoader, {fetch_batches:.0f} µs "
          f"with lib.Batches; one step of loop b takes {step_b:.0f} µs. Data loading alone can lift c/a to at most "
          f"{(step_b - fetch_batches + fetch_loader) / step_b:.2f}; the rest of c/a is the layout (c/d).")


if __name__ == "__main__":
    main()
