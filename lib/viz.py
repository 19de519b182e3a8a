"""Figures that explain: training curves, image grids, confusion matrices."""

from __future__ import annotations

import io
import sys

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, nbval, a book build), False in a terminal."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return type(shell).__name__ == "ZMQInteractiveShell"


class History:
    """Per-epoch records from `fit`: `history["loss"]` is a list, `history.plot()` draws them."""

    def __init__(self, records: list[dict[str, float]] | None = None) -> None:
        self.records: list[dict[str, float]] = list(records or [])

    def append(self, record: dict[str, float]) -> None:
        self.records.append(record)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: str) -> list[float]:
        if not self.records or key not in self.records[-1]:
            known = sorted(self.records[-1]) if self.records else []
            raise KeyError(f"no metric {key!r} in history; known: {known}")
        return [r[key] for r in self.records if key in r]

    def last(self, key: str) -> float:
        """The latest value of a metric."""
        return self[key][-1]

    def metrics(self) -> list[str]:
        """Names of the curves worth plotting (everything but epoch and seconds)."""
        names = dict.fromkeys(k for r in self.records for k in r)
        return [k for k in names if k not in ("epoch", "seconds")]

    def draw(self, fig: Figure) -> Figure:
        """Draw losses on the left axis and other metrics on the right one."""
        fig.clear()
        losses = [k for k in self.metrics() if "loss" in k]
        others = [k for k in self.metrics() if k not in losses]
        groups = [g for g in (losses, others) if g]
        for i, group in enumerate(groups):
            ax = fig.add_subplot(1, len(groups), i + 1)
            for key in group:
                ax.plot(self["epoch"][-len(self[key]):], self[key], marker="o", label=key)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend()
        fig.tight_layout()
        return fig

    def plot(self) -> Figure:
        """A new figure of every curve."""
        fig = plt.figure(figsize=(10, 3.2))
        return self.draw(fig)

    def __repr__(self) -> str:
        last = self.records[-1] if self.records else {}
        shown = ", ".join(f"{k}={v:.4g}" for k, v in last.items() if k != "epoch")
        return f"History({len(self)} epochs; last: {shown})"


class LiveCurves:
    """Training curves that redraw in place each epoch in a notebook, or one text line per epoch."""

    def __init__(self) -> None:
        self.handle = None
        self.figure = Figure(figsize=(10, 3.2)) if in_notebook() else None

    def update(self, history: History) -> None:
        if self.figure is None:
            print(repr(history))
            return
        from IPython.display import Image, display

        history.draw(self.figure)
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=80)
        picture = Image(buffer.getvalue())
        if self.handle is None:
            self.handle = display(picture, display_id=True)
        else:
            self.handle.update(picture)


def image_grid(images: torch.Tensor, titles: list[str] | None = None, columns: int = 10,
               size: float = 1.1, cmap: str = "gray") -> Figure:
    """Show (N, 1, H, W) or (N, H, W) images in a grid, each with an optional title."""
    images = images.detach().float().cpu()
    if images.dim() == 4:
        if images.shape[1] != 1:
            raise ValueError(f"image_grid expects 1 channel, got shape {tuple(images.shape)}")
        images = images[:, 0]
    if images.dim() != 3:
        raise ValueError(f"image_grid expects (N, 1, H, W) or (N, H, W), got {tuple(images.shape)}")
    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * size * 1.15), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i], cmap=cmap)
            if titles:
                ax.set_title(titles[i], fontsize=8)
    fig.tight_layout()
    return fig


def confusion_matrix(predicted: torch.Tensor, actual: torch.Tensor, classes: int) -> torch.Tensor:
    """Counts[i, j] = how many examples of true class i were predicted as class j."""
    index = actual.cpu().long() * classes + predicted.cpu().long()
    return torch.bincount(index, minlength=classes * classes).reshape(classes, classes)


def plot_confusion(matrix: torch.Tensor, labels: list[str] | tuple[str, ...]) -> Figure:
    """Draw a confusion matrix with counts in the cells."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(matrix, cmap="Blues")
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels,
           xlabel="predicted", ylabel="true")
    high = matrix.max().item() / 2
    for (i, j), count in zip(torch.cartesian_prod(torch.arange(len(labels)), torch.arange(len(labels))).tolist(),
                             matrix.flatten().tolist(), strict=True):
        if count:
            ax.text(j, i, count, ha="center", va="center", fontsize=8, color="white" if count > high else "black")
    fig.tight_layout()
    return fig


def plot_curves(curves: dict[str, tuple[list[float], list[float]]], xlabel: str, ylabel: str,
                log: bool = False, title: str = "", marker: str = "o") -> Figure:
    """Plot named (x, y) curves on one axis; `log=True` for log-log axes; marker="" for dense curves."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (x, y) in curves.items():
        ax.plot(x, y, marker=marker, label=name)
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return fig
