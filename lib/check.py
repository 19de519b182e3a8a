"""Checks that fail loudly and readably: equal tensors, expected shapes, exercise self-checks."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence

import torch


def _as_tensor(value: object) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double()
    return torch.as_tensor(value, dtype=torch.float64)


def close(actual: object, expected: object, name: str = "value", rtol: float = 1e-5, atol: float = 1e-6,
          quiet: bool = False) -> None:
    """Assert `actual` matches `expected` elementwise within `atol + rtol * |expected|`.

    On failure, raise an AssertionError that says how many entries differ, the largest difference,
    where it is, and both values there.
    """
    a, e = _as_tensor(actual), _as_tensor(expected)
    if a.shape != e.shape:
        raise AssertionError(f"{name}: shape {tuple(a.shape)} but expected {tuple(e.shape)}")
    nan_mismatch = torch.isnan(a) != torch.isnan(e)
    difference = (a - e).abs().nan_to_num(0.0)
    allowed = atol + rtol * e.abs().nan_to_num(0.0)
    bad = (difference > allowed) | nan_mismatch
    if bad.any():
        worst = int(torch.argmax(torch.where(bad, difference, torch.zeros_like(difference))))
        where = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), a.shape)) if a.dim() else ()
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {a.numel()} entries differ (rtol={rtol}, atol={atol}); "
            f"largest |difference| {difference.max().item():.3g} at index {where}: "
            f"actual {a.flatten()[worst].item():.6g} vs expected {e.flatten()[worst].item():.6g}"
        )
    if not quiet:
        print(f"✓ {name} matches (max |difference| {difference.max().item() if a.numel() else 0:.2e})")


def shape(tensor: torch.Tensor, expected: Sequence[int | None], name: str = "tensor") -> None:
    """Assert a tensor's shape; `None` in `expected` accepts any size in that dimension."""
    actual = tuple(tensor.shape)
    fits = len(actual) == len(expected) and all(e is None or a == e for a, e in zip(actual, expected, strict=False))
    if not fits:
        wanted = tuple("any" if e is None else e for e in expected)
        raise AssertionError(f"{name}: shape {actual} but expected {wanted}")


def self_check(test: Callable[[], None], name: str, strict: bool = False) -> None:
    """Run an exercise's test and say how it went.

    A learner's attempt (strict=False) never stops "Run All": an unattempted exercise
    (NotImplementedError), a wrong answer (AssertionError) or code that crashes (any other exception)
    prints what to fix. Solutions are checked with strict=True, which raises on any failure.
    """
    try:
        test()
    except NotImplementedError:
        if strict:
            raise
        print(f"{name}: not attempted yet. Replace the `raise NotImplementedError` line and run again.")
        return
    except AssertionError as error:
        if strict:
            raise
        print(f"{name}: not yet right: {error}")
        return
    except Exception as error:  # a learner's code may fail in any way; say how, and keep Run All going
        if strict:
            raise
        print(f"{name}: your code raised {type(error).__name__}: {error}")
        return
    print(f"✓ {name}: correct")


def must_reject(test: Callable[[], None], wrong: str) -> None:
    """Assert that an exercise's test fails a plausible wrong answer, so its self-check can fail.

    Call it in a solution cell: `must_reject(lambda: test_unroll(unroll_ignoring_h0), "an unroll that ignores h0")`.
    """
    try:
        test()
    except AssertionError:
        print(f"✓ the self-check rejects {wrong}")
        return
    raise AssertionError(f"the self-check accepts {wrong}: it cannot tell a right answer from this wrong one")


def model_answer(text: str) -> None:
    """Show the model answer of a "think" exercise as formatted text (its cell stays hidden until opened)."""
    from IPython.display import Markdown, display

    display(Markdown(textwrap.dedent(text).strip()))
