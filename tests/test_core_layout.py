"""The in-memory fit on transposed arrays (one sample per column) gives the row layout's fit."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zorb
from zorb.core.layers.activations import ReLU, Sigmoid, Softmax, Tanh
from zorb.core.layers.dense import Dense

fit_module = importlib.import_module("zorb.core.fit")

DENSE = [{"type": "dense", "units": 40}, {"type": "tanh"}, {"type": "dense", "units": 30}, {"type": "relu"},
         {"type": "dense", "units": 20}, {"type": "sigmoid"}, {"type": "dense", "units": "outputs"},
         {"type": "softmax"}]


def relative(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def fit_in(layout_rows: int, monkeypatch, *args, **kwargs):
    monkeypatch.setattr(fit_module, "SAMPLES_LAST_MIN_ROWS", layout_rows)
    return zorb.fit(*args, **kwargs)


@pytest.mark.parametrize("solver,rcond,tolerance", [("qr", 1e-12, 1e-9), ("svd", 1e-12, 1e-9), ("gram", 1e-7, 1e-5)])
def test_samples_last_fit_equals_the_row_layout_fit(solver, rcond, tolerance, monkeypatch, rng):
    x = rng.uniform(size=(700, 30))
    y = np.eye(4)[(x[:, :4] ** 2).argmax(axis=1)]
    net = zorb.build_network(DENSE, (30,), output_dim=4, seed=2)
    assert fit_module._samples_last(net, 700) is False  # below SAMPLES_LAST_MIN_ROWS
    rows, rows_report = fit_in(10 ** 9, monkeypatch, net, x, y, solver=solver, rcond=rcond, seed=5)
    monkeypatch.setattr(fit_module, "SAMPLES_LAST_MIN_ROWS", 0)
    assert fit_module._samples_last(net, 700)
    cols, cols_report = zorb.fit(net, x, y, solver=solver, rcond=rcond, seed=5)
    for a, b in zip(cols.weights, rows.weights):
        assert relative(a, b) < tolerance
    # Below its cut the gram route's singular values are rounding noise, the square roots of
    # eigenvalues of order eps * s_max^2 (up to 1.5e-8 s_max): they agree only in being small.
    floor = rcond if solver == "gram" else 1e-10
    for a, b in zip(cols_report.layers, rows_report.layers):
        assert a.design_shape == b.design_shape and a.rank == b.rank
        np.testing.assert_allclose(a.spectrum, b.spectrum, rtol=1e-6, atol=floor * b.spectrum[0])
    for a, b in zip(cols.layers, rows.layers):  # Sigmoid/Tanh ranges and the softmax normalisers
        for name, value in b.arrays().items():
            assert np.asarray(a.arrays()[name]).shape == np.asarray(value).shape
            assert relative(a.arrays()[name], value) < tolerance
    np.testing.assert_allclose(zorb.predict(cols, x), zorb.predict(rows, x), rtol=0, atol=100 * tolerance)


def test_samples_last_is_chosen_for_large_dense_float64_fits_only():
    dense = zorb.build_network(DENSE, (30,), output_dim=4, seed=0)
    conv = zorb.build_network([{"type": "conv2d", "filters": 2, "kernel_size": 3}, {"type": "flatten"},
                               {"type": "dense", "units": "outputs"}], (6, 6, 1), output_dim=3, seed=0)
    single = zorb.build_network(DENSE, (30,), output_dim=4, seed=0, dtype="float32")
    big = fit_module.SAMPLES_LAST_MIN_ROWS
    from zorb.kernels import native

    assert fit_module._samples_last(dense, big) == (native.GEMM_NATIVE and jax.default_backend() == "cpu")
    assert not fit_module._samples_last(dense, big - 1)
    assert not fit_module._samples_last(conv, big)
    assert not fit_module._samples_last(single, big)


@pytest.mark.parametrize("layer_case", ["dense", "tanh", "sigmoid", "relu", "softmax"])
def test_layers_on_transposed_arrays_give_the_transposed_results(layer_case, rng):
    """forward, observe and inverse with samples_last=True on A^T equal their row results, transposed."""
    n, d = 300, 7
    key = jax.random.key(0)
    h = jnp.asarray(rng.normal(size=(n, d)))
    t = jnp.asarray(rng.uniform(0.05, 0.9, size=(n, d)))
    if layer_case == "dense":
        layer = Dense.build((d,), jax.random.key(1), jnp.float64, units=5)
        aux = layer.prepare_inverse(jnp.asarray(1e-12))
        t = jnp.asarray(rng.normal(size=(n, 5)))
    elif layer_case == "softmax":
        layer = Softmax.build((d,), key, jnp.float64)
        _, layer = layer.observe(h)
        t = t / t.sum(axis=1, keepdims=True)
        aux = None
    else:
        cls = {"tanh": Tanh, "sigmoid": Sigmoid, "relu": ReLU}[layer_case]
        layer = cls.build((d,), key, jnp.float64)
        aux = None
        if layer_case == "relu":
            t = t - 0.5  # negative entries take the random inverse
    np.testing.assert_array_equal(layer.forward(h.T, samples_last=True), layer.forward(h).T)
    y_rows, observed_rows = layer.observe(h)
    y_cols, observed_cols = layer.observe(h.T, samples_last=True)
    np.testing.assert_array_equal(y_cols, y_rows.T)
    for name, value in observed_rows.arrays().items():
        np.testing.assert_array_equal(observed_cols.arrays()[name], value)
    inverted_rows, fitted_rows = observed_rows.inverse(t, aux, key, 3)
    inverted_cols, fitted_cols = observed_cols.inverse(t.T, aux, key, 3, samples_last=True)
    np.testing.assert_allclose(inverted_cols, inverted_rows.T, rtol=1e-13, atol=1e-13)
    for name, value in fitted_rows.arrays().items():
        np.testing.assert_array_equal(fitted_cols.arrays()[name], value)


@pytest.mark.parametrize("cls", [Tanh, Sigmoid])
def test_squash_inverse_subtracts_a_shift_per_row_on_transposed_arrays(cls, rng):
    layer = cls.build((600,), jax.random.key(0), jnp.float64).with_range(jnp.asarray(-0.3), jnp.asarray(0.8))
    t = jnp.asarray(rng.uniform(-0.3, 0.8, size=(500, 600)))
    shift = jnp.asarray(rng.normal(size=600))
    rows = layer.inverse_in_range(t, shift)
    cols = layer.inverse_in_range(t.T, shift, samples_last=True)
    np.testing.assert_array_equal(cols, rows.T)
