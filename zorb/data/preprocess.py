"""The paper's preprocessing: global min-max scaling, one-hot targets, float64."""

from __future__ import annotations

import numpy as np

from zorb.errors import DataError


def value_range(x: np.ndarray) -> tuple[float, float]:
    """Global (min, max) of an array of any shape."""
    return float(np.min(x)), float(np.max(x))


def scale_min_max(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map ``[lo, hi]`` onto ``[0, 1]`` with one global affine map; returns float64.

    A constant array (``hi == lo``) maps to zeros instead of dividing by zero.
    """
    out = np.subtract(x, lo, dtype=np.float64)  # a new array: x is never modified
    if hi > lo:
        out /= hi - lo
    return out


def scale_min_max_per_feature(x: np.ndarray) -> np.ndarray:
    """Min-max scale each column of x (N, d) onto [0, 1]; constant columns become 0."""
    x = np.asarray(x, dtype=np.float64)
    lo = x.min(axis=0)
    span = x.max(axis=0) - lo
    # Dividing a constant column by 1 leaves its zeros, without NaN.
    return (x - lo) / np.where(span > 0, span, 1.0)


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(N,) integer labels -> (N, num_classes) float64 one-hot rows."""
    out = np.zeros((labels.shape[0], num_classes), dtype=np.float64)
    out[np.arange(labels.shape[0]), labels] = 1.0
    return out


def check_finite(name: str, what: str, values: np.ndarray) -> None:
    """Raise DataError when values (any shape) hold NaN or infinity."""
    if values.dtype.kind in "fc" and not np.all(np.isfinite(values)):
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        raise DataError(
            f"dataset {name!r} has {bad} NaN or infinite value(s) in its {what}; "
            "repair or replace the source data"
        )


def check_labels(name: str, what: str, labels: np.ndarray, num_classes: int) -> None:
    """Raise DataError unless labels (N,) are integers in [0, num_classes)."""
    if labels.dtype.kind not in "iub":
        raise DataError(
            f"dataset {name!r} has non-integer {what} labels (dtype {labels.dtype}); "
            "replace the source data with integer class labels"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"dataset {name!r} has {what} labels outside 0..{num_classes - 1} "
            f"(found {int(labels.min())}..{int(labels.max())}); replace the source data"
        )
