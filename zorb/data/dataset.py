"""The container every dataset loader hands back, before and after preprocessing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TASKS = ("classification", "binary", "regression")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test pair ready for a network: float64, C-contiguous.

    Shapes:
        x_train, x_test: (N, H, W, C) for images (NHWC), (N, H*W*C) when loaded with
            ``flatten=True``, (N, d) for tabular data.
        y_train, y_test: always 2-D. One-hot (N, num_classes) for ``classification``;
            (N, 1) of 0/1 for ``binary``; (N, k) raw targets for ``regression``.
        labels_train, labels_test: (N,) int64 class labels, or None for regression.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    task: str
    num_classes: int | None
    labels_train: np.ndarray | None
    labels_test: np.ndarray | None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample, e.g. (28, 28, 1) or (784,)."""
        return tuple(self.x_train.shape[1:])

    @property
    def output_dim(self) -> int:
        """Number of network outputs the targets need."""
        return int(self.y_train.shape[1])


@dataclass(frozen=True, eq=False)
class RawData:
    """Both splits as a loader produces them: before scaling, subsetting and one-hot.

    Inputs keep their stored dtype (uint8 images stay uint8) so that a small subset can be
    drawn before anything is converted to float64.

    Shapes:
        x_train, x_test: (N, ...) real numbers.
        target_train, target_test: (N,) integer labels for classification and binary
            tasks; (N, k) float targets for regression.
    """

    x_train: np.ndarray
    target_train: np.ndarray
    x_test: np.ndarray
    target_test: np.ndarray
    task: str
    num_classes: int | None
    # Global min-max scaling of the inputs, computed over each split on its own (the
    # paper's preprocessing). False where the loader already scaled (Iris) or the
    # definition says "no scaling" (Sinc, Two Spirals).
    scale_inputs: bool
