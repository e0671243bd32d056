"""zorb.kernels.squash: the one-pass Sigmoid/Tanh inverse and the one-pass global extremes, checked against
extended precision, numpy and the layers' JAX code."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernel_fixtures import custom_calls
from zorb.kernels import squash


def numpy_map(t, lo, hi, a, b):
    """SquashingLayer's affine map in numpy (no fused multiply-add, as squash.cc computes it)."""
    return a + (t - lo) * ((b - a) / (hi - lo))


@pytest.mark.parametrize("tanh,cols", [(True, 40), (False, 40), (True, 1000), (False, 1000)])
def test_squash_inverse_kernel_is_within_two_ulp_of_extended_precision(tanh, cols, rng):
    """The one-pass Sigmoid/Tanh inverse (squash.cc): the map onto the margins computed as
    numpy computes it, then atanh/logit within 2 ulp of an 80-bit longdouble reference, with
    the shift subtracted exactly; across the range, near its ends and near the middle; rows
    shorter than the kernel's blocks of 256 values and rows of several blocks and a part."""
    low = -1.0 if tanh else 0.0
    a, b = low + 1e-15, 1.0 - 1e-15
    t = np.concatenate([rng.uniform(-3, 5, 30000), -3 + 10.0 ** -rng.uniform(0, 15, 5000),
                        5 - 10.0 ** -rng.uniform(0, 15, 4997), [-3.0, 5.0, 1.0]]).reshape(-1, cols)
    shift = rng.normal(size=cols)

    def kernel(t, s=None):  # `reference` is the branch for other platforms (traced, not run here)
        return squash.squash_inverse(t, jnp.asarray([-3.0, 5.0]), a, b, tanh=tanh, shift=s, reference=jnp.negative)

    assert custom_calls(kernel, t, shift) == 1
    got = np.asarray(jax.jit(kernel)(t, shift))
    unshifted = np.asarray(jax.jit(kernel)(t))
    np.testing.assert_array_equal(got, unshifted - shift)
    z = numpy_map(t, -3.0, 5.0, a, b).astype(np.longdouble)
    exact = np.arctanh(z) if tanh else np.where(z >= 0.5, np.log1p((2 * z - 1) / (1 - z)), -np.log1p((1 - 2 * z) / z))
    error = np.abs(unshifted.astype(np.longdouble) - exact) / np.spacing(np.abs(exact.astype(np.float64)))
    error[exact == 0] = np.abs(unshifted[exact == 0])
    assert float(error.max()) <= 2


@pytest.mark.parametrize("shape", [(1,), (15,), (16,), (17, 3), (300, 70), (700, 1000)])
def test_extrema_equal_numpy_min_and_max(shape, rng):
    """One pass for both extremes (squash.cc), against numpy: lengths below, at and past the
    kernel's 16-value step, and arrays the pool splits between workers (700,000 values); the
    extremes placed first, last and in the middle; any NaN makes both NaN, infinities count."""
    x = rng.normal(size=shape)
    assert custom_calls(squash.extrema, x) == 1
    extrema = jax.jit(squash.extrema)
    flat = x.reshape(-1)
    for low, high in [(0, flat.size - 1), (flat.size - 1, 0), (flat.size // 2, flat.size // 3)]:
        y = flat.copy()
        if flat.size > 1:
            y[low], y[high] = -50.0, 60.0
        lo, hi = extrema(y.reshape(shape))
        assert (float(lo), float(hi)) == (y.min(), y.max())
    y = flat.copy()
    y[-1] = np.inf
    assert float(extrema(y)[1]) == np.inf
    y[flat.size // 2] = np.nan
    assert np.isnan(np.asarray(extrema(y))).all()
    assert [float(v) for v in extrema(x.astype(np.float32))] == [x.astype(np.float32).min(), x.astype(np.float32).max()]


@pytest.mark.parametrize("cls_name", ["Tanh", "Sigmoid"])
def test_layer_inverse_takes_the_kernel_and_agrees_with_its_jax_code(cls_name, rng):
    from zorb.core import layers

    cls = getattr(layers, cls_name)
    t = rng.normal(loc=1.0, scale=4.0, size=(300, 70))
    bias = rng.normal(size=70)
    layer = cls.build((70,), jax.random.key(0), jnp.float64).with_range(jnp.asarray(t.min()), jnp.asarray(t.max()))
    assert custom_calls(lambda t, s: layer.inverse_in_range(t, s), t, bias) == 1
    got = np.asarray(jax.jit(lambda t, s: layer.inverse_in_range(t, s))(t, bias))
    reference = np.asarray(jax.jit(lambda t: layer._inverse_in_range(t))(t)) - bias
    # XLA may contract the map into fused multiply-adds; near the margins atanh/logit amplify
    # that last-bit difference of z by up to 1 / (1 - |z|) ~ 1e5
    np.testing.assert_allclose(got, reference, rtol=1e-9, atol=1e-12)
    constant = cls.build((70,), jax.random.key(0), jnp.float64).with_range(jnp.asarray(2.0), jnp.asarray(2.0))
    np.testing.assert_array_equal(np.asarray(jax.jit(constant.inverse_in_range)(t)),
                                  np.asarray(jax.jit(constant._inverse_in_range)(t)))
