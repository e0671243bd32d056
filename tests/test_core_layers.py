"""Layers: inverses composed with forwards, Conv2D against naive loops, ReLU inverse modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zorb.core.layers import (LAYERS, Conv2D, Dense, ReLU, Sigmoid, Softmax, Tanh, average_patches, extract_patches,
                         sum_patches)
from zorb.errors import ConfigError
from zorb.kernels.special import log1p_nonnegative

KEY = jax.random.key(0)


def build(cls, in_shape, **options):
    return cls.build(in_shape, KEY, jnp.float64, **options)


def assert_float64(*arrays):
    for array in jax.tree_util.tree_leaves(arrays):
        assert array.dtype == jnp.float64, array.dtype


@pytest.mark.parametrize("cls", [Sigmoid, Tanh])
def test_squashing_forward_of_inverse_recovers_target(cls, rng):
    t = jnp.asarray(rng.normal(loc=3.0, scale=5.0, size=(50, 7)))
    layer = build(cls, (7,))
    assert layer.output_range is None
    h, fitted = layer.inverse(t, None, None)
    assert_float64(h, fitted.output_range)
    np.testing.assert_array_equal(fitted.output_range, [t.min(), t.max()])
    # The inverse only moves T by the affine map onto the eps margins, which forward undoes.
    np.testing.assert_allclose(fitted.forward(h), t, rtol=0, atol=1e-9 * float(t.max() - t.min()))
    # Extremes land exactly on the margins.
    z = fitted.function(h)
    assert float(z.min()) == pytest.approx(cls.low + layer.eps, abs=1e-12)
    assert float(z.max()) == pytest.approx(cls.high - layer.eps, abs=1e-12)


def ulps(got, exact):
    """|got - exact| in units of the float64 spacing at ``exact`` (an 80-bit longdouble)."""
    return np.abs(np.asarray(got).astype(np.longdouble) - exact) / np.spacing(np.abs(exact.astype(np.float64)))


def open_unit_interval(rng):
    """(0, 1): uniform, tiny (down to 1e-300, normal numbers only), within 1e-15 of 1, and 1/2."""
    return np.concatenate([rng.uniform(0, 1, 20000)[1:], 10.0 ** rng.uniform(-300, 0, 20000),
                           1 - 10.0 ** -rng.uniform(0.3, 15.5, 20000), [0.5, 0.5 + 2 ** -52, 0.25]])


def test_log1p_is_within_one_ulp_of_extended_precision(rng):
    u = np.concatenate([10.0 ** rng.uniform(-300, 300, 40000), rng.uniform(0, 4, 20000), [0.0, 1.0, 2 ** -53]])
    got = np.asarray(log1p_nonnegative(jnp.asarray(u)))
    assert got.dtype == np.float64
    assert float(ulps(got, np.log1p(u.astype(np.longdouble))).max()) <= 1
    special = np.asarray(log1p_nonnegative(jnp.asarray([np.inf, np.nan])))
    assert special[0] == np.inf and np.isnan(special[1])


def test_tanh_inverse_is_within_two_ulp_of_extended_precision(rng):
    """atanh by one log1p, against numpy's 80-bit ``longdouble`` arctanh: across (-1, 1), tiny
    magnitudes and values within 1e-15 of the ends (XLA's own arctanh is off by up to 128 ulp)."""
    magnitudes = np.concatenate([open_unit_interval(rng), [0.0]])
    z = np.concatenate([magnitudes, -magnitudes])
    got = np.asarray(Tanh.function_inverse(jnp.asarray(z)))
    assert got.dtype == np.float64
    error = ulps(got, np.arctanh(z.astype(np.longdouble)))
    assert float(error.max()) <= 2, z[np.argmax(error)]
    assert np.array_equal(np.signbit(got), np.signbit(z))  # atanh(-0) = -0


def test_sigmoid_inverse_is_within_two_ulp_of_extended_precision(rng):
    """The logit, near 0, 1 and 1/2 alike (log(z / (1 - z)) was off by 1,400 ulp near 1/2)."""
    z = open_unit_interval(rng)
    # In longdouble, by the identities logit(z) = log1p((2z - 1) / (1 - z)) = -log1p((1 - 2z) / z),
    # each on the side where it has no cancellation (log(z / (1 - z)) itself, even in 80 bits,
    # is off by several float64 ulp next to 1/2, where the ratio nears 1).
    x = z.astype(np.longdouble)
    with np.errstate(divide="ignore"):  # np.where evaluates both sides everywhere
        exact = np.where(x >= 0.5, np.log1p((2 * x - 1) / (1 - x)), -np.log1p((1 - 2 * x) / x))
    got = np.asarray(Sigmoid.function_inverse(jnp.asarray(z)))
    error = ulps(got, exact)
    error[exact == 0] = np.abs(got[exact == 0])
    assert float(error.max()) <= 2, z[np.argmax(error)]


@pytest.mark.parametrize("cls", [Sigmoid, Tanh])
def test_squashing_constant_target_gives_finite_values(cls):
    t = jnp.full((4, 3), 0.7)
    h, fitted = build(cls, (3,)).inverse(t, None, None)
    assert bool(jnp.all(jnp.isfinite(h)))
    np.testing.assert_array_equal(fitted.forward(h), t)


@pytest.mark.parametrize("cls", [Sigmoid, Tanh])
def test_squashing_forward_is_plain_until_inverted(cls, rng):
    h = jnp.asarray(rng.normal(size=(5, 3)))
    np.testing.assert_array_equal(build(cls, (3,)).forward(h), cls.function(h))


def test_tanh_scaled_forward_uses_tanh_not_sigmoid(rng):
    t = jnp.asarray(rng.uniform(-2, 5, size=(20, 4)))
    h, fitted = build(Tanh, (4,)).inverse(t, None, None)
    lo, hi, eps = float(t.min()), float(t.max()), fitted.eps
    expected = lo + (hi - lo) * (np.tanh(np.asarray(h)) - (-1 + eps)) / (2 - 2 * eps)
    np.testing.assert_allclose(fitted.forward(h), expected, rtol=1e-12)


def test_softmax_inverse_of_observed_forward_round_trips(rng):
    h = jnp.asarray(rng.normal(scale=3.0, size=(40, 6)))
    layer = build(Softmax, (6,))
    t, observed = layer.observe(h)
    assert_float64(t, observed.max_logit, observed.normalizer)
    np.testing.assert_allclose(observed.max_logit, np.max(np.asarray(h), axis=1), rtol=0, atol=0)
    h_back, _ = observed.inverse(t, None, None)
    np.testing.assert_allclose(h_back, h, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(observed.forward(h_back), t, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(t).sum(axis=1), 1.0, rtol=1e-12)


def test_softmax_eps_must_keep_the_normaliser_positive(rng):
    """s = sum_j exp(h_j - m) - K eps > 1 - K eps: an eps above 1/K lets it vanish or turn
    negative, and the forward pass then ranks the outputs backwards."""
    h = jnp.asarray([[0.0, -3.0, -3.0, -3.0]])
    at_limit = build(Softmax, (4,), eps=0.25)
    assert float(at_limit.forward(h).argmax()) == 0
    assert float(at_limit.observe(h)[1].normalizer[0]) == pytest.approx(3 * np.exp(-3.0), rel=1e-12)
    unchecked = Softmax(in_shape=(4,), eps=0.3)  # what build refuses: s = 3 exp(-3) - 0.2 < 0
    assert float(unchecked.forward(h).argmax()) != 0
    with pytest.raises(ConfigError, match=r"softmax eps must be at most 1/4 for 4 outputs"):
        build(Softmax, (4,), eps=0.26)
    with pytest.raises(ConfigError, match=r"at most 1/10"):
        build(Softmax, (10,), eps=0.3)


def test_dense_inverse_with_invertible_weights_round_trips(rng):
    layer = build(Dense, (5,), units=5)
    w = jnp.asarray(np.vstack([rng.normal(size=(5, 5)) + 3 * np.eye(5), rng.normal(size=(1, 5))]))
    layer = layer.with_weights(w)
    t = jnp.asarray(rng.normal(size=(30, 5)))
    pinv = layer.prepare_inverse(jnp.asarray(1e-15))
    a, _ = layer.inverse(t, pinv, None)
    assert_float64(a, pinv)
    np.testing.assert_allclose(layer.forward(a), t, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(layer.forward(a), np.hstack([np.asarray(a), np.ones((30, 1))]) @ np.asarray(w),
                               rtol=1e-12)


def test_relu_inverse_modes(rng):
    t = jnp.asarray(rng.normal(size=(200, 5)))
    negative = np.asarray(t) < 0
    random_t, _ = build(ReLU, (5,)).inverse(t, None, jax.random.key(3))
    again, _ = build(ReLU, (5,)).inverse(t, None, jax.random.key(3))
    other, _ = build(ReLU, (5,)).inverse(t, None, jax.random.key(4))
    r = np.asarray(random_t)
    np.testing.assert_array_equal(r[~negative], np.asarray(t)[~negative])
    assert np.all((r[negative] <= 0) & (r[negative] > -1))
    np.testing.assert_array_equal(r, again)  # seeded
    assert not np.array_equal(r, other)
    clip, _ = build(ReLU, (5,), inverse="clip").inverse(t, None, None)
    keep, _ = build(ReLU, (5,), inverse="keep").inverse(t, None, None)
    np.testing.assert_array_equal(clip, np.maximum(np.asarray(t), 0))
    np.testing.assert_array_equal(keep, t)
    np.testing.assert_array_equal(build(ReLU, (5,)).forward(random_t), np.maximum(np.asarray(t), 0))
    # Each sample draws from its own key: a block of rows inverted alone gets the same draws.
    block, _ = build(ReLU, (5,)).inverse(t[60:90], None, jax.random.key(3), first_row=60)
    np.testing.assert_array_equal(block, r[60:90])


def naive_patches(x, k, s):
    n, h, w, c = x.shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    out = np.zeros((n, ho, wo, k * k * c))
    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                out[b, i, j] = x[b, i * s:i * s + k, j * s:j * s + k, :].reshape(-1)  # (row, col, channel)
    return out


def naive_average(patches, in_shape, k, s):
    n, ho, wo, _ = patches.shape
    total, count = np.zeros((n, *in_shape)), np.zeros((n, *in_shape))
    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                total[b, i * s:i * s + k, j * s:j * s + k, :] += patches[b, i, j].reshape(k, k, -1)
                count[b, i * s:i * s + k, j * s:j * s + k, :] += 1
    return np.where(count > 0, total / np.maximum(count, 1), 0)


@pytest.mark.parametrize("k,s,shape", [(3, 1, (2, 6, 5, 3)), (3, 2, (2, 7, 8, 2)), (2, 2, (1, 5, 5, 1)),
                                       (2, 3, (2, 7, 7, 2))])
def test_conv2d_matches_naive_loops(k, s, shape, rng):
    x = rng.normal(size=shape)
    patches = extract_patches(jnp.asarray(x), k, s)
    np.testing.assert_array_equal(patches, naive_patches(x, k, s))

    layer = build(Conv2D, shape[1:], filters=4, kernel_size=k, stride=s)
    w = np.asarray(layer.weights)
    y = layer.forward(jnp.asarray(x))
    expected = naive_patches(x, k, s) @ w[:-1] + w[-1]
    assert y.shape == (shape[0], *layer.out_shape)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)

    p = rng.normal(size=patches.shape)
    averaged = average_patches(jnp.asarray(p), shape[1:], k, s)
    np.testing.assert_allclose(averaged, naive_average(p, shape[1:], k, s), rtol=1e-12, atol=1e-14)
    # sum_patches is the exact adjoint of extract_patches: <P(x), p> == <x, P^T(p)>
    assert np.vdot(np.asarray(patches), p) == pytest.approx(
        np.vdot(x, np.asarray(sum_patches(jnp.asarray(p), shape[1:], k, s))), rel=1e-12)
    assert_float64(patches, y, averaged)


def test_conv2d_inverse_averages_dense_inverse_of_each_position(rng):
    layer = build(Conv2D, (6, 6, 2), filters=3, kernel_size=3)
    t = jnp.asarray(rng.normal(size=(2, 4, 4, 3)))
    pinv = layer.prepare_inverse(jnp.asarray(1e-15))
    a, _ = layer.inverse(t, pinv, None)
    w = np.asarray(layer.weights)
    per_patch = (np.asarray(t).reshape(-1, 3) - w[-1]) @ np.linalg.pinv(w[:-1])
    np.testing.assert_allclose(a, naive_average(per_patch.reshape(2, 4, 4, 18), (6, 6, 2), 3, 1), rtol=1e-10,
                               atol=1e-12)


def test_every_layer_returns_float64(rng):
    shapes = {"dense": (6,), "conv2d": (5, 5, 2), "flatten": (3, 2), "softmax": (6,)}
    options = {"dense": {"units": 4}, "conv2d": {"filters": 2, "kernel_size": 2}, "quantize": {"levels": 4}}
    for kind, cls in LAYERS.items():
        shape = shapes.get(kind, (6,))
        layer = build(cls, shape, **options.get(kind, {}))
        x = jnp.asarray(rng.normal(size=(3, *shape)))
        y, observed = layer.observe(x)
        aux = layer.prepare_inverse(jnp.asarray(1e-15)) if layer.parametric else None
        t_in, inverted = observed.inverse(jnp.asarray(np.abs(rng.normal(size=y.shape))) * 0.1, aux,
                                          jax.random.key(0))
        assert t_in.shape == x.shape
        assert_float64(y, t_in, observed, inverted)
