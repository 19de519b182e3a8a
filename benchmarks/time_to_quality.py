"""Time to quality: the course's recipes against the recipes a learner would otherwise copy, in one process.

Three tasks on the standard-profile data (CPU): digit classification (validation accuracy, 3,500 / 500 offline
MNIST digits), a VAE (validation -ELBO in nats per image on the fixed binarised validation digits) and a
character-level language model (validation nats per character on Julius Caesar, the chapter-08 text split). Each
task trains the course's recipe (the chapter's own model class, read from its source, with the optimiser, schedule
and settings of its standard profile, through `lib.fit`) and the peer recipes (re-implemented from their published
hyperparameters) side by side: the runs of a task alternate segment by segment, each run is evaluated on the
validation split at `--evals` fixed points of its budget (evenly spaced in log-time, from 0.5% to 100%), and only
training counts on its clock (evaluation time is recorded separately). All recipes use the same on-device batches
(`lib.Batches`) and loop (`lib.fit`, which costs nothing: see train_speed.py), so the times compare recipes, not
data loaders.

Target of a task = the best final validation quality that any peer recipe reaches within its published budget.
Time to target = a run's training seconds at its first evaluation that meets the target. Speed-up = (fastest
peer's time to target) / (course's time to target).

    python benchmarks/time_to_quality.py [--quick] [--threads N] [--evals 36] [--tasks digits,vae,gpt]
"""

from __future__ import annotations

import argparse
import ast
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import lib
from lib.text import CharVocab, load_shakespeare

ROOT = Path(__file__).resolve().parents[1]
DEVICE = torch.device("cpu")  # the standard profile's machine: a laptop CPU
Step = Callable[..., Mapping[str, torch.Tensor]]
Batch = tuple[torch.Tensor, ...]


# ---------------------------------------------------------------- runs, segments and the alternating schedule


@dataclass
class Run:
    """One recipe's training run: its model, `lib.fit` step, endless batch stream, budget and measurements."""

    name: str
    model: nn.Module
    step: Step
    batches: Iterator[Batch]
    steps: int  # the recipe's budget in optimiser steps
    evaluate: Callable[[], float]
    tokens: bool = False  # count tokens (N x T) per batch rather than images (N)
    course: bool = False
    seconds: float = 0.0  # training time so far
    eval_seconds: float = 0.0
    items: int = 0
    done: int = 0
    curve: list[tuple[float, float]] = field(default_factory=list)  # (training seconds, validation quality)
    rng: torch.Tensor = field(default_factory=torch.get_rng_state)  # this run's own global-RNG stream


@dataclass
class Task:
    """A task: its metric, the direction that is better, and the runs to compare (the course's first)."""

    name: str
    metric: str
    higher_is_better: bool
    runs: list[Run]


class Segment:
    """The next `count` batches of an endless stream, as one `lib.fit` epoch; counts the items it hands out."""

    def __init__(self, stream: Iterator[Batch], count: int, tokens: bool) -> None:
        self.stream, self.count, self.tokens, self.items = stream, count, tokens, 0

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Batch]:
        for _ in range(self.count):
            batch = next(self.stream)
            self.items += batch[0].numel() if self.tokens else len(batch[0])
            yield batch


def endless(batches: lib.Batches) -> Iterator[Batch]:
    """Epoch after epoch of `batches` (each epoch reshuffled), as one stream."""
    while True:
        yield from batches


def train_segment(run: Run, count: int) -> None:
    """Train `run` for `count` more steps through `lib.fit`, timing only the training."""
    torch.set_rng_state(run.rng)
    segment = Segment(run.batches, count, run.tokens)
    lib.synchronize(DEVICE)
    start = time.perf_counter()
    lib.fit(run.step, segment, 1, live=False, progress=False)
    lib.synchronize(DEVICE)
    run.seconds += time.perf_counter() - start
    run.rng, run.items, run.done = torch.get_rng_state(), run.items + segment.items, run.done + count


def evaluate_run(run: Run) -> None:
    """Validation quality now, with a fixed evaluation seed; its time goes to `eval_seconds`, not the clock."""
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        quality = run.evaluate()
    run.eval_seconds += time.perf_counter() - start
    run.curve.append((run.seconds, quality))


def eval_fractions(evals: int, first: float = 0.005) -> list[float]:
    """Where each run is evaluated, as fractions of its budget: `evals` points spaced evenly in log-time from
    `first` to the end, so a target reached early is timed as precisely as one reached late (36 points: each
    time to target is at most 16% late)."""
    return [first ** ((evals - 1 - k) / (evals - 1)) for k in range(evals)]


def race(task: Task, fractions: list[float]) -> None:
    """Train the task's runs in alternation: each round, every run trains to its next evaluation point and is
    evaluated there (the order rotates from round to round)."""
    for i, fraction in enumerate(fractions, start=1):
        order = task.runs[i % len(task.runs):] + task.runs[: i % len(task.runs)]
        for run in order:
            steps = round(run.steps * fraction) - run.done
            if steps > 0:
                train_segment(run, steps)
                evaluate_run(run)
        print(f"  {task.name} {i}/{len(fractions)}: " + ", ".join(
            f"{r.name} {r.curve[-1][1]:.4f} ({r.seconds:.1f} s)" for r in task.runs if r.curve), flush=True)


# ---------------------------------------------------------------- the chapters' own models, for the parameter check


def chapter_definitions(chapter: str, names: tuple[str, ...]) -> dict[str, object]:
    """Execute the named top-level definitions (classes, functions, assignments) of a chapter's source."""
    tree = ast.parse((ROOT / "chapters" / f"{chapter}.py").read_text(encoding="utf-8"))
    wanted = [node for node in tree.body if _defined_name(node) in names]
    namespace: dict[str, object] = {"torch": torch, "nn": nn, "F": F, "math": math, "Callable": Callable}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), chapter, "exec"), namespace)
    missing = set(names) - set(namespace)
    if missing:
        raise LookupError(f"chapters/{chapter}.py no longer defines {sorted(missing)}: update this benchmark")
    return namespace


def _defined_name(node: ast.stmt) -> str | None:
    if isinstance(node, ast.ClassDef | ast.FunctionDef):
        return node.name
    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    return None


def standard_settings(chapter: str) -> dict[str, object]:
    """The chapter's `SETTINGS["standard"]`, read from its source."""
    return chapter_definitions(chapter, ("SETTINGS",))["SETTINGS"]["standard"]


def count(model: nn.Module) -> int:
    """Learnable parameters of a model."""
    return sum(p.numel() for p in model.parameters())


def chapter_model(chapter: str, names: tuple[str, ...]) -> type[nn.Module]:
    """The chapter's own model class (the last of `names`; the others are what it needs), so that the benchmark
    trains exactly the model the chapter trains."""
    return chapter_definitions(chapter, names)[names[-1]]


def check_settings(mine: Mapping[str, object], chapter: str) -> None:
    """Assert that the settings this benchmark uses are the chapter's standard-profile settings."""
    theirs = standard_settings(chapter)
    differ = {k: (v, theirs.get(k)) for k, v in mine.items() if theirs.get(k) != v}
    assert not differ, f"chapters/{chapter}.py standard settings changed (here, chapter): {differ}"


# ---------------------------------------------------------------- task 1: digits


CNN = dict(epochs=10, channels=(16, 32), batch_size=64)  # chapter 03, standard profile


def random_affine(x: torch.Tensor, generator: torch.Generator, degrees: float = 10.0, scale: float = 0.1,
                  shift_px: float = 2.0) -> torch.Tensor:
    """Chapter 03's augmentation: a random rotation (±10°), scaling (±10%) and shift (±2 px) per image."""
    u = torch.rand(len(x), 4, generator=generator) * 2 - 1
    angle, factor, shift = torch.deg2rad(u[:, 0] * degrees), 1 + u[:, 1] * scale, u[:, 2:] * shift_px
    theta = torch.zeros(len(x), 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle) / factor, -torch.sin(angle) / factor
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle) / factor, torch.cos(angle) / factor
    theta[:, :, 2] = -shift * 2 / x.shape[-1]
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def course_cnn(split: lib.ImageSplit) -> Run:
    """Chapter 03's recipe: AdamW, one-cycle to 3e-3, batch 64, 10 epochs, affine augmentation."""
    check_settings(CNN, "03_cnn")
    torch.manual_seed(0)
    model = lib.prepare_model(chapter_model("03_cnn", ("flatten_size", "DigitCNN"))(CNN["channels"]), DEVICE)
    batches = lib.Batches(split.train_x, split.train_y, batch_size=CNN["batch_size"], seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=CNN["epochs"] * len(batches))
    plain_step, augment_rng = lib.supervised_step(model, optimizer), torch.Generator().manual_seed(0)

    def step(x: torch.Tensor, y: torch.Tensor) -> dict:
        result = plain_step(random_affine(x, augment_rng), y)
        schedule.step()
        return result

    return Run("course 03 CNN", model, step, endless(batches), CNN["epochs"] * len(batches),
               lambda: lib.accuracy(model, split.val_x, split.val_y), course=True)


class ExamplesNet(nn.Module):
    """pytorch/examples MNIST: conv3 32, conv3 64, max-pool, dropout 0.25, 9216→128, dropout 0.5, 128→10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3, 1), nn.Conv2d(32, 64, 3, 1)
        self.dropout1, self.dropout2 = nn.Dropout(0.25), nn.Dropout(0.5)
        self.fc1, self.fc2 = nn.Linear(9216, 128), nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.1307) / 0.3081  # the example's Normalize((0.1307,), (0.3081,))
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = self.dropout2(F.relu(self.fc1(torch.flatten(self.dropout1(x), 1))))
        return F.log_softmax(self.fc2(x), dim=1)


def examples_mnist(split: lib.ImageSplit) -> Run:
    """pytorch/examples MNIST recipe: Adadelta lr 1.0, StepLR(1, γ 0.7) per epoch, batch 64, 14 epochs, NLL."""
    torch.manual_seed(1)
    model = ExamplesNet()
    batches = lib.Batches(split.train_x, split.train_y, batch_size=64, seed=1)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    plain_step, taken = lib.supervised_step(model, optimizer, F.nll_loss), [0]  # the net returns log-probabilities

    def step(x: torch.Tensor, y: torch.Tensor) -> dict:
        result = plain_step(x, y)
        taken[0] += 1
        if taken[0] % len(batches) == 0:  # the example steps its scheduler after each epoch
            scheduler.step()
        return result

    return Run("pytorch/examples mnist", model, step, endless(batches), 14 * len(batches),
               lambda: lib.accuracy(model, split.val_x, split.val_y))


def d2l_lenet(split: lib.ImageSplit) -> Run:
    """LeNet-5 as d2l teaches it: sigmoid, average pooling, Xavier init, SGD lr 0.9, batch 256, 10 epochs."""
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2, 2),
        nn.Conv2d(6, 16, 5), nn.Sigmoid(), nn.AvgPool2d(2, 2), nn.Flatten(),
        nn.Linear(400, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(), nn.Linear(84, 10),
    )
    for layer in model:
        if isinstance(layer, nn.Linear | nn.Conv2d):
            nn.init.xavier_uniform_(layer.weight)
    batches = lib.Batches(split.train_x, split.train_y, batch_size=256, seed=2)
    step = lib.supervised_step(model, torch.optim.SGD(model.parameters(), lr=0.9))
    return Run("d2l LeNet-5", model, step, endless(batches), 10 * len(batches),
               lambda: lib.accuracy(model, split.val_x, split.val_y))


def digits_task(split: lib.ImageSplit) -> Task:
    return Task("digits", "val accuracy", True, [course_cnn(split), examples_mnist(split), d2l_lenet(split)])


# ---------------------------------------------------------------- task 2: VAE


VAE_S = dict(epochs=10, batch_size=32, lr=4e-3, latent=16, channels=8, hidden=128)  # chapter 06, standard profile


class ExamplesVAE(nn.Module):
    """pytorch/examples VAE: 784–400–(20, 20) encoder, 20–400–784 decoder, ReLU; returns pixel logits."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(x.flatten(1)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.fc4(F.relu(self.fc3(z))).view_as(x), mu, logvar


def distortion_and_rate(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: -log p(x|z) for one reparameterised z (Bernoulli pixels) and KL(q(z|x) || N(0, I)), in nats."""
    logits, mu, logvar = model(x)
    distortion = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    return distortion, 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


@torch.no_grad()
def negative_elbo(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> float:
    """Mean -ELBO in nats per image on binary images `x` (one z sample per image), in eval mode."""
    model.eval()
    parts = [sum(distortion_and_rate(model, x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    return torch.cat(parts).mean().item()


def course_vae(split: lib.ImageSplit, val_x: torch.Tensor) -> Run:
    """Chapter 06's recipe: dynamic binarisation, Adam 4e-3 with cosine decay per step, batch 32, 10 epochs."""
    check_settings(VAE_S, "06_vae")
    torch.manual_seed(0)
    model = chapter_model("06_vae", ("VAE",))(VAE_S["latent"], VAE_S["channels"], VAE_S["hidden"])
    with torch.no_grad():
        model.decoder[-1].bias.fill_(torch.logit(split.train_x.mean()).item())
    model = lib.prepare_model(model, DEVICE)
    batches = lib.Batches(split.train_x, split.train_y, batch_size=VAE_S["batch_size"], seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=VAE_S["lr"])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=VAE_S["epochs"] * len(batches))

    def step(x: torch.Tensor, _labels: torch.Tensor) -> dict:
        model.train()
        distortion, rate = distortion_and_rate(model, torch.bernoulli(x))
        loss = (distortion + rate).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        return {"loss": loss.detach()}

    return Run("course 06 VAE", model, step, endless(batches), VAE_S["epochs"] * len(batches),
               lambda: negative_elbo(model, val_x), course=True)


def examples_vae(split: lib.ImageSplit, val_x: torch.Tensor) -> Run:
    """pytorch/examples VAE recipe: Adam 1e-3, batch 128, 10 epochs, loss = BCE against the grey-level digits,
    summed over the batch, + KL. (Trained on dynamically binarised digits instead, it ends about 1 nat worse.)"""
    torch.manual_seed(1)
    model = ExamplesVAE()
    batches = lib.Batches(split.train_x, split.train_y, batch_size=128, seed=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(x: torch.Tensor, _labels: torch.Tensor) -> dict:
        model.train()
        optimizer.zero_grad()
        distortion, rate = distortion_and_rate(model, x)
        loss = (distortion + rate).sum()
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach() / len(x)}

    return Run("pytorch/examples vae", model, step, endless(batches), 10 * len(batches),
               lambda: negative_elbo(model, val_x))


def vae_task(split: lib.ImageSplit) -> Task:
    val_x = torch.bernoulli(split.val_x, generator=torch.Generator().manual_seed(1))  # chapter 06's fixed binarisation
    return Task("vae", "val -ELBO (nats)", False, [course_vae(split, val_x), examples_vae(split, val_x)])


# ---------------------------------------------------------------- task 3: character-level GPT


GPT_S = dict(context=128, width=128, layers=4, heads=4, dropout=0.0, batch_size=32, lr=2e-3, steps=1500)  # chapter 08
NANO = dict(context=64, width=128, layers=4, heads=4, batch_size=12, lr=1e-3, min_lr=1e-4, warmup=100, iters=2000)


class Attention(nn.Module):
    """Multi-head causal self-attention through `F.scaled_dot_product_attention`."""

    def __init__(self, width: int, heads: int, bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.out = nn.Linear(width, 3 * width, bias=bias), nn.Linear(width, width, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, T, d = x.shape
        q, k, v = (t.view(N, T, self.heads, d // self.heads).transpose(1, 2) for t in self.qkv(x).split(d, dim=2))
        return self.out(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(N, T, d))


class Block(nn.Module):
    """Pre-norm block: x + attention(LN(x)), then x + MLP(LN(x)) with a d → 4d → d GELU MLP."""

    def __init__(self, width: int, heads: int, bias: bool) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width, bias=bias), nn.LayerNorm(width, bias=bias)
        self.attn = Attention(width, heads, bias)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width, bias=bias), nn.GELU(),
                                 nn.Linear(4 * width, width, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """GPT-2-style decoder (chapter 08's, and nanoGPT's with `bias=False`): learned positions, tied output layer,
    N(0, 0.02) init with the residual projections scaled by 1/√(2L), no dropout (both recipes use 0)."""

    def __init__(self, vocab: int, context: int, width: int, layers: int, heads: int, bias: bool = True) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads, bias) for _ in range(layers))
        self.ln = nn.LayerNorm(width, bias=bias)
        self.apply(self._init)
        for block in self.blocks:
            for layer in (block.attn.out, block.mlp[2]):
                nn.init.normal_(layer.weight, std=0.02 / math.sqrt(2 * layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.ln(x) @ self.tok.weight.T


def random_windows(ids: torch.Tensor, context: int, batch_size: int, seed: int) -> Iterator[Batch]:
    """Endless batches of random (input, next-character target) windows of a token stream."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(0, len(ids) - context, (batch_size,), generator=generator)
        windows = ids[starts[:, None] + torch.arange(context + 1)]
        yield windows[:, :-1], windows[:, 1:]


@torch.no_grad()
def nats_per_char(model: nn.Module, ids: torch.Tensor, context: int, batch_size: int = 128) -> float:
    """Mean -ln p(x_t | up to `context` earlier characters) over every character after the first, each scored
    once; windows overlap by half, so every character after the first window has at least half a window of history."""
    model.eval()
    stride = context // 2
    starts = list(range(0, len(ids) - context, stride))
    if starts[-1] + context < len(ids) - 1:
        starts.append(len(ids) - 1 - context)
    begin = torch.tensor(starts)
    previous_end = torch.cat([torch.zeros(1, dtype=torch.long), begin[:-1] + context])  # last position scored so far
    total, scored = 0.0, 0
    for i in range(0, len(begin), batch_size):
        chunk = begin[i : i + batch_size]
        windows = ids[chunk[:, None] + torch.arange(context + 1)]
        losses = F.cross_entropy(model(windows[:, :-1]).flatten(0, 1), windows[:, 1:].flatten(), reduction="none")
        keep = (chunk[:, None] + 1 + torch.arange(context)) > previous_end[i : i + batch_size, None]
        total += losses.view(len(chunk), context)[keep].sum().item()
        scored += int(keep.sum())
    assert scored == len(ids) - 1, (scored, len(ids))
    return total / scored


def decay_groups(model: nn.Module) -> list[dict]:
    """Weight decay 0.1 on matrices and embeddings, none on biases and layer-norm gains (both recipes)."""
    return [{"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0}]


def course_gpt(train_ids: torch.Tensor, val_ids: torch.Tensor, vocab: int) -> Run:
    """Chapter 08's recipe: AdamW 2e-3 (β2 0.99), warm-up then cosine to a tenth, clip 1, batch 32 x 128,
    1,500 steps."""
    check_settings(GPT_S, "08_attention_transformer")
    torch.manual_seed(0)
    model = chapter_model("08_attention_transformer", ("CausalSelfAttention", "Block", "GPT"))(
        vocab, GPT_S["context"], GPT_S["width"], GPT_S["layers"], GPT_S["heads"], GPT_S["dropout"])
    optimizer = torch.optim.AdamW(decay_groups(model), lr=GPT_S["lr"], betas=(0.9, 0.99))
    steps, warmup = GPT_S["steps"], max(10, GPT_S["steps"] // 15)

    def factor(t: int) -> float:
        if t < warmup:
            return (t + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, (t - warmup) / max(1, steps - warmup))))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def step(x: torch.Tensor, y: torch.Tensor) -> dict:
        model.train()
        loss = F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        return {"loss": loss.detach()}

    return Run("course 08 GPT", model, step, random_windows(train_ids, GPT_S["context"], GPT_S["batch_size"], 0),
               steps, lambda: nats_per_char(model, val_ids, GPT_S["context"]), tokens=True, course=True)


def nano_lr(iteration: int) -> float:
    """nanoGPT's schedule: linear warm-up over 100 iterations, cosine from 1e-3 to 1e-4 by iteration 2,000."""
    if iteration < NANO["warmup"]:
        return NANO["lr"] * (iteration + 1) / (NANO["warmup"] + 1)
    ratio = min(1.0, (iteration - NANO["warmup"]) / (NANO["iters"] - NANO["warmup"]))
    return NANO["min_lr"] + 0.5 * (1 + math.cos(math.pi * ratio)) * (NANO["lr"] - NANO["min_lr"])


def nanogpt(train_ids: torch.Tensor, val_ids: torch.Tensor, vocab: int) -> Run:
    """nanoGPT's laptop recipe for Shakespeare characters: 4 layers, 4 heads, width 128, context 64, no biases,
    batch 12, AdamW 1e-3 (β2 0.99, decay 0.1), clip 1, 2,000 iterations, dropout 0."""
    torch.manual_seed(1337)
    model = GPT(vocab, NANO["context"], NANO["width"], NANO["layers"], NANO["heads"], bias=False)
    optimizer = torch.optim.AdamW(decay_groups(model), lr=NANO["lr"], betas=(0.9, 0.99))
    iteration = [0]

    def step(x: torch.Tensor, y: torch.Tensor) -> dict:
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = nano_lr(iteration[0])
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        iteration[0] += 1
        return {"loss": loss.detach()}

    return Run("nanoGPT laptop", model, step, random_windows(train_ids, NANO["context"], NANO["batch_size"], 1337),
               NANO["iters"], lambda: nats_per_char(model, val_ids, NANO["context"]), tokens=True)


def gpt_task(probe_chars: int) -> Task:
    corpus = load_shakespeare()
    vocab = CharVocab(corpus.train)
    train_ids, val_ids = vocab.encode(corpus.train), vocab.encode(corpus.val[:probe_chars])
    return Task("gpt", "val nats/char", False,
                [course_gpt(train_ids, val_ids, len(vocab)), nanogpt(train_ids, val_ids, len(vocab))])


# ---------------------------------------------------------------- results


def meets(quality: float, target: float, higher_is_better: bool) -> bool:
    return quality >= target if higher_is_better else quality <= target


def time_to(run: Run, target: float, higher_is_better: bool) -> float | None:
    """Training seconds at the run's first evaluation that meets `target`; None if it never does."""
    return next((seconds for seconds, quality in run.curve if meets(quality, target, higher_is_better)), None)


def target_of(task: Task) -> float:
    """The best final quality of any peer recipe."""
    finals = [run.curve[-1][1] for run in task.runs if not run.course]
    return max(finals) if task.higher_is_better else min(finals)


def speed_up(task: Task) -> float | None:
    """Fastest peer's time to target / course's time to target (None if the course never reaches it)."""
    target = target_of(task)
    course = time_to(task.runs[0], target, task.higher_is_better)
    peers = [t for run in task.runs[1:] if (t := time_to(run, target, task.higher_is_better)) is not None]
    return min(peers) / course if course and peers else None


def print_table(tasks: list[Task]) -> None:
    """One row per run: parameters, seconds to target, final quality, training throughput."""
    print(f"\n{lib.banner()}")
    header = (f"{'task':<7}{'recipe':<24}{'parameters':>11}{'s to target':>12}{'train s':>9}{'eval s':>8}"
              f"{'final':>9}{'items/s':>10}  metric (target)")
    print(header)
    print("-" * len(header))
    for task in tasks:
        target = target_of(task)
        for run in task.runs:
            reached = time_to(run, target, task.higher_is_better)
            unit = "tok/s" if run.tokens else "img/s"
            print(f"{task.name:<7}{run.name:<24}{count(run.model):>11,}"
                  f"{'never' if reached is None else f'{reached:.1f}':>12}{run.seconds:>9.1f}{run.eval_seconds:>8.1f}"
                  f"{run.curve[-1][1]:>9.4f}{run.items / run.seconds:>10.0f}  {unit}, {task.metric} ({target:.4f})")


def summary(tasks: list[Task]) -> str:
    """The closing line: the course's speed-up per task."""
    parts = []
    for task in tasks:
        ratio = speed_up(task)
        parts.append(f"{task.name} {ratio:.1f}x" if ratio is not None else f"{task.name} n/a (target not reached)")
    return "time-to-quality speed-up vs fastest peer: " + ", ".join(parts)


# ---------------------------------------------------------------- main


def shrink(task: Task, steps: int) -> Task:
    """--quick: keep only the first `steps` steps of every run's recipe (a smoke test, not a measurement)."""
    for run in task.runs:
        run.steps = min(run.steps, steps)
    return task


def main(argv: list[str] | None = None) -> list[Task]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: a few steps per recipe, seconds in all")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: OMP_NUM_THREADS or all)")
    parser.add_argument("--evals", type=int, default=36, help="validation evaluations per run, log-spaced in time")
    parser.add_argument("--tasks", default="digits,vae,gpt", help="comma-separated subset of digits,vae,gpt")
    args = parser.parse_args(argv)
    lib.runtime.set_threads(args.threads)
    fractions = [0.5, 1.0] if args.quick else eval_fractions(args.evals)
    split = lib.load_digits("standard")
    builders = {"digits": lambda: digits_task(split), "vae": lambda: vae_task(split),
                "gpt": lambda: gpt_task(2_048 if args.quick else 32_768)}
    tasks = []
    for name in args.tasks.split(","):
        print(f"{name}:", flush=True)
        task = builders[name]()
        race(shrink(task, 4) if args.quick else task, fractions)
        tasks.append(task)
    print_table(tasks)
    print(summary(tasks))
    return tasks


if __name__ == "__main__":
    main()
