"""Seeded subsets: plain random and class-balanced, with and without replacement."""

from __future__ import annotations

import numpy as np
import pytest
from data_fixtures import write_tiny_cifar

from zorb.data import load_dataset
from zorb.data.subsample import balanced_subset, random_subset
from zorb.errors import ConfigError, DataError


@pytest.mark.parametrize("replace", [False, True])
@pytest.mark.parametrize("m", [10, 40, 120])
def test_balanced_exact_counts(m, replace):
    ds = load_dataset("mnist_5k", train_samples=m, balanced=True, replace=replace, seed=3)
    assert ds.x_train.shape == (m, 28, 28, 1) and ds.y_train.shape == (m, 10)
    assert np.bincount(ds.labels_train, minlength=10).tolist() == [m // 10] * 10
    np.testing.assert_array_equal(ds.y_train.argmax(axis=1), ds.labels_train)
    assert ds.x_test.shape[0] == 1000  # the test split is untouched


def test_balanced_with_replacement_repeats_when_asked_beyond_class_size():
    labels = np.repeat(np.arange(10), 3)
    rows = balanced_subset(labels, 10, 100, np.random.default_rng(0), replace=True)
    assert np.bincount(labels[rows]).tolist() == [10] * 10
    with pytest.raises(DataError, match="needs 10 samples of class 0 but .* holds 3"):
        balanced_subset(labels, 10, 100, np.random.default_rng(0), replace=False)


def test_balanced_without_replacement_has_no_duplicates():
    labels = np.repeat(np.arange(10), 50)
    rows = balanced_subset(labels, 10, 200, np.random.default_rng(1), replace=False)
    assert np.unique(rows).size == 200


def test_balanced_not_divisible():
    expected = "multiple of the 10 classes; set train_samples to e.g. 20 or 30"
    with pytest.raises(ConfigError, match=expected):
        load_dataset("mnist_5k", train_samples=25, balanced=True)


def test_balanced_too_many_without_replacement():
    with pytest.raises(DataError, match="replace=true"):
        load_dataset("iris", train_samples=120, balanced=True)  # 35 per class in train
    ds = load_dataset("iris", train_samples=120, balanced=True, replace=True)
    assert np.bincount(ds.labels_train).tolist() == [40, 40, 40]


def test_balanced_needs_classes_and_size():
    with pytest.raises(ConfigError, match="regression"):
        load_dataset("boston", train_samples=10, balanced=True)
    with pytest.raises(ConfigError, match="needs train_samples"):
        load_dataset("iris", balanced=True)


def test_random_subset_sizes_and_seed():
    a = load_dataset("xor", train_samples=50, test_samples=30, seed=1)
    b = load_dataset("xor", train_samples=50, test_samples=30, seed=1)
    c = load_dataset("xor", train_samples=50, test_samples=30, seed=2)
    assert a.x_train.shape == (50, 2) and a.x_test.shape == (30, 2)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_train, c.x_train)


def test_subset_rows_come_from_the_scaled_full_split():
    """Scaling uses the whole split, so a subset holds the same rows as the full set."""
    full = load_dataset("boston")
    part = load_dataset("boston", train_samples=50, test_samples=20, seed=4)
    full_rows = {tuple(r) for r in np.concatenate([full.x_train, full.y_train], axis=1)}
    for row in np.concatenate([part.x_train, part.y_train], axis=1):
        assert tuple(row) in full_rows
    assert part.y_train.shape == (50, 1) and part.x_test.shape == (20, 13)


def test_too_many_samples():
    with pytest.raises(DataError, match="2002 samples were asked from the training split of "
                                        "sinc, which holds only 2001"):
        load_dataset("sinc", train_samples=2002)
    with pytest.raises(DataError, match="test split of iris, which holds only 45"):
        load_dataset("iris", test_samples=46)
    assert load_dataset("sinc", train_samples=3000, replace=True).x_train.shape == (3000, 1)


def test_random_subset_with_replacement_can_exceed():
    rows = random_subset(5, 12, np.random.default_rng(0), replace=True)
    assert rows.shape == (12,) and rows.max() < 5


@pytest.mark.parametrize("bad", [0, -3, 2.5, "10", True])
def test_bad_sample_counts(bad):
    with pytest.raises(ConfigError, match="train_samples must be a positive integer"):
        load_dataset("iris", train_samples=bad)
    with pytest.raises(ConfigError, match="test_samples must be a positive integer"):
        load_dataset("iris", test_samples=bad)


def test_cifar_paper_subset(tmp_path):
    """Group C: m images, m/10 per class, drawn with replacement; full test set."""
    write_tiny_cifar(tmp_path, n_train=30, n_test=12)
    ds = load_dataset("cifar10", data_dir=tmp_path, train_samples=40, balanced=True,
                      replace=True, seed=5)
    assert ds.x_train.shape == (40, 32, 32, 3) and ds.x_test.shape == (12, 32, 32, 3)
    assert np.bincount(ds.labels_train, minlength=10).tolist() == [4] * 10
    assert ds.x_train.dtype == np.float64 and 0 <= ds.x_train.min() <= ds.x_train.max() <= 1
