"""zorb.kernels.blas: the fit's products through BLAS (XLA FFI) on the CPU, checked against numpy."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zorb.kernels import blas


@pytest.fixture(autouse=True)
def dgemm_on(monkeypatch):
    """These tests check the dgemm route itself, whichever route this machine's fits take
    (``blas.GEMM_NATIVE`` is read when a function is traced)."""
    monkeypatch.setattr(blas, "GEMM_NATIVE", True)


def custom_calls(fn, *args) -> int:
    return jax.jit(fn).lower(*args).compile().as_text().count('custom_call_target="zorb_')


def test_the_extension_is_built_and_used_on_cpu():
    """An install that failed to compile zorb/_blas.cc would silently fall back to XLA."""
    assert blas.NATIVE
    a, b = jnp.ones((300, 200)), jnp.ones((200, 256))
    assert custom_calls(blas.matmul, a, b) == 1
    assert custom_calls(blas.gram, a) == 1


@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_matmul_matches_numpy_for_every_transpose(transpose_a, transpose_b, rng):
    m, k, n = 301, 77, 260  # sizes no kernel blocks evenly
    a = rng.normal(size=(k, m) if transpose_a else (m, k))
    b = rng.normal(size=(n, k) if transpose_b else (k, n))
    expected = (a.T if transpose_a else a) @ (b.T if transpose_b else b)

    def product(a, b):
        return blas.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)

    assert custom_calls(product, a, b) == 1
    got = np.asarray(jax.jit(product)(a, b))
    assert got.dtype == np.float64 and got.shape == (m, n)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13 * np.abs(expected).max())


@pytest.mark.parametrize("rows", [False, True])
def test_gram_matches_numpy_and_is_exactly_symmetric(rows, rng):
    a = rng.normal(size=(333, 70))
    expected = a @ a.T if rows else a.T @ a
    got = np.asarray(jax.jit(lambda a: blas.gram(a, rows=rows))(a))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13 * np.abs(expected).max())
    np.testing.assert_array_equal(got, got.T)


@pytest.mark.parametrize("shape_a,shape_b", [((5000, 3), (3, 400)), ((50, 40), (40, 10)), ((0, 40), (40, 300)),
                                             ((300, 0), (0, 300))])
def test_small_narrow_and_empty_products_stay_in_xla_and_are_right(shape_a, shape_b, rng):
    a, b = rng.normal(size=shape_a), rng.normal(size=shape_b)
    assert custom_calls(blas.matmul, a, b) == 0
    np.testing.assert_allclose(np.asarray(jax.jit(blas.matmul)(a, b)), a @ b, rtol=1e-13, atol=1e-13)


def test_float32_stays_float32_in_xla(rng):
    a = jnp.asarray(rng.normal(size=(300, 200)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(200, 300)), jnp.float32)
    assert custom_calls(blas.matmul, a, b) == 0
    assert blas.matmul(a, b).dtype == jnp.float32
    assert blas.gram(a).dtype == jnp.float32


def test_gradients_through_the_blas_products_equal_xla_gradients(rng):
    a, b = rng.normal(size=(64, 32)), rng.normal(size=(32, 200))

    def loss(product):
        return lambda a, b: jnp.sum(jnp.tanh(product(a, b)) ** 2) + jnp.sum(blas.gram(a) ** 2) / 1e3

    got = jax.grad(loss(blas.matmul), argnums=(0, 1))(a, b)
    expected = jax.grad(lambda a, b: jnp.sum(jnp.tanh(a @ b) ** 2) + jnp.sum((a.T @ a) ** 2) / 1e3,
                        argnums=(0, 1))(a, b)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)


def test_gemm_route_follows_openblas_kernels_and_can_be_forced():
    """dgemm only where OpenBLAS's kernels are as wide as the CPU's (or when forced); the Gram
    matrix always goes through dsyrk."""
    code = ("import jax, jax.numpy as jnp, zorb.core; from zorb.kernels import blas; "
            "a = jnp.ones((300, 200)); b = jnp.ones((200, 256)); "
            "print(blas.GEMM_NATIVE, jax.jit(blas.matmul).lower(a, b).compile().as_text().count('zorb_'), "
            "jax.jit(blas.gram).lower(a).compile().as_text().count('zorb_'))")

    def run(**env):
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, **env}).stdout.split()

    assert run(ZORB_NATIVE_GEMM="1") == ["True", "1", "1"]
    assert run(ZORB_NATIVE_GEMM="0") == ["False", "0", "1"]
    from zorb.kernels import cpu

    auto = run(ZORB_NATIVE_GEMM="auto")
    core = blas.openblas_cores().get("scipy")
    expected = not cpu.has_avx512() or core is None or blas.wide_kernels(core)
    assert auto == [str(expected), str(int(expected)), "1"]


def test_zorb_native_blas_0_turns_the_extension_off():
    code = ("import jax, jax.numpy as jnp, zorb.core; from zorb.kernels import blas; "
            "a = jnp.ones((300, 200)); b = jnp.ones((200, 256)); "
            "print(blas.NATIVE, jax.jit(blas.matmul).lower(a, b).compile().as_text().count('zorb_'), "
            "float(blas.matmul(a, b)[0, 0]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "ZORB_NATIVE_BLAS": "0"}).stdout.split()
    assert out == ["False", "0", "200.0"]


@pytest.mark.parametrize("n", [1, 5, 70, 333])
def test_eigvalsh_matches_numpy_reads_the_lower_triangle_and_skips_eigenvectors(n, rng):
    a = rng.normal(size=(2 * n, n))
    g = a.T @ a
    scrambled = np.tril(g) + np.triu(np.full_like(g, 1e3), 1)  # only the lower triangle is read
    if n >= blas.MIN_SIDE:
        assert custom_calls(blas.eigvalsh, scrambled) == 1
    got = np.asarray(jax.jit(blas.eigvalsh)(scrambled))
    expected = np.linalg.eigvalsh(g)
    assert got.dtype == np.float64 and np.all(np.diff(got) >= 0)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13 * expected.max())


def test_eigvalsh_of_a_matrix_with_nan_is_nan(rng):
    g = np.eye(40)
    g[3, 2] = np.nan
    assert np.all(np.isnan(np.asarray(jax.jit(blas.eigvalsh)(g))))


def numpy_map(t, lo, hi, a, b):
    """SquashingLayer's affine map in numpy (no fused multiply-add, as zorb/_blas.cc computes it)."""
    return a + (t - lo) * ((b - a) / (hi - lo))


@pytest.mark.parametrize("tanh,cols", [(True, 40), (False, 40), (True, 1000), (False, 1000)])
def test_squash_inverse_kernel_is_within_two_ulp_of_extended_precision(tanh, cols, rng):
    """The one-pass Sigmoid/Tanh inverse (zorb/_blas.cc): the map onto the margins computed as
    numpy computes it, then atanh/logit within 2 ulp of an 80-bit longdouble reference, with
    the shift subtracted exactly; across the range, near its ends and near the middle; rows
    shorter than the kernel's blocks of 256 values and rows of several blocks and a part."""
    low = -1.0 if tanh else 0.0
    a, b = low + 1e-15, 1.0 - 1e-15
    t = np.concatenate([rng.uniform(-3, 5, 30000), -3 + 10.0 ** -rng.uniform(0, 15, 5000),
                        5 - 10.0 ** -rng.uniform(0, 15, 4997), [-3.0, 5.0, 1.0]]).reshape(-1, cols)
    shift = rng.normal(size=cols)

    def kernel(t, s=None):  # `reference` is the branch for other platforms (traced, not run here)
        return blas.squash_inverse(t, jnp.asarray([-3.0, 5.0]), a, b, tanh=tanh, shift=s, reference=jnp.negative)

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
    """One pass for both extremes (zorb/_blas.cc), against numpy: lengths below, at and past the
    kernel's 16-value step, and arrays the pool splits between workers (700,000 values); the
    extremes placed first, last and in the middle; any NaN makes both NaN, infinities count."""
    x = rng.normal(size=shape)
    assert custom_calls(blas.extrema, x) == 1
    extrema = jax.jit(blas.extrema)
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


def test_eigvalsh_gradient_equals_jax_eigvalsh_gradient(rng):
    a = rng.normal(size=(60, 40))
    g = a.T @ a
    weights = np.linspace(1, 2, 40)
    got = jax.grad(lambda g: jnp.sum(weights * blas.eigvalsh(g)))(g)
    expected = jax.grad(lambda g: jnp.sum(weights * jnp.linalg.eigvalsh(g)))(g)
    np.testing.assert_allclose(got + got.T, expected + expected.T, rtol=1e-10, atol=1e-10)


def run_python(code: str, timeout: float = 120, **env) -> list[str]:
    """``code`` in a fresh interpreter (its own OpenBLAS state); its printed words."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=timeout,
                          env={**os.environ, **env}).stdout.split()


# Large enough that OpenBLAS splits the work into jobs (it keeps small calls on one thread).
POOL_CHECK = """
import os, threading
import numpy as np, jax, jax.numpy as jnp, zorb
from zorb.kernels import blas
from zorb.kernels import _blas
import scipy.linalg.blas as sb
rng = np.random.default_rng(0)
a, b = rng.random((700, 600)), rng.random((600, 500))
def worst(got, want):
    return float(np.abs(np.asarray(got) - want).max() / np.abs(want).max())
errors = [worst(sb.dgemm(1.0, a, b), a @ b)]
s = a.T @ a + np.eye(600)
w, v = jnp.linalg.eigh(jnp.asarray(s))  # jaxlib's LAPACK kernels call the same OpenBLAS
errors.append(float(jnp.abs(jnp.asarray(s) @ v - v * w).max()) / np.abs(s).max())
errors.append(worst(jnp.linalg.cholesky(jnp.asarray(s)) @ jnp.linalg.cholesky(jnp.asarray(s)).T, s))
results = [None] * 4
def product(i):
    results[i] = worst(sb.dgemm(1.0, a * (i + 1), b), (i + 1) * (a @ b))
threads = [threading.Thread(target=product, args=(i,)) for i in range(4)]
for t in threads: t.start()
for t in threads: t.join()
errors += results
print(blas.SHARED_POOL, _blas.pool_workers(), max(errors))
"""


def test_openblas_runs_its_jobs_on_zorbs_pool_with_the_same_results():
    """OpenBLAS's parallel jobs (dgemm, and jaxlib's LAPACK calls into the same library) go to
    zorb's pool, also from four threads at once; the results equal numpy's own OpenBLAS."""
    shared, workers, error = run_python(POOL_CHECK)
    assert shared == "True"
    assert int(workers) >= (1 if len(os.sched_getaffinity(0)) > 1 else 0)
    assert float(error) < 1e-12


SPLIT_GRAM_CHECK = """
import threading
import numpy as np, jax, zorb
from threadpoolctl import threadpool_info
from zorb.kernels import blas
from zorb.kernels import _blas
def openblas_threads():
    return sorted(i["num_threads"] for i in threadpool_info() if i.get("internal_api") == "openblas")
rng = np.random.default_rng(0)
a = rng.normal(size=(3001, 150))
before = openblas_threads()
worst = 0.0
for rows, x in ((False, a), (True, a.T.copy())):
    got = np.asarray(jax.jit(lambda x: blas.gram(x, rows=rows))(x))
    want = x @ x.T if rows else x.T @ x
    assert np.array_equal(got, got.T)
    worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
results = [None] * 3
gram = jax.jit(lambda x: blas.gram(x))
def one(i):
    want = (i + 1) ** 2 * (a.T @ a)
    results[i] = max(float(np.abs(np.asarray(gram(a * (i + 1))) - want).max() / np.abs(want).max())
                     for _ in range(5))
threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
for t in threads: t.start()
for t in threads: t.join()
print(_blas.gram_parts(150, 3001), _blas.gram_parts(150, 1000), openblas_threads() == before, max(worst, *results))
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the split needs two cores")
def test_gram_is_split_into_one_thread_parts_that_sum_to_numpys():
    """With zorb's pool and two cores, a Gram matrix over a long inner dimension is one
    one-thread dsyrk per core on its share of the rows, summed: numpy's result to rounding,
    exactly symmetric, also from three threads at once (one split at a time: each sets the
    process's OpenBLAS thread count to 1 and back), and OpenBLAS's thread count as it was;
    short inner dimensions, and ZORB_SPLIT_GRAM=0, keep OpenBLAS's threaded call."""
    parts, short, threads_kept, error = run_python(SPLIT_GRAM_CHECK)
    assert int(parts) >= 2 and short == "1" and threads_kept == "True"
    assert float(error) < 1e-13
    parts, short, threads_kept, error = run_python(SPLIT_GRAM_CHECK, ZORB_SPLIT_GRAM="0")
    assert parts == "1" and threads_kept == "True" and float(error) < 1e-13


SPLIT_GEMM_CHECK = """
import threading
import numpy as np, jax, zorb
from threadpoolctl import threadpool_info
from zorb.kernels import blas
from zorb.kernels import _blas
def openblas_threads():
    return sorted(i["num_threads"] for i in threadpool_info() if i.get("internal_api") == "openblas")
rng = np.random.default_rng(0)
before = openblas_threads()
worst = 0.0
w, x = rng.normal(size=(300, 200)), rng.normal(size=(300, 4099))  # 4,099 output columns: halves not 8-aligned
t = rng.normal(size=(4099, 300))
cases = ((w, x, True, False), (w, t, True, True), (w.T.copy(), x, False, False), (w.T.copy(), t, False, True))
for a, b, ta, tb in cases:
    got = np.asarray(jax.jit(lambda a, b: blas.matmul(a, b, transpose_a=ta, transpose_b=tb))(a, b))
    want = (a.T if ta else a) @ (b.T if tb else b)
    worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
results = [None] * 5
product = jax.jit(lambda a, b: blas.matmul(a, b, transpose_a=True))
gram = jax.jit(lambda x: blas.gram(x))
g = rng.normal(size=(3001, 150))
def one(i):
    want = (i + 1) * (w.T @ x)
    results[i] = max(float(np.abs(np.asarray(product(w, x * (i + 1))) - want).max() / np.abs(want).max())
                     for _ in range(5))
def one_gram(i):  # Gram splits at the same time: they set the same thread count
    want = (i + 1) ** 2 * (g.T @ g)
    results[i] = max(float(np.abs(np.asarray(gram(g * (i + 1))) - want).max() / np.abs(want).max())
                     for _ in range(5))
threads = [threading.Thread(target=one if i < 3 else one_gram, args=(i,)) for i in range(5)]
for th in threads: th.start()
for th in threads: th.join()
print(_blas.gemm_parts(200, 4099, 300), _blas.gemm_parts(200, 2000, 300), _blas.gemm_parts(4000, 4099, 300),
      openblas_threads() == before, max(worst, *results))
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the split needs two cores")
def test_a_product_with_few_rows_and_many_columns_is_split_into_one_thread_parts():
    """With zorb's pool and two cores, a product of few output rows and many columns (a dense
    layer on samples-last arrays) is one one-thread dgemm per core on its share of the columns:
    numpy's result to rounding for every transpose pair and for halves that do not fall on 8
    columns, also from three threads at once beside two splitting Gram matrices (one split at
    a time: each sets the process's OpenBLAS thread count to 1 and back), and OpenBLAS's thread
    count as it was. Few
    columns, many rows, and ZORB_SPLIT_GEMM=0 keep OpenBLAS's threaded call."""
    parts, few_columns, many_rows, threads_kept, error = run_python(SPLIT_GEMM_CHECK)
    assert int(parts) >= 2 and few_columns == "1" and many_rows == "1" and threads_kept == "True"
    assert float(error) < 1e-13
    parts, few_columns, many_rows, threads_kept, error = run_python(SPLIT_GEMM_CHECK, ZORB_SPLIT_GEMM="0")
    assert parts == "1" and threads_kept == "True" and float(error) < 1e-13


def test_zorb_blas_pool_0_leaves_openblas_its_own_threads():
    shared, workers, error = run_python(POOL_CHECK, ZORB_BLAS_POOL="0")
    assert (shared, workers) == ("False", "0")
    assert float(error) < 1e-12


def test_a_forked_child_gets_a_fresh_pool_and_its_blas_works():
    """After fork() only the forking thread exists: the child must not wait for the parent's
    workers. The child's threaded dgemm finishes (the timeout would fail it) and is right."""
    code = """
import os, numpy as np, zorb
from zorb.kernels import _blas
import scipy.linalg.blas as sb
rng = np.random.default_rng(0)
a, b = rng.random((700, 600)), rng.random((600, 500))
sb.dgemm(1.0, a, b)
parent_workers = _blas.pool_workers()
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    before = _blas.pool_workers()
    error = float(np.abs(sb.dgemm(1.0, a, b) - a @ b).max())
    os.write(write, f"{before} {error}".encode())
    os._exit(0)
os.waitpid(pid, 0)
print(parent_workers, os.read(read, 100).decode())
"""
    parent_workers, child_before, error = run_python(code, timeout=60)
    assert child_before == "0"
    assert int(parent_workers) >= (1 if len(os.sched_getaffinity(0)) > 1 else 0)
    assert float(error) < 1e-9


@pytest.mark.parametrize("rank,ridge", [(60, 0.0), (60, 0.5), (23, 0.0), (23, 2.0), (4, 0.0), (4, 1.0), (0, 0.0)])
def test_gram_solve_kernel_equals_its_jax_code_and_numpy(rank, ridge, rng):
    """Both branches of the one-call normal-equation solve: nothing cut (rank 60 of 60:
    Cholesky) and a cut (rank 23: every eigenpair by MRRR, the kept ones back-transformed;
    rank 4, under a tenth: only the kept pairs, by bisection), with and without ridge, and an
    all-zero design (everything cut). Checked against the JAX code it replaces and against
    numpy's SVD of the design matrix."""
    from zorb.core.solvers import _solve_from_gram_xla

    rows, cols, k, rcond = 400, 60, 17, 1e-6
    m = rng.normal(size=(rows, rank)) @ rng.normal(size=(rank, cols)) if rank else np.zeros((rows, cols))
    t = rng.normal(size=(rows, k))
    gram, moment = m.T @ m, m.T @ t
    def xla(g, b):
        return _solve_from_gram_xla(g, b, rcond, ridge)

    native = jax.jit(lambda g, b: blas.gram_solve(g, b, rcond, ridge, reference=xla))
    assert native.lower(gram, moment).compile().as_text().count('custom_call_target="zorb_gram_solve_f64"') == 1
    w, s = map(np.asarray, native(gram, moment))
    w_xla, s_xla = map(np.asarray, jax.jit(xla)(gram, moment))
    u, sv, vt = np.linalg.svd(m, full_matrices=False)
    keep = sv > rcond * sv[0] if sv[0] > 0 else np.zeros_like(sv, bool)
    expected = vt[keep].T @ ((sv[keep] / (sv[keep] ** 2 + ridge))[:, None] * (u[:, keep].T @ t))
    scale = max(np.abs(expected).max(), 1.0)
    np.testing.assert_allclose(w, expected, rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(w, w_xla, rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(s[:rank], sv[:rank], rtol=1e-9)
    assert int(np.sum(s > rcond * s[0])) == rank


def test_gram_solve_kernel_of_a_non_finite_gram_is_nan(rng):
    from zorb.core.solvers import _solve_from_gram_xla

    gram = np.eye(5)
    gram[2, 3] = np.nan
    w, s = jax.jit(lambda g, b: blas.gram_solve(g, b, 1e-7, 0.0, reference=lambda g, b: _solve_from_gram_xla(
        g, b, 1e-7, 0.0)))(gram, np.ones((5, 2)))
    assert np.isnan(np.asarray(w)).all() and np.isnan(np.asarray(s)).all()


CONV_CASES = [((5, 11, 9, 3), 3, 1, 32), ((4, 12, 10, 2), 3, 2, 5), ((3, 8, 8, 4), 2, 2, 45), ((6, 7, 7, 1), 1, 1, 8),
              ((2, 9, 9, 3), 4, 3, 70)]


@pytest.mark.parametrize("shape,k,stride,filters", CONV_CASES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_conv2d_kernel_matches_xla_convolution(shape, k, stride, filters, with_bias, rng):
    """Channel counts that are, and are not, multiples of the kernel's 32- and 8-wide blocks."""
    x = rng.normal(size=shape)
    kernel = rng.normal(size=(k, k, shape[3], filters))
    bias = rng.normal(size=filters) if with_bias else None
    conv = jax.jit(lambda x, kernel, bias: blas.conv2d(x, kernel, stride, bias))
    assert conv.lower(x, kernel, bias).compile().as_text().count('custom_call_target="zorb_conv2d_f64"') == 1
    expected = blas._xla_conv2d(jnp.asarray(x), jnp.asarray(kernel),
                                jnp.zeros((0,)) if bias is None else jnp.asarray(bias), stride)
    got = np.asarray(conv(x, kernel, bias))
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

    ours = jax.jit(jax.grad(loss(lambda x, k, b: blas.conv2d(x, k, stride, b)), argnums=argnums))(x, kernel, bias)
    xla = jax.grad(loss(lambda x, k, b: blas._xla_conv2d(x, k, b, stride)), argnums=argnums)(x, kernel, bias)
    for a, b in zip(ours, xla):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    tangents = (rng.normal(size=x.shape), rng.normal(size=kernel.shape), rng.normal(size=bias.shape))
    _, ours = jax.jvp(lambda x, k, b: blas.conv2d(x, k, stride, b), (x, kernel, bias), tangents)
    _, xla = jax.jvp(lambda x, k, b: blas._xla_conv2d(x, k, b, stride), (x, kernel, bias), tangents)
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

    moments = jax.jit(lambda x, t: blas.conv_moments(x, t, k, stride, reference=reference))
    assert moments.lower(x, t).compile().as_text().count('custom_call_target="zorb_conv_moments_f64"') == 1
    gram, moment = map(np.asarray, moments(x, t))
    want_gram, want_moment = map(np.asarray, jax.jit(reference)(x, t))
    np.testing.assert_array_equal(gram, gram.T)
    np.testing.assert_allclose(gram, want_gram, rtol=0, atol=1e-12 * np.abs(want_gram).max())
    np.testing.assert_allclose(moment, want_moment, rtol=0, atol=1e-12 * np.abs(want_moment).max())


CONV_WIDTHS_CHECK = """
import numpy as np, jax, jax.numpy as jnp, zorb
from zorb.kernels import blas
from zorb.kernels import _blas
from zorb.core.layers.conv2d import extract_patches
from zorb.core.solvers import gram_moments
rng = np.random.default_rng(0)
worst = 0.0
for shape, k, stride, filters in CASES:
    x = rng.normal(size=shape)
    kernel, bias = rng.normal(size=(k, k, shape[3], filters)), rng.normal(size=filters)
    got = jax.jit(lambda x, w, b: blas.conv2d(x, w, stride, b))(x, kernel, bias)
    want = blas._xla_conv2d(jnp.asarray(x), jnp.asarray(kernel), jnp.asarray(bias), stride)
    worst = max(worst, float(jnp.abs(got - want).max() / jnp.abs(want).max()))
    t = rng.normal(size=want.shape)
    def reference(x, t):
        patches = extract_patches(x, k, stride)
        return gram_moments(patches.reshape(-1, patches.shape[-1]), t.reshape(-1, filters), bias=True)
    for a, b in zip(jax.jit(lambda x, t: blas.conv_moments(x, t, k, stride, reference=reference))(x, t),
                    jax.jit(reference)(x, t)):
        worst = max(worst, float(jnp.abs(a - b).max() / jnp.abs(b).max()))
print(_blas.vector_lanes(), worst)
"""


def test_conv_kernels_agree_at_every_vector_width_this_cpu_runs():
    """The conv kernels are compiled for 8 (AVX-512), 4 (AVX2) and 2 (baseline) lanes with a
    register block each; ZORB_VECTOR_LANES runs the narrower ones, each in a fresh process,
    against XLA's convolution and the patch matrix's moments."""
    from zorb.kernels import _blas

    widest = _blas.vector_lanes()
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
