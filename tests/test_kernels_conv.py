"""zorb.kernels.conv: the Conv2D forward pass and the moments of its gram solve, checked against XLA's
convolution and the patch matrix, at every vector width this CPU runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernel_fixtures import run_python
from zorb.kernels import conv


CONV_CASES = [((5, 11, 9, 3), 3, 1, 32), ((4, 12, 10, 2), 3, 2, 5), ((3, 8, 8, 4), 2, 2, 45), ((6, 7, 7, 1), 1, 1, 8),
              ((2, 9, 9, 3), 4, 3, 70)]


@pytest.mark.parametrize("shape,k,stride,filters", CONV_CASES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_conv2d_kernel_matches_xla_convolution(shape, k, stride, filters, with_bias, rng):
    """Channel counts that are, and are not, multiples of the kernel's 32- and 8-wide blocks."""
    x = rng.normal(size=shape)
    kernel = rng.normal(size=(k, k, shape[3], filters))
    bias = rng.normal(size=filters) if with_bias else None
    convolve = jax.jit(lambda x, kernel, bias: conv.conv2d(x, kernel, stride, bias))
    assert convolve.lower(x, kernel, bias).compile().as_text().count('custom_call_target="zorb_conv2d_f64"') == 1
    expected = conv.jax_conv2d(jnp.asarray(x), jnp.asarray(kernel), stride, None if bias is None else jnp.asarray(bias))
    got = np.asarray(convolve(x, kernel, bias))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13 * np.abs(expected).max())


@pytest.mark.parametrize("argnums", [(0, 1, 2), (1, 2), (0,), (1,)])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv2d_gradients_equal_xla_gradients(argnums, stride, rng):
    """Through the patch-product JVP, for every subset of differentiated arguments (the input
    images alone not differentiated: Adam's first layer), against XLA's convolution."""
    x, kernel, bias = rng.normal(size=(3, 9, 9, 2)), rng.normal(size=(3, 3, 2, 4)), rng.normal(size=4)

    def loss(conv):
        return lambda x, kernel, bias: jnp.sum(jnp.tanh(conv(x, kernel, bias)) ** 2)

    ours = jax.jit(jax.grad(loss(lambda x, k, b: conv.conv2d(x, k, stride, b)), argnums=argnums))(x, kernel, bias)
    xla = jax.grad(loss(lambda x, k, b: conv.jax_conv2d(x, k, stride, b)), argnums=argnums)(x, kernel, bias)
    for a, b in zip(ours, xla):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    tangents = (rng.normal(size=x.shape), rng.normal(size=kernel.shape), rng.normal(size=bias.shape))
    _, ours = jax.jvp(lambda x, k, b: conv.conv2d(x, k, stride, b), (x, kernel, bias), tangents)
    _, xla = jax.jvp(lambda x, k, b: conv.jax_conv2d(x, k, stride, b), (x, kernel, bias), tangents)
    np.testing.assert_allclose(ours, xla, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape,k,stride,filters", CONV_CASES)
def test_conv_moments_kernel_equals_the_patch_matrix_moments(shape, k, stride, filters, rng):
    """[M, 1]^T [M, 1] and [M, 1]^T T without the patch matrix M, against gram_moments of M."""
    from zorb.core.layers.conv2d import extract_patches
    from zorb.core.solvers import gram_moments

    x = rng.normal(size=shape)
    out = ((shape[1] - k) // stride + 1, (shape[2] - k) // stride + 1)
    t = rng.normal(size=(shape[0], *out, filters))

    def reference(x, t):
        patches = extract_patches(x, k, stride)
        return gram_moments(patches.reshape(-1, patches.shape[-1]), t.reshape(-1, filters), bias=True)

    moments = jax.jit(lambda x, t: conv.conv_moments(x, t, k, stride, reference=reference))
    assert moments.lower(x, t).compile().as_text().count('custom_call_target="zorb_conv_moments_f64"') == 1
    gram, moment = map(np.asarray, moments(x, t))
    want_gram, want_moment = map(np.asarray, jax.jit(reference)(x, t))
    np.testing.assert_array_equal(gram, gram.T)
    np.testing.assert_allclose(gram, want_gram, rtol=0, atol=1e-12 * np.abs(want_gram).max())
    np.testing.assert_allclose(moment, want_moment, rtol=0, atol=1e-12 * np.abs(want_moment).max())


CONV_WIDTHS_CHECK = """
import numpy as np, jax, jax.numpy as jnp, zorb.core
from zorb.kernels import conv, _native
from zorb.core.layers.conv2d import extract_patches
from zorb.core.solvers import gram_moments
rng = np.random.default_rng(0)
worst = 0.0
for shape, k, stride, filters in CASES:
    x = rng.normal(size=shape)
    kernel, bias = rng.normal(size=(k, k, shape[3], filters)), rng.normal(size=filters)
    got = jax.jit(lambda x, w, b: conv.conv2d(x, w, stride, b))(x, kernel, bias)
    want = conv.jax_conv2d(jnp.asarray(x), jnp.asarray(kernel), stride, jnp.asarray(bias))
    worst = max(worst, float(jnp.abs(got - want).max() / jnp.abs(want).max()))
    t = rng.normal(size=want.shape)
    def reference(x, t):
        patches = extract_patches(x, k, stride)
        return gram_moments(patches.reshape(-1, patches.shape[-1]), t.reshape(-1, filters), bias=True)
    for a, b in zip(jax.jit(lambda x, t: conv.conv_moments(x, t, k, stride, reference=reference))(x, t),
                    jax.jit(reference)(x, t)):
        worst = max(worst, float(jnp.abs(a - b).max() / jnp.abs(b).max()))
print(_native.vector_lanes(), worst)
"""


def test_conv_kernels_agree_at_every_vector_width_this_cpu_runs():
    """The conv kernels are compiled for 8 (AVX-512), 4 (AVX2) and 2 (baseline) lanes with a
    register block each; ZORB_VECTOR_LANES runs the narrower ones, each in a fresh process,
    against XLA's convolution and the patch matrix's moments."""
    from zorb.kernels import _native

    widest = _native.vector_lanes()
    for lanes in [w for w in (2, 4, 8) if w <= widest]:
        used, worst = run_python(f"CASES = {CONV_CASES!r}\n" + CONV_WIDTHS_CHECK, ZORB_VECTOR_LANES=str(lanes))
        assert int(used) == lanes
        assert float(worst) < 1e-12, (lanes, worst)


def test_conv_gram_fit_with_fused_moments_equals_the_patch_matrix_route(monkeypatch, rng):
    import zorb
    from zorb.core.layers import conv2d as conv_module

    specs = [{"type": "conv2d", "filters": 6, "kernel_size": 3}, {"type": "sigmoid"},
             {"type": "conv2d", "filters": 5, "kernel_size": 2, "stride": 2, "bias": False}, {"type": "tanh"},
             {"type": "flatten"}, {"type": "dense", "units": "outputs"}, {"type": "softmax"}]
    x = rng.uniform(size=(60, 11, 11, 2))
    y = np.eye(3)[rng.integers(0, 3, 60)]
    net = zorb.build_network(specs, (11, 11, 2), output_dim=3, seed=4)
    fused, fused_report = zorb.fit(net, x, y, solver="gram", rcond=1e-6)
    monkeypatch.setattr(conv_module, "FUSED_MOMENTS_MAX", 0)
    patches, patches_report = zorb.fit(net, x, y, solver="gram", rcond=1e-6)
    for a, b in zip(fused.weights, patches.weights):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-8 * np.abs(b).max())
    assert [r.rank for r in fused_report.layers] == [r.rank for r in patches_report.layers]
