"""Seeded subsets of a split: plain random, or class-balanced (m / classes per class)."""

from __future__ import annotations

import numpy as np

from zorb.errors import ConfigError, DataError


def check_count(option: str, m) -> int:
    """m as a positive int, or ConfigError naming the option."""
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ConfigError(f"{option} must be a positive integer or null, not {m!r}")
    return int(m)


def random_subset(n: int, m: int, rng: np.random.Generator, *, replace: bool,
                  what: str = "the split") -> np.ndarray:
    """(m,) int64 indices into n rows, drawn uniformly with or without replacement."""
    if not replace and m > n:
        raise DataError(
            f"{m} samples were asked from {what}, which holds only {n}; "
            "ask for at most that many or set replace=true"
        )
    return rng.choice(n, size=m, replace=replace).astype(np.int64)


def balanced_subset(labels: np.ndarray, num_classes: int, m: int, rng: np.random.Generator,
                    *, replace: bool, what: str = "the split") -> np.ndarray:
    """(m,) int64 indices with exactly m / num_classes samples of every class, shuffled.

    labels: (n,) integer class labels in [0, num_classes).
    """
    if m % num_classes:
        lower = max(num_classes, m - m % num_classes)
        raise ConfigError(
            f"balanced subsampling of {m} samples needs a multiple of the {num_classes} "
            f"classes; set train_samples to e.g. {lower} or {lower + num_classes}"
        )
    per_class = m // num_classes
    chosen = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if members.size == 0 or (not replace and per_class > members.size):
            raise DataError(
                f"balanced subsampling needs {per_class} samples of class {c} but {what} "
                f"holds {members.size}; lower train_samples"
                + ("" if replace or members.size == 0 else " or set replace=true")
            )
        chosen.append(rng.choice(members, size=per_class, replace=replace))
    # Shuffled, so that the subset is not sorted by class.
    return rng.permutation(np.concatenate(chosen)).astype(np.int64)
