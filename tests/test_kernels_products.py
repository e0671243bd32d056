"""zorb.kernels.products: the fit's products through BLAS (dgemm, dsyrk) on the CPU, checked against numpy;
the one-thread splits of products and Gram matrices on zorb's worker pool."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernel_fixtures import custom_calls, run_python
from zorb.kernels import native, products


@pytest.fixture(autouse=True)
def dgemm_on(monkeypatch):
    """These tests check the dgemm route itself, whichever route this machine's fits take
    (``native.GEMM_NATIVE`` is read when a function is traced)."""
    monkeypatch.setattr(native, "GEMM_NATIVE", True)


@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_matmul_matches_numpy_for_every_transpose(transpose_a, transpose_b, rng):
    m, k, n = 301, 77, 260  # sizes no kernel blocks evenly
    a = rng.normal(size=(k, m) if transpose_a else (m, k))
    b = rng.normal(size=(n, k) if transpose_b else (k, n))
    expected = (a.T if transpose_a else a) @ (b.T if transpose_b else b)

    def product(a, b):
        return products.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)

    assert custom_calls(product, a, b) == 1
    got = np.asarray(jax.jit(product)(a, b))
    assert got.dtype == np.float64 and got.shape == (m, n)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13 * np.abs(expected).max())


@pytest.mark.parametrize("rows", [False, True])
def test_gram_matches_numpy_and_is_exactly_symmetric(rows, rng):
    a = rng.normal(size=(333, 70))
    expected = a @ a.T if rows else a.T @ a
    got = np.asarray(jax.jit(lambda a: products.gram(a, rows=rows))(a))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13 * np.abs(expected).max())
    np.testing.assert_array_equal(got, got.T)


@pytest.mark.parametrize("shape_a,shape_b", [((5000, 3), (3, 400)), ((50, 40), (40, 10)), ((0, 40), (40, 300)),
                                             ((300, 0), (0, 300))])
def test_small_narrow_and_empty_products_stay_in_xla_and_are_right(shape_a, shape_b, rng):
    a, b = rng.normal(size=shape_a), rng.normal(size=shape_b)
    assert custom_calls(products.matmul, a, b) == 0
    np.testing.assert_allclose(np.asarray(jax.jit(products.matmul)(a, b)), a @ b, rtol=1e-13, atol=1e-13)


def test_products_in_xla_is_scoped_to_its_block(rng):
    a, b = rng.normal(size=(300, 200)), rng.normal(size=(200, 256))

    def product():  # a new function each time: jax.jit keeps what a function traced to
        return lambda a, b: products.matmul(a, b)

    with products.products_in_xla():
        assert custom_calls(product(), a, b) == 0
        inside = np.asarray(jax.jit(product())(a, b))
        assert custom_calls(products.gram, a) == 1  # only dgemm's route changes
    assert custom_calls(product(), a, b) == 1
    np.testing.assert_allclose(inside, a @ b, rtol=0, atol=1e-13 * np.abs(a @ b).max())


def test_float32_stays_float32_in_xla(rng):
    a = jnp.asarray(rng.normal(size=(300, 200)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(200, 300)), jnp.float32)
    assert custom_calls(products.matmul, a, b) == 0
    assert products.matmul(a, b).dtype == jnp.float32
    assert products.gram(a).dtype == jnp.float32


def test_gradients_through_the_blas_products_equal_xla_gradients(rng):
    a, b = rng.normal(size=(64, 32)), rng.normal(size=(32, 200))

    def loss(product):
        return lambda a, b: jnp.sum(jnp.tanh(product(a, b)) ** 2) + jnp.sum(products.gram(a) ** 2) / 1e3

    got = jax.grad(loss(products.matmul), argnums=(0, 1))(a, b)
    expected = jax.grad(lambda a, b: jnp.sum(jnp.tanh(a @ b) ** 2) + jnp.sum((a.T @ a) ** 2) / 1e3,
                        argnums=(0, 1))(a, b)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)


def test_gemm_route_follows_openblas_kernels_and_can_be_forced():
    """dgemm only where OpenBLAS's kernels are as wide as the CPU's (or when forced); the Gram
    matrix always goes through dsyrk."""
    code = ("import jax, jax.numpy as jnp, zorb.core; from zorb.kernels import native, products; "
            "a = jnp.ones((300, 200)); b = jnp.ones((200, 256)); "
            "print(native.GEMM_NATIVE, jax.jit(products.matmul).lower(a, b).compile().as_text().count('zorb_'), "
            "jax.jit(products.gram).lower(a).compile().as_text().count('zorb_'))")
    assert run_python(code, ZORB_NATIVE_GEMM="1") == ["True", "1", "1"]
    assert run_python(code, ZORB_NATIVE_GEMM="0") == ["False", "0", "1"]
    from zorb.kernels import cpu

    auto = run_python(code, ZORB_NATIVE_GEMM="auto")
    core = native.openblas_cores().get("scipy")
    expected = not cpu.has_avx512() or core is None or native.wide_kernels(core)
    assert auto == [str(expected), str(int(expected)), "1"]


SPLIT_GRAM_CHECK = """
import threading
import numpy as np, jax, zorb.core
from threadpoolctl import threadpool_info
from zorb.kernels import products, _native
def openblas_threads():
    return sorted(i["num_threads"] for i in threadpool_info() if i.get("internal_api") == "openblas")
rng = np.random.default_rng(0)
a = rng.normal(size=(3001, 150))
before = openblas_threads()
worst = 0.0
for rows, x in ((False, a), (True, a.T.copy())):
    got = np.asarray(jax.jit(lambda x: products.gram(x, rows=rows))(x))
    want = x @ x.T if rows else x.T @ x
    assert np.array_equal(got, got.T)
    worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
results = [None] * 3
gram = jax.jit(lambda x: products.gram(x))
def one(i):
    want = (i + 1) ** 2 * (a.T @ a)
    results[i] = max(float(np.abs(np.asarray(gram(a * (i + 1))) - want).max() / np.abs(want).max())
                     for _ in range(5))
threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
for t in threads: t.start()
for t in threads: t.join()
print(_native.gram_parts(150, 3001), _native.gram_parts(150, 1000), openblas_threads() == before, max(worst, *results))
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
import numpy as np, jax, zorb.core
from threadpoolctl import threadpool_info
from zorb.kernels import products, _native
def openblas_threads():
    return sorted(i["num_threads"] for i in threadpool_info() if i.get("internal_api") == "openblas")
rng = np.random.default_rng(0)
before = openblas_threads()
worst = 0.0
w, x = rng.normal(size=(300, 200)), rng.normal(size=(300, 4099))  # 4,099 output columns: halves not 8-aligned
t = rng.normal(size=(4099, 300))
cases = ((w, x, True, False), (w, t, True, True), (w.T.copy(), x, False, False), (w.T.copy(), t, False, True))
for a, b, ta, tb in cases:
    got = np.asarray(jax.jit(lambda a, b: products.matmul(a, b, transpose_a=ta, transpose_b=tb))(a, b))
    want = (a.T if ta else a) @ (b.T if tb else b)
    worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
results = [None] * 5
product = jax.jit(lambda a, b: products.matmul(a, b, transpose_a=True))
gram = jax.jit(lambda x: products.gram(x))
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
print(_native.gemm_parts(200, 4099, 300), _native.gemm_parts(200, 2000, 300), _native.gemm_parts(4000, 4099, 300),
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
