"""Generated datasets, exactly as the paper defines them (PAPER_EXPERIMENTS.md, group A).

Every random draw comes from a numpy Generator made from the seed, never from numpy's
global random state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zorb.data.dataset import RawData

SINC_TRAIN_LIMIT = 1000  # train x = -10.00 .. 10.00 in hundredths: 2001 points
SINC_TEST_LIMIT = 3000  # test x = -30.00 .. 30.00: 6001 points (extrapolation)
XOR_SAMPLES = 1000  # per split
XOR_COORD_LIMIT = 100  # integer coordinates in [-100, 100], both ends included
SPIRAL_POINTS = 200  # per spiral (class)
SPIRAL_TURN_DEGREES = 780  # the spirals wind through 780 degrees
TEST_FRACTION = 0.3


def sinc_grid(limit_hundredths: int) -> np.ndarray:
    """x = -limit..limit in steps of 0.01 as (2 * limit + 1, 1) float64, built as the paper's
    code builds it: ``arange(-limit, 0, 0.01)``, the point 0, ``arange(0.01, limit + 0.01, 0.01)``.

    The two halves accumulate rounding differently, so the grid is not symmetric about 0
    (by 2.1e-13 on [-10, 10], 4.7e-12 on [-30, 30]). Sinc is even: on an exactly symmetric
    grid the first layer's least-squares slope is zero up to rounding, and at rcond 1e-15
    rounding then decides the fit (docs/datasets.md, "Sinc's grid").
    """
    limit = limit_hundredths / 100.0
    halves = np.arange(-limit, 0.0, 0.01), np.zeros(1), np.arange(0.01, limit + 0.01, 0.01)
    return np.concatenate(halves)[:, np.newaxis]


def symmetric_sinc_grid(limit_hundredths: int) -> np.ndarray:
    """The same points as exact k/100 (the double nearest each), symmetric about 0."""
    steps = np.arange(-limit_hundredths, limit_hundredths + 1, dtype=np.float64)
    return (steps / 100.0)[:, np.newaxis]


def sinc(x: np.ndarray) -> np.ndarray:
    """sin(x) / x elementwise, with the limit 1 at x = 0; same shape as x."""
    nonzero = x != 0
    safe = np.where(nonzero, x, 1.0)
    return np.where(nonzero, np.sin(safe) / safe, 1.0)


def make_xor(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n XOR points before scaling.

    Returns:
        coords: (n, 2) int64, uniform integers in [-100, 100].
        labels: (n,) int64, 1 where coords[:, 0] * coords[:, 1] <= 0, else 0.
    """
    coords = rng.integers(-XOR_COORD_LIMIT, XOR_COORD_LIMIT + 1, size=(n, 2), dtype=np.int64)
    labels = (coords[:, 0] * coords[:, 1] <= 0).astype(np.int64)
    return coords, labels


def make_two_spirals(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved spirals of n points each, without noise.

    ``t = sqrt(u) * 780 * 2 pi / 360`` with ``u ~ U[0, 1)``; class 0 lies at
    ``(-cos(t) t, sin(t) t)`` and class 1 at its negation, so every point's distance from
    the origin is its t.

    Returns:
        points: (2n, 2) float64, class 0 first.
        labels: (2n,) int64, n zeros then n ones.
    """
    t = np.sqrt(rng.random(n)) * SPIRAL_TURN_DEGREES * 2.0 * np.pi / 360.0
    spiral = np.stack([-np.cos(t) * t, np.sin(t) * t], axis=1)
    points = np.concatenate([spiral, -spiral])
    labels = np.concatenate([np.zeros(n, np.int64), np.ones(n, np.int64)])
    return points, labels


def load_sinc(data_dir: Path, seed: int, download: bool, grid=sinc_grid) -> RawData:
    """Sinc regression: train (2001, 1) on [-10, 10], test (6001, 1) on [-30, 30], on the
    paper's grid (``sinc_grid``; ``grid=symmetric_sinc_grid``: dataset ``sinc_symmetric``).

    Fully determined by its definition: the seed changes nothing.
    """
    x_train, x_test = grid(SINC_TRAIN_LIMIT), grid(SINC_TEST_LIMIT)
    return RawData(x_train, sinc(x_train), x_test, sinc(x_test), "regression", None, False)


def load_sinc_symmetric(data_dir: Path, seed: int, download: bool) -> RawData:
    """Sinc on the exactly symmetric grid (``symmetric_sinc_grid``)."""
    return load_sinc(data_dir, seed, download, grid=symmetric_sinc_grid)


def load_xor(data_dir: Path, seed: int, download: bool) -> RawData:
    """XOR: 1000 train and 1000 test points from one seeded generator, binary labels."""
    rng = np.random.default_rng(seed)
    x_train, t_train = make_xor(XOR_SAMPLES, rng)
    x_test, t_test = make_xor(XOR_SAMPLES, rng)
    return RawData(x_train, t_train, x_test, t_test, "binary", 2, True)


def load_two_spirals(data_dir: Path, seed: int, download: bool) -> RawData:
    """Two spirals, 400 points split 70/30 by class (280 train / 120 test), unscaled."""
    from sklearn.model_selection import train_test_split

    points, labels = make_two_spirals(SPIRAL_POINTS, np.random.default_rng(seed))
    x_train, x_test, t_train, t_test = train_test_split(
        points, labels, test_size=TEST_FRACTION, stratify=labels, random_state=seed
    )
    return RawData(x_train, t_train, x_test, t_test, "binary", 2, False)
