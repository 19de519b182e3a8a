"""One training loop for every model in the course.

`fit` knows nothing about classifiers, VAEs or GANs. It calls your `step(*batch)` once per batch; the step
does the forward pass, the backward pass and the optimiser update, and returns a dict of numbers
(at least `"loss"`). `fit` adds the progress bar, per-epoch averages, an optional `evaluate()`,
live curves, a NaN/inf guard and a checkpoint after every epoch that a later call resumes from.

Metrics are summed on the device and read back every `SYNC_EVERY` batches and at the end of an epoch, so
a GPU never waits for the host after each step.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import types
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
SYNC_EVERY = 50  # batches between reads of the running metrics (progress bar, NaN guard)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite value."""


# ---------------------------------------------------------------- device helpers


def native_bf16(device: torch.device) -> bool:
    """True on a CUDA GPU whose hardware computes bf16 (Ampere and newer); emulated bf16 (T4, V100) is slow."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA (bf16 where the GPU has it natively, else fp16); a no-op on CPU and MPS."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if native_bf16(device) else torch.float16)


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
    fp16 = device.type == "cuda" and not native_bf16(device)  # fp16 needs loss scaling, bf16 does not
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

    Folder: `COURSE_CHECKPOINTS`, else `checkpoints/` at the course root. Change a setting and the file
    name changes; change the model or the step's code and `fit` sees it (`run_fingerprint`) and starts afresh.
    """
    root = Path(os.environ.get("COURSE_CHECKPOINTS") or REPO / "checkpoints")
    key = json.dumps({"profile": get_profile(), **config}, sort_keys=True, default=str)
    return root / chapter / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}.pt"


def run_fingerprint(step: Step, state: Mapping[str, object]) -> str:
    """A short hash of what defines a run: the step's code with the functions, models and constants it
    uses, and the structure of each state object (not its current values). Same run, same fingerprint."""
    home = getattr(step, "__module__", None)
    parts = [_describe(step, home, set())]
    parts += [f"{name}: {_describe(obj, home, set())}" for name, obj in sorted(state.items())]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _is_course_code(obj: object, home: str | None) -> bool:
    """Code a learner or the course wrote (a notebook, `lib`, the step's module), not a library's."""
    module = getattr(obj, "__module__", None) or ""
    return module in ("__main__", home) or module.split(".")[0] == "lib"


def _describe(obj: object, home: str | None, seen: set[int]) -> str:
    """A text that changes when the code, architecture or hyperparameters of `obj` change."""
    if id(obj) in seen:
        return "<seen>"
    seen.add(id(obj))
    if isinstance(obj, types.MethodType):
        return _describe(obj.__func__, home, seen)
    if isinstance(obj, types.FunctionType):
        return _describe_function(obj, home, seen)
    if isinstance(obj, nn.Module):
        shapes = [(name, tuple(p.shape), str(p.dtype)) for name, p in obj.state_dict().items()]
        methods = [_describe_class(type(m), home, seen) for m in obj.modules() if _is_course_code(type(m), home)]
        return f"{obj!r} {shapes} {methods}"
    if isinstance(obj, torch.optim.Optimizer):
        return f"{type(obj).__name__} {obj.defaults} {[len(g['params']) for g in obj.param_groups]}"
    if isinstance(obj, torch.optim.lr_scheduler.LRScheduler):
        fixed = {k: v for k, v in obj.state_dict().items() if not k.startswith("_") and k != "last_epoch"}
        return f"{type(obj).__name__} {fixed}"
    if isinstance(obj, torch.Tensor):
        small = obj.numel() <= 4096
        return f"tensor{tuple(obj.shape)} {obj.dtype} {obj.detach().cpu().tolist() if small else ''}"
    if isinstance(obj, int | float | str | bool | type(None)):
        return repr(obj)
    if isinstance(obj, tuple | list):
        return "[" + ", ".join(_describe(v, home, seen) for v in obj) + "]"
    if _is_course_code(type(obj), home):
        return _describe_class(type(obj), home, seen)
    return type(obj).__name__


def _describe_function(fn: types.FunctionType, home: str | None, seen: set[int]) -> str:
    """The function's code, the values it closes over, and the course-written globals it reads."""
    cells = []
    for cell in fn.__closure__ or ():
        try:
            cells.append(_describe(cell.cell_contents, home, seen))
        except ValueError:  # an empty cell
            cells.append("<empty>")
    used = []
    for name in _global_names(fn.__code__):
        value = fn.__globals__.get(name)
        if isinstance(value, int | float | str | bool | nn.Module | torch.Tensor) or (
            callable(value) and _is_course_code(value, home)
        ):
            used.append(f"{name}={_describe(value, home, seen)}")
    return f"{fn.__qualname__} {_describe_code(fn.__code__)} closure={cells} globals={used}"


def _describe_code(code: types.CodeType) -> str:
    """Bytecode and constants (nested functions included); comments and line numbers do not count."""
    consts = [_describe_code(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
    return hashlib.sha256(code.co_code + repr((consts, code.co_names)).encode()).hexdigest()[:16]


def _global_names(code: types.CodeType) -> list[str]:
    """Names a code object (and the functions nested in it) may read from module globals."""
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += _global_names(const)
    return sorted(set(names))


def _describe_class(cls: type, home: str | None, seen: set[int]) -> str:
    """The code of every method a course-written class (and its course-written bases) defines."""
    methods = []
    for klass in cls.__mro__:
        if _is_course_code(klass, home):
            methods += [f"{klass.__name__}.{name} {_describe_code(f.__code__)}" for name, f in vars(klass).items()
                        if isinstance(f, types.FunctionType)]
    return f"{cls.__qualname__} {methods}"


def save_checkpoint(path: Path, epoch: int, history: History, state: Mapping[str, object],
                    batches: object, fingerprint: str = "") -> None:
    """Write everything needed to resume after `epoch`, atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "epoch": epoch,
        "fingerprint": fingerprint,
        "history": history.records,
        "state": {name: _state_of(obj) for name, obj in state.items()},
        "rng": _rng_states(),
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
            _restore(obj, payload["state"][name])
        except (RuntimeError, ValueError, KeyError) as error:
            raise ValueError(
                f"checkpoint {path} does not fit '{name}' (did the model change?). "
                f"Delete the file to train from scratch.\n{error}"
            ) from error
    _set_rng_states(payload["rng"])
    generator = getattr(batches, "generator", None)
    if "batches_rng" in payload and isinstance(generator, torch.Generator):
        generator.set_state(payload["batches_rng"])
    return payload["epoch"], History(payload["history"])


def _state_of(obj: object) -> object:
    """What to save of a state object: a generator's RNG state, or anything's `state_dict()`."""
    return obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()


def _restore(obj: object, saved: object) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(saved)
    else:
        obj.load_state_dict(saved)


def _rng_states() -> dict[str, object]:
    """The global RNG states a resumed run must continue from: CPU, and CUDA / MPS where in use."""
    states: dict[str, object] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    if torch.backends.mps.is_available():
        states["mps"] = torch.mps.get_rng_state()
    return states


def _set_rng_states(states: Mapping[str, object]) -> None:
    torch.set_rng_state(states["cpu"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    if "mps" in states and torch.backends.mps.is_available():
        torch.mps.set_rng_state(states["mps"])


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

    `state` names the objects to checkpoint ({"model": model, "optimizer": opt, "augment": generator, ...}:
    anything with `state_dict()`, or a `torch.Generator`); with `checkpoint` set, the file is written after
    each epoch and, if it exists when `fit` starts and was written by the same run (same model, step code
    and settings: `run_fingerprint`), training resumes after the last saved epoch. A checkpoint of a
    different run is moved aside to `*.stale.pt` and training starts afresh. Returns the per-epoch `History`.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if checkpoint is not None and not state:
        raise ValueError("checkpoint needs state={'model': model, 'optimizer': optimizer, ...} to save")
    history, done, fingerprint = History(), 0, ""
    if checkpoint is not None:
        checkpoint, fingerprint = Path(checkpoint), run_fingerprint(step, state)
        if _resumable(checkpoint, fingerprint):
            done, history = load_checkpoint(checkpoint, state, batches)
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
            save_checkpoint(checkpoint, epoch, history, state, batches, fingerprint)
        if curves is not None:
            curves.update(history)
    bar.close()
    return history


def _resumable(path: Path, fingerprint: str) -> bool:
    """Whether `path` holds a checkpoint of this very run; one of another run is moved aside."""
    if not path.exists():
        return False
    written_by = torch.load(path, weights_only=True, map_location="cpu").get("fingerprint")
    if written_by == fingerprint:
        return True
    stale = path.with_suffix(".stale.pt")
    path.replace(stale)
    print(f"[fit] {path.name} was written by a different run (the model, the step/loss code or a setting "
          f"changed): training from scratch; the old checkpoint is kept as {stale.name}")
    return False


def _length(batches: Iterable) -> int | None:
    """Batches per epoch, if the iterable knows it (for the progress bar's total)."""
    try:
        return len(batches)
    except TypeError:
        return None


def _run_epoch(step: Step, batches: Iterable, bar: tqdm) -> dict[str, float]:
    """One pass over the data; return each returned number averaged over the batches.

    The sums stay on the device; they are read (one sync) every `SYNC_EVERY` batches for the progress
    bar and the NaN guard, and once at the end.
    """
    totals: dict[str, torch.Tensor | float] = {}
    count = 0
    for count, batch in enumerate(batches, start=1):
        for name, value in step(*batch).items():
            value = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
            totals[name] = totals.get(name, 0.0) + value
        bar.update()
        if count % SYNC_EVERY == 0:
            means = _means(totals, count)
            _guard(means, f"in the first {count} batches of {bar.desc}")
            if "loss" in means:
                bar.set_postfix(loss=f"{means['loss']:.4f}", refresh=False)
    if count == 0:
        raise ValueError("the batches iterable gave no batches: is the dataset empty?")
    means = _means(totals, count)
    _guard(means, f"in {bar.desc} ({count} batches)")
    return means


def _means(totals: Mapping[str, torch.Tensor | float], count: int) -> dict[str, float]:
    """Running sums as plain floats divided by `count` (this is where a GPU is waited for)."""
    return {name: (total.item() if isinstance(total, torch.Tensor) else total) / count
            for name, total in totals.items()}


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
