"""One training loop for every model in the course.

`fit` knows nothing about classifiers, VAEs or GANs. It calls your `step(*batch)` once per batch; the step
does the forward pass, the backward pass and the optimiser update, and returns a dict of numbers
(at least `"loss"`). `fit` adds the progress bar, per-epoch averages, an optional `evaluate()`,
live curves, a NaN/inf guard and a checkpoint after every epoch that a later call resumes from.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .runtime import get_profile
from .viz import History, LiveCurves

Step = Callable[..., Mapping[str, torch.Tensor | float]]
REPO = Path(__file__).resolve().parents[1]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite value."""


# ---------------------------------------------------------------- device helpers


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA (bf16 where supported, else fp16); a no-op on CPU and MPS."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move a model to `device`; convolution models also switch to the `channels_last` memory layout.

    On CUDA and on CPU (oneDNN), convolutions run faster with channels stored last (NHWC); the model's
    outputs are the same. Use `.flatten(1)` or `nn.Flatten`, not `.view`, on conv outputs afterwards.
    """
    model = model.to(device)
    if device.type in ("cuda", "cpu") and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model = model.to(memory_format=torch.channels_last)
    return model


def supervised_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable = F.cross_entropy,
    clip: float | None = None,
) -> Step:
    """The usual step for `model(x) -> logits`: loss, backward, optional clipping, update."""
    device = next(model.parameters()).device
    fp16 = device.type == "cuda" and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler(device.type, enabled=fp16)

    def step(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            logits = model(x)
            loss = loss_fn(logits, y)
        scaler.scale(loss).backward()
        if clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        scaler.step(optimizer)
        scaler.update()
        return {"loss": loss.detach(), "train_accuracy": (logits.argmax(1) == y).float().mean()}

    return step


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Model outputs for `x` in eval mode, in batches, with no gradients."""
    was_training = model.training
    model.eval()
    outputs = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return outputs.float()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Share of `x` whose arg-max prediction equals `y`."""
    return (predict(model, x, batch_size).argmax(1) == y).float().mean().item()


# ---------------------------------------------------------------- checkpoints


def checkpoint_path(chapter: str, name: str, **config: object) -> Path:
    """Where a chapter's run keeps its checkpoint: one file per (profile, config).

    Folder: `COURSE_CHECKPOINTS`, else `checkpoints/` at the course root. Change a setting and the
    file name changes, so a stale checkpoint is never resumed by mistake.
    """
    import os

    root = Path(os.environ.get("COURSE_CHECKPOINTS") or REPO / "checkpoints")
    key = json.dumps({"profile": get_profile(), **config}, sort_keys=True, default=str)
    return root / chapter / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}.pt"


def save_checkpoint(path: Path, epoch: int, history: History, state: Mapping[str, object],
                    batches: object) -> None:
    """Write everything needed to resume after `epoch`, atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "epoch": epoch,
        "history": history.records,
        "state": {name: obj.state_dict() for name, obj in state.items()},
        "torch_rng": torch.get_rng_state(),
    }
    generator = getattr(batches, "generator", None)
    if isinstance(generator, torch.Generator):
        payload["batches_rng"] = generator.get_state()
    temporary = path.with_name(path.name + ".tmp")
    torch.save(payload, temporary)
    temporary.replace(path)


def load_checkpoint(path: Path, state: Mapping[str, object], batches: object) -> tuple[int, History]:
    """Restore `state` objects, RNGs and history from `path`; return (epochs done, history)."""
    payload = torch.load(path, weights_only=True, map_location="cpu")
    missing = set(state) - set(payload["state"])
    if missing:
        raise ValueError(f"checkpoint {path} has no state for {sorted(missing)}; delete it to start afresh")
    for name, obj in state.items():
        try:
            obj.load_state_dict(payload["state"][name])
        except (RuntimeError, ValueError, KeyError) as error:
            raise ValueError(
                f"checkpoint {path} does not fit '{name}' (did the model change?). "
                f"Delete the file to train from scratch.\n{error}"
            ) from error
    torch.set_rng_state(payload["torch_rng"])
    generator = getattr(batches, "generator", None)
    if "batches_rng" in payload and isinstance(generator, torch.Generator):
        generator.set_state(payload["batches_rng"])
    return payload["epoch"], History(payload["history"])


# ---------------------------------------------------------------- the loop


def fit(
    step: Step,
    batches: Iterable,
    epochs: int,
    *,
    evaluate: Callable[[], Mapping[str, float]] | None = None,
    checkpoint: str | Path | None = None,
    state: Mapping[str, object] | None = None,
    live: bool = True,
    progress: bool = True,
) -> History:
    """Train for `epochs` passes over `batches`, calling `step(*batch)` for each batch.

    `state` names the objects to checkpoint ({"model": model, "optimizer": opt, ...}); with
    `checkpoint` set, the file is written after each epoch and, if it exists when `fit` starts,
    training resumes after the last saved epoch. Returns the per-epoch `History`.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if checkpoint is not None and not state:
        raise ValueError("checkpoint needs state={'model': model, 'optimizer': optimizer, ...} to save")
    history, done = History(), 0
    if checkpoint is not None and Path(checkpoint).exists():
        done, history = load_checkpoint(Path(checkpoint), state, batches)
        print(f"[fit] resumed from {checkpoint}: {done} of {epochs} epochs already done")
    curves = LiveCurves() if live else None
    per_epoch = _length(batches)
    bar = tqdm(total=per_epoch and (epochs - done) * per_epoch, disable=not progress, desc="training")
    for epoch in range(done + 1, epochs + 1):
        started = time.perf_counter()
        bar.set_description(f"epoch {epoch}/{epochs}")
        try:
            means = _run_epoch(step, batches, bar)
        except KeyboardInterrupt:
            where = f"; run the cell again to resume after epoch {epoch - 1}" if checkpoint else ""
            print(f"[fit] interrupted during epoch {epoch}{where}")
            raise
        record = {"epoch": epoch, **means, **dict(evaluate() if evaluate else {})}
        record["seconds"] = time.perf_counter() - started
        _guard(record, f"after epoch {epoch}")
        history.append(record)
        if checkpoint is not None:
            save_checkpoint(Path(checkpoint), epoch, history, state, batches)
        if curves is not None:
            curves.update(history)
    bar.close()
    return history


def _length(batches: Iterable) -> int | None:
    """Batches per epoch, if the iterable knows it (for the progress bar's total)."""
    try:
        return len(batches)
    except TypeError:
        return None


def _run_epoch(step: Step, batches: Iterable, bar: tqdm) -> dict[str, float]:
    """One pass over the data; return each returned number averaged over the batches."""
    totals: dict[str, float] = {}
    count = 0
    for count, batch in enumerate(batches, start=1):
        values = {name: _number(value) for name, value in step(*batch).items()}
        _guard(values, f"at batch {count} ({bar.desc})")
        for name, value in values.items():
            totals[name] = totals.get(name, 0.0) + value
        bar.update()
        if count % 10 == 0 and "loss" in values:
            bar.set_postfix(loss=f"{values['loss']:.4f}", refresh=False)
    if count == 0:
        raise ValueError("the batches iterable gave no batches: is the dataset empty?")
    return {name: total / count for name, total in totals.items()}


def _number(value: torch.Tensor | float) -> float:
    """A returned metric as a plain float (detached, so returning `loss` itself is fine)."""
    return value.detach().item() if isinstance(value, torch.Tensor) else float(value)


def _guard(values: Mapping[str, float], where: str) -> None:
    """Stop with an explanation as soon as a loss or metric is NaN or infinite."""
    bad = {k: v for k, v in values.items() if isinstance(v, float) and not math.isfinite(v)}
    if bad:
        raise NonFiniteLossError(
            f"{', '.join(f'{k}={v}' for k, v in bad.items())} {where}. Training diverged. Usual causes: "
            "a learning rate that is too high (try 10x lower), log or division of zero (use the "
            "*_with_logits losses / log_softmax), or exploding gradients (clip them with "
            "torch.nn.utils.clip_grad_norm_)."
        )
