"""zorb.kernels.native: every native kernel against its pure-JAX equivalent on the same inputs,
the choice between them (extension on or off, float64, CPU or another platform), and a whole
fit with the extension turned off against the native fit."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from kernel_fixtures import custom_calls, run_python
from zorb.kernels import conv, native, products, solve, squash


def solve_reference(rcond, ridge):
    from zorb.core.solvers import _solve_from_gram_xla

    return lambda gram, moment: _solve_from_gram_xla(gram, moment, rcond, ridge)


def patch_moments(k, stride, filters):
    from zorb.core.layers.conv2d import extract_patches
    from zorb.core.solvers import gram_moments

    def reference(x, t):
        patches = extract_patches(x, k, stride)
        return gram_moments(patches.reshape(-1, patches.shape[-1]), t.reshape(-1, filters), bias=True)

    return reference


def squash_layer(kind, t):
    from zorb.core import layers

    cls = {"tanh": layers.Tanh, "sigmoid": layers.Sigmoid}[kind]
    return cls.build((t.shape[1],), jax.random.key(0), jnp.float64).with_range(jnp.asarray(t.min()),
                                                                                 jnp.asarray(t.max()))


# W, and the singular values: those cut are square roots of rounding noise in the eigenvalues
# (about sqrt(eps) of the largest), so they differ at that level between summation orders.
SOLVE_TOLERANCE = (1e-9, 1e-7)


def kernel_cases(rng):
    """Each kernel's public wrapper on inputs that take its native route: (name, function, inputs,
    the tolerance of each output's difference relative to its largest entry)."""
    a, b, square = rng.normal(size=(300, 200)), rng.normal(size=(200, 256)), rng.normal(size=(400, 70))
    low_rank = rng.normal(size=(400, 23)) @ rng.normal(size=(23, 60))
    t = rng.normal(size=(400, 17))
    images, kernel, bias = rng.normal(size=(5, 11, 9, 3)), rng.normal(size=(3, 3, 3, 40)), rng.normal(size=40)
    targets = rng.normal(size=(5, 5, 4, 40))
    squash_target, shift = rng.normal(loc=1.0, scale=4.0, size=(300, 70)), rng.normal(size=70)
    tanh, sigmoid = squash_layer("tanh", squash_target), squash_layer("sigmoid", squash_target)
    return [
        ("matmul", products.matmul, (a, b), 1e-13),
        ("matmul a^T b^T", lambda a, b: products.matmul(a, b, transpose_a=True, transpose_b=True), (a.T, b.T), 1e-13),
        ("gram", products.gram, (square,), 1e-13),
        ("gram rows", lambda x: products.gram(x, rows=True), (square.T,), 1e-13),
        ("eigvalsh", solve.eigvalsh, (square.T @ square,), 1e-13),
        ("gram_solve, nothing cut", lambda g, m: solve.gram_solve(g, m, 1e-6, 0.0, reference=solve_reference(1e-6, 0.0)),
         (square.T @ square, square.T @ t), SOLVE_TOLERANCE),
        ("gram_solve, rank 23 with ridge", lambda g, m: solve.gram_solve(g, m, 1e-6, 0.5,
                                                                          reference=solve_reference(1e-6, 0.5)),
         (low_rank.T @ low_rank, low_rank.T @ t), SOLVE_TOLERANCE),
        ("extrema", lambda x: jnp.stack(squash.extrema(x)), (square,), 0.0),
        # XLA may contract the pure-JAX map into fused multiply-adds; near the margins atanh/logit
        # amplify that last-bit difference by up to 1 / (1 - |z|) ~ 1e5
        ("squash_inverse tanh", tanh.inverse_in_range, (squash_target, shift), 1e-9),
        ("squash_inverse sigmoid rows", lambda t, s: sigmoid.inverse_in_range(t, s, samples_last=True),
         (squash_target.T, shift), 1e-9),
        ("conv2d", lambda x, k, b: conv.conv2d(x, k, 2, b), (images, kernel, bias), 1e-13),
        ("conv_moments", lambda x, t: conv.conv_moments(x, t, 3, 2, reference=patch_moments(3, 2, 40)),
         (images, targets), 1e-12),
    ]


CASE_NAMES = [case[0] for case in kernel_cases(np.random.default_rng(0))]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_native_and_pure_jax_paths_agree_on_every_kernel(name, rng, monkeypatch):
    """The same inputs through the native kernel and through its pure-JAX equivalent (what runs
    without the extension): results equal to rounding; only the first calls the extension."""
    _, function, inputs, tolerance = next(case for case in kernel_cases(rng) if case[0] == name)

    def traced_now(*args):  # a new function each time: jit traces it afresh, reading NATIVE now
        return function(*args)

    monkeypatch.setattr(native, "GEMM_NATIVE", True)  # the dgemm route, whichever this CPU's fits take
    assert custom_calls(traced_now, *inputs) >= 1
    got = jax.tree.leaves(jax.jit(traced_now)(*inputs))
    monkeypatch.setattr(native, "NATIVE", False)

    def traced_now(*args):
        return function(*args)

    assert custom_calls(traced_now, *inputs) == 0
    expected = jax.tree.leaves(jax.jit(traced_now)(*inputs))
    assert len(got) == len(expected)
    tolerances = tolerance if isinstance(tolerance, tuple) else (tolerance,) * len(got)
    for g, e, tolerance in zip(got, expected, tolerances, strict=True):
        g, e = np.asarray(g), np.asarray(e)
        assert g.dtype == e.dtype == np.float64 and g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=0, atol=tolerance * np.abs(e).max())


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_other_platforms_lower_every_kernel_to_its_pure_jax_equivalent(platform, rng, monkeypatch):
    """On a GPU or TPU the same jitted function runs the pure-JAX code: lowered for that platform
    (no device needed), no kernel calls the extension; lowered for the CPU, each one does."""
    monkeypatch.setattr(native, "GEMM_NATIVE", True)
    for name, function, inputs, _ in kernel_cases(rng):
        module = export.export(jax.jit(function), platforms=[platform])(*inputs).mlir_module()
        assert "zorb_" not in module, name
        assert "zorb_" in jax.jit(function).lower(*inputs).as_text(), name


def test_other_dtypes_take_the_pure_jax_path(rng):
    a, b = (jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in ((300, 200), (200, 256)))
    images, kernel = (jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in ((2, 9, 9, 3), (3, 3, 3, 32)))
    for function, inputs in [(products.matmul, (a, b)), (products.gram, (a,)), (solve.eigvalsh, (a.T @ a,)),
                             (lambda x: jnp.stack(squash.extrema(x)), (a,)), (lambda x, k: conv.conv2d(x, k, 1),
                                                                             (images, kernel))]:
        assert custom_calls(function, *inputs) == 0
        assert jax.jit(function)(*inputs).dtype == jnp.float32


def test_the_extension_is_built_and_loaded():
    """An install that failed to compile the extension would silently run the pure-JAX path."""
    assert native.NATIVE and native.EXTENSION is not None
    assert native.EXTENSION.__name__ == "zorb.kernels._native"
    assert sorted(native.EXTENSION.handlers()) == sorted(
        f"zorb_{name}_f64" for name in ("matmul", "gram", "eigvalsh", "gram_solve", "extrema", "squash_inverse",
                                         "conv2d", "conv_moments"))


OFF_CHECK = """
import jax, jax.numpy as jnp, zorb.core
from zorb.kernels import conv, native, products, solve, squash
a = jnp.ones((300, 200)); b = jnp.ones((200, 256))
calls = sum(jax.jit(f).lower(*x).compile().as_text().count('zorb_') for f, x in [
    (products.matmul, (a, b)), (products.gram, (a,)), (solve.eigvalsh, (a.T @ a,)),
    (squash.extrema, (a,)), (lambda x, k: conv.conv2d(x, k, 1), (jnp.ones((2, 9, 9, 3)), jnp.ones((3, 3, 3, 32))))])
print(native.NATIVE, native.EXTENSION, native.SHARED_POOL, calls, float(products.matmul(a, b)[0, 0]))
"""


def test_zorb_native_blas_0_turns_the_extension_off():
    assert run_python(OFF_CHECK, ZORB_NATIVE_BLAS="0") == ["False", "None", "False", "0", "200.0"]


# An mnist-like dense network on random 14 x 14 "images" whose labels a random linear teacher
# decides: large enough that its products take the native routes (and the samples-last layout).
# The ridge keeps every solve continuous in its inputs: without it, a direction whose singular
# value lies near the cut is kept by one summation order and dropped by the other, and the two
# fits differ by far more than rounding (1e-4 in the outputs at rcond=1e-6).
FIT = """
import numpy as np, zorb
rng = np.random.default_rng(7)
x = rng.uniform(size=(5000, 196))
y = np.eye(10)[np.argmax(x @ rng.normal(size=(196, 10)), axis=1)]
specs = [{"type": "dense", "units": 100}, {"type": "tanh"}, {"type": "dense", "units": 40}, {"type": "sigmoid"},
         {"type": "dense", "units": "outputs"}, {"type": "softmax"}]
network = zorb.build_network(specs, (196,), output_dim=10, seed=3)
fitted, report = zorb.fit(network, x, y, solver="gram", rcond=1e-7, ridge=1e-3)
scores = zorb.evaluate(fitted, x, y)
"""


def test_a_whole_fit_without_the_extension_equals_the_native_fit(tmp_path):
    """The same fit in a process with ``ZORB_NATIVE_BLAS=0`` (every kernel its pure-JAX
    equivalent) and in this one (native): the same ranks, weights, outputs and scores, to
    rounding as the solves amplify it."""
    path = tmp_path / "pure_jax.zorb"
    code = FIT + (f"zorb.save(fitted, {str(path)!r})\nfrom zorb.kernels import native\n"
                  "import json; print(native.NATIVE, json.dumps([[r.rank for r in report.layers], scores], separators=(',', ':')))")
    off, pure_jax_summary = run_python(code, timeout=300, ZORB_NATIVE_BLAS="0")
    assert off == "False"
    import zorb

    namespace = {}
    exec(FIT, namespace)
    assert native.NATIVE
    fitted, report, scores = namespace["fitted"], namespace["report"], namespace["scores"]
    ranks, pure_jax_scores = json.loads(pure_jax_summary)
    assert [r.rank for r in report.layers] == ranks
    assert scores["accuracy"] > 0.5  # it learned something, so the comparison means something
    for key, value in scores.items():
        assert value == pytest.approx(pure_jax_scores[key], rel=1e-8), key
    x = namespace["x"]
    np.testing.assert_allclose(zorb.predict(fitted, x), zorb.predict(zorb.load(path), x), rtol=0, atol=1e-6)
    for got, expected in zip(fitted.weights, zorb.load(path).weights, strict=True):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * np.abs(expected).max())
