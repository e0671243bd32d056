"""Generated datasets match their definitions in PAPER_EXPERIMENTS.md."""

from __future__ import annotations

import numpy as np
import pytest

from zorb.data import load_dataset
from zorb.data.synthetic import make_two_spirals, make_xor, sinc, sinc_grid, symmetric_sinc_grid


def assert_same(a, b):
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_sinc_grid():
    ds = load_dataset("sinc")
    assert ds.task == "regression" and ds.num_classes is None and ds.labels_train is None
    assert ds.x_train.shape == ds.y_train.shape == (2001, 1)
    assert ds.x_test.shape == ds.y_test.shape == (6001, 1)
    x = ds.x_train[:, 0]
    assert x[0] == -10.0 and x[-1] == 10.0 and x[1000] == 0.0
    np.testing.assert_allclose(np.diff(x), 0.01, rtol=0, atol=1e-12)
    # The paper's code's grid: within rounding of k / 100, asymmetric about 0 by its rounding.
    for points, limit, skew in ((x, 1000, 2.1e-13), (ds.x_test[:, 0], 3000, 4.7e-12)):
        np.testing.assert_allclose(points, np.arange(-limit, limit + 1) / 100, rtol=0, atol=1e-11)
        assert np.max(np.abs(points + points[::-1])) == pytest.approx(skew, rel=0.01)
        assert points[limit - 1] == np.arange(-limit / 100, 0, 0.01)[-1]  # the left half's own last step


def test_sinc_symmetric_grid_is_exact_k_over_100():
    ds = load_dataset("sinc_symmetric")
    for points, limit in ((ds.x_train[:, 0], 1000), (ds.x_test[:, 0], 3000)):
        np.testing.assert_array_equal(points, np.arange(-limit, limit + 1) / 100)  # the double nearest k/100
        np.testing.assert_array_equal(points, -points[::-1])
        np.testing.assert_array_equal(ds.y_test[:, 0], sinc(ds.x_test)[:, 0])


def test_sinc_values():
    ds = load_dataset("sinc")
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        zero = x[:, 0] == 0
        assert zero.sum() == 1 and y[zero, 0] == 1.0
        xs = x[~zero, 0]
        np.testing.assert_allclose(y[~zero, 0], np.sin(xs) / xs, rtol=0, atol=1e-15)
    assert np.all(np.isfinite(sinc(np.array([0.0, 1e-300, -1e-300]))))


def test_sinc_unscaled_and_seed_free():
    assert_same(load_dataset("sinc", seed=0), load_dataset("sinc", seed=7))
    assert load_dataset("sinc").x_test.max() == pytest.approx(30.0, abs=1e-12)


def test_make_xor_rule():
    coords, labels = make_xor(5000, np.random.default_rng(3))
    assert coords.dtype == np.int64 and coords.shape == (5000, 2)
    assert coords.min() == -100 and coords.max() == 100  # both ends drawn in 10,000 values
    expected = np.array([1 if a * b <= 0 else 0 for a, b in coords.tolist()])
    np.testing.assert_array_equal(labels, expected)
    assert set(np.unique(coords)) <= set(range(-100, 101))


def test_xor_dataset():
    ds = load_dataset("xor", seed=4)
    assert ds.task == "binary" and ds.num_classes == 2
    assert ds.x_train.shape == ds.x_test.shape == (1000, 2)
    assert ds.y_train.shape == ds.y_test.shape == (1000, 1)
    # Re-derive: same generator, train first then test, each scaled by its own min/max.
    rng = np.random.default_rng(4)
    for x, y, labels in ((ds.x_train, ds.y_train, ds.labels_train),
                         (ds.x_test, ds.y_test, ds.labels_test)):
        coords, expected = make_xor(1000, rng)
        lo, hi = coords.min(), coords.max()
        np.testing.assert_array_equal(x, (coords - lo) / (hi - lo))
        np.testing.assert_array_equal(labels, expected)
        np.testing.assert_array_equal(y[:, 0], (coords[:, 0] * coords[:, 1] <= 0))
        assert x.min() == 0.0 and x.max() == 1.0


def test_two_spirals_geometry():
    points, labels = make_two_spirals(200, np.random.default_rng(1))
    assert points.shape == (400, 2) and labels.tolist() == [0] * 200 + [1] * 200
    t = np.hypot(points[:, 0], points[:, 1])  # the radius is the spiral parameter
    assert t.min() >= 0 and t.max() <= 780 * 2 * np.pi / 360
    spiral0, spiral1 = points[:200], points[200:]
    np.testing.assert_allclose(spiral0[:, 0], -np.cos(t[:200]) * t[:200], atol=1e-12)
    np.testing.assert_allclose(spiral0[:, 1], np.sin(t[:200]) * t[:200], atol=1e-12)
    np.testing.assert_array_equal(spiral1, -spiral0)
    # t = sqrt(u) * 780 * 2 pi / 360 with u uniform: u is recovered and lies in [0, 1).
    u = (t[:200] / (780 * 2 * np.pi / 360)) ** 2
    assert u.min() >= 0 and u.max() < 1 and 0.35 < u.mean() < 0.65


def test_two_spirals_dataset():
    ds = load_dataset("two_spirals", seed=2)
    assert ds.task == "binary" and ds.num_classes == 2
    assert ds.x_train.shape == (280, 2) and ds.x_test.shape == (120, 2)
    assert np.bincount(ds.labels_train).tolist() == [140, 140]
    assert np.bincount(ds.labels_test).tolist() == [60, 60]
    np.testing.assert_array_equal(ds.y_train[:, 0], ds.labels_train)
    # Unscaled: the points are the generated ones, split between train and test.
    points, _ = make_two_spirals(200, np.random.default_rng(2))
    both = np.concatenate([ds.x_train, ds.x_test])
    np.testing.assert_array_equal(np.sort(both, axis=0), np.sort(points, axis=0))


@pytest.mark.parametrize("name", ["xor", "two_spirals"])
def test_seed_reproduces_bitwise(name):
    assert_same(load_dataset(name, seed=11), load_dataset(name, seed=11))
    a, b = load_dataset(name, seed=11), load_dataset(name, seed=12)
    assert not np.array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_test, b.x_test)


def test_sinc_grid_helpers():
    assert symmetric_sinc_grid(2)[:, 0].tolist() == [-0.02, -0.01, 0.0, 0.01, 0.02]
    np.testing.assert_allclose(sinc_grid(2)[:, 0], [-0.02, -0.01, 0.0, 0.01, 0.02], rtol=0, atol=1e-15)
