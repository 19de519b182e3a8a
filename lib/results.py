"""The results record: each chapter's headline metrics in `results/<chapter>.json`."""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path

import torch

from .runtime import get_device, get_profile

REPO = Path(__file__).resolve().parents[1]
_STARTED = time.perf_counter()


def results_dir() -> Path:
    """`COURSE_RESULTS`, else `results/` at the course root."""
    return Path(os.environ.get("COURSE_RESULTS") or REPO / "results")


def start_clock() -> None:
    """Start the chapter's wall clock (`lib.setup` calls this)."""
    global _STARTED
    _STARTED = time.perf_counter()


def save_results(chapter: str, metrics: dict[str, float]) -> dict:
    """Write `results/<chapter>.json` with metrics, profile, device, torch version and seconds."""
    for name, value in metrics.items():
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"metric name {name!r} must be snake_case (a-z, 0-9, _)")
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"metric {name} must be a finite number, got {value!r}")
    record = {
        "chapter": chapter,
        "profile": get_profile(),
        "device": get_device().type,
        "torch": torch.__version__.split("+")[0],
        "seconds": round(time.perf_counter() - _STARTED, 1),
        "metrics": {k: float(v) for k, v in metrics.items()},
    }
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{chapter}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved {folder / (chapter + '.json')}: {json.dumps(record['metrics'])}")
    return record


def table(folder: Path | None = None) -> str:
    """A plain-text table of every chapter's record."""
    records = [json.loads(p.read_text()) for p in sorted(Path(folder or results_dir()).glob("*.json"))]
    if not records:
        return f"no results yet in {folder or results_dir()}: run a chapter to the end first"
    lines = [f"{'chapter':<26}{'profile':<10}{'device':<8}{'seconds':>9}  metrics"]
    for r in records:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in r["metrics"].items())
        lines.append(f"{r['chapter']:<26}{r['profile']:<10}{r['device']:<8}{r['seconds']:>9.1f}  {shown}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
