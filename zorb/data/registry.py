"""Datasets by name, and load_dataset: load, subsample, preprocess."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable

import numpy as np

from zorb.data import cache, images, synthetic, tabular
from zorb.data.dataset import TASKS, Dataset, RawData
from zorb.data.preprocess import (
    check_finite,
    check_labels,
    one_hot,
    scale_min_max,
    value_range,
)
from zorb.data.subsample import balanced_subset, check_count, random_subset
from zorb.errors import ConfigError, DataError

Loader = Callable[[Path, int, bool], RawData]

DATASETS: dict[str, Loader] = {
    **{name: images.image_loader(name) for name in images.IMAGE_DATASETS},
    "mnist_5k": tabular.load_mnist_5k,
    "digits": tabular.load_digits,
    "iris": tabular.load_iris,
    "boston": tabular.load_boston,
    "sinc": synthetic.load_sinc,
    "sinc_symmetric": synthetic.load_sinc_symmetric,
    "xor": synthetic.load_xor,
    "two_spirals": synthetic.load_two_spirals,
}

# Datasets whose parsed (or split) RawData zorb.data.cache keeps, by name: the files an entry
# is made from (data_dir -> paths) and whether the seed changes it. sinc and xor are
# generated in milliseconds without any file and are not kept.
CACHED: dict[str, tuple[Callable[[Path], list[Path]], bool]] = {
    **{name: (functools.partial(images.image_files, name), False) for name in images.IMAGE_DATASETS},
    "mnist_5k": (lambda data_dir: tabular.source_files("mnist_5k"), True),
    "digits": (lambda data_dir: tabular.source_files("digits"), True),
    "iris": (lambda data_dir: tabular.source_files("iris"), True),
    "boston": (lambda data_dir: tabular.source_files("boston"), False),
    "two_spirals": (lambda data_dir: [Path(synthetic.__file__)], True),
}

# Independent random streams derived from the seed: subsets never share draws with the
# data generation (which uses default_rng(seed) itself).
_TRAIN_SUBSET_STREAM = 1
_TEST_SUBSET_STREAM = 2
_MAX_SEED = 2**32 - 1  # scikit-learn's random_state limit


def _check_options(name: str, seed, train_samples, test_samples, balanced: bool) -> None:
    """ConfigError for a bad name or option value."""
    if name not in DATASETS:
        raise ConfigError(
            f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not (
        0 <= seed <= _MAX_SEED
    ):
        raise ConfigError(f"seed must be an integer in 0..{_MAX_SEED}, not {seed!r}")
    if train_samples is not None:
        check_count("train_samples", train_samples)
    if test_samples is not None:
        check_count("test_samples", test_samples)
    if balanced and train_samples is None:
        raise ConfigError("balanced=true needs train_samples, the size of the balanced subset")


def _train_indices(name: str, raw: RawData, m: int | None, seed: int, balanced: bool,
                   replace: bool) -> np.ndarray | None:
    """Rows of the training split to keep, or None for all of them."""
    if m is None:
        return None
    rng = np.random.default_rng([seed, _TRAIN_SUBSET_STREAM])
    what = f"the training split of {name}"
    if balanced:
        if raw.task == "regression":
            raise ConfigError(
                f"balanced=true needs classes but {name} is a regression dataset; "
                "set balanced=false"
            )
        return balanced_subset(raw.target_train, raw.num_classes, m, rng,
                               replace=replace, what=what)
    return random_subset(raw.x_train.shape[0], m, rng, replace=replace, what=what)


def _test_indices(name: str, raw: RawData, m: int | None, seed: int) -> np.ndarray | None:
    """Rows of the test split to keep (uniform, without replacement), or None for all."""
    if m is None:
        return None
    rng = np.random.default_rng([seed, _TEST_SUBSET_STREAM])
    return random_subset(raw.x_test.shape[0], m, rng, replace=False,
                         what=f"the test split of {name}")


def _inputs(x: np.ndarray, rows: np.ndarray | None, scale: bool, flatten: bool) -> np.ndarray:
    """Subset, min-max scale (over the whole split) and flatten inputs; float64, C order."""
    lo, hi = value_range(x) if scale else (0.0, 1.0)
    picked = x if rows is None else x[rows]
    out = scale_min_max(picked, lo, hi) if scale else np.asarray(picked, dtype=np.float64)
    if flatten:
        out = out.reshape(out.shape[0], -1)
    return np.ascontiguousarray(out, dtype=np.float64)


def _targets(raw: RawData, target: np.ndarray, rows: np.ndarray | None):
    """(y float64 2-D, labels int64 or None) for the kept rows."""
    picked = target if rows is None else target[rows]
    if raw.task == "regression":
        y = np.asarray(picked, dtype=np.float64)
        return np.ascontiguousarray(y.reshape(y.shape[0], -1)), None
    labels = np.ascontiguousarray(picked, dtype=np.int64)
    if raw.task == "binary":
        return labels[:, np.newaxis].astype(np.float64), labels
    return one_hot(labels, raw.num_classes), labels


def _check_raw(name: str, raw: RawData) -> None:
    """DataError for non-finite values or labels out of range; these are data problems."""
    if raw.task not in TASKS:
        raise ValueError(f"loader of {name!r} returned unknown task {raw.task!r}")
    for what, values in (("training inputs", raw.x_train), ("test inputs", raw.x_test)):
        check_finite(name, what, values)
    for split, values in (("training", raw.target_train), ("test", raw.target_test)):
        if raw.task == "regression":
            check_finite(name, f"{split} targets", values)
        else:
            check_labels(name, split, values, raw.num_classes)


def _load_raw(name: str, data_dir: Path, seed: int, download: bool, cache_dir: Path | None) -> RawData:
    """The loader's RawData, through the cache under ``cache_dir`` when given and ``name`` is in CACHED."""
    load = functools.partial(DATASETS[name], data_dir, seed, download)
    if cache_dir is None or name not in CACHED:
        return load()
    sources, seeded = CACHED[name]
    try:
        files = sources(data_dir)
    except (DataError, ImportError):  # missing files: the loader says so (or downloads them)
        return load()
    return cache.cached(cache_dir / (f"{name}-seed{seed}" if seeded else name), files, load)


def load_dataset(name: str, *, data_dir: str | os.PathLike = "data", seed: int = 0,
                 train_samples: int | None = None, test_samples: int | None = None,
                 balanced: bool = False, replace: bool = False, flatten: bool = False,
                 download: bool = False, cache_dir: str | os.PathLike | None = None) -> Dataset:
    """Load dataset ``name`` with the paper's preprocessing.

    Args:
        name: a key of DATASETS.
        data_dir: root of the standard files of mnist, fashion_mnist, cifar10, cifar100.
        seed: fixes generated data, seeded splits and subsets.
        train_samples: keep a seeded random subset of this many training samples
            (None: all).
        test_samples: keep a seeded random subset of this many test samples, drawn
            without replacement (None: all).
        balanced: draw train_samples / num_classes training samples of every class.
        replace: draw the training subset with replacement.
        flatten: images as (N, H*W*C) rows instead of (N, H, W, C).
        download: fetch missing standard files with pooch (zorb.data.download; the
            environment variable ZORB_DATA_URL names a mirror).
        cache_dir: keep the parsed files (and seeded splits) as ``.npy`` here and read them
            back while their sources are unchanged (``zorb.data.cache``); None: parse every time.

    Inputs are min-max scaled globally over each full split (train and test apart) before
    the subset is taken, so a sample's values do not depend on which others were drawn.

    Raises:
        ConfigError: unknown name or option value.
        DataError: missing or damaged files, or data that cannot give what was asked.
    """
    _check_options(name, seed, train_samples, test_samples, balanced)
    raw = _load_raw(name, Path(data_dir).expanduser(), int(seed), bool(download),
                    None if cache_dir is None else Path(cache_dir).expanduser())
    _check_raw(name, raw)
    train_rows = _train_indices(name, raw, train_samples, int(seed), balanced, replace)
    test_rows = _test_indices(name, raw, test_samples, int(seed))
    y_train, labels_train = _targets(raw, raw.target_train, train_rows)
    y_test, labels_test = _targets(raw, raw.target_test, test_rows)
    return Dataset(
        name=name,
        x_train=_inputs(raw.x_train, train_rows, raw.scale_inputs, flatten),
        y_train=y_train,
        x_test=_inputs(raw.x_test, test_rows, raw.scale_inputs, flatten),
        y_test=y_test,
        task=raw.task,
        num_classes=raw.num_classes,
        labels_train=labels_train,
        labels_test=labels_test,
    )
