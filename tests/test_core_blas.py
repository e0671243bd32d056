"""zorb.blas: the fit's products through BLAS (XLA FFI) on the CPU, checked against numpy."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zorb import blas


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
    code = ("import jax, jax.numpy as jnp, zorb; from zorb import blas; "
            "a = jnp.ones((300, 200)); b = jnp.ones((200, 256)); "
            "print(blas.GEMM_NATIVE, jax.jit(blas.matmul).lower(a, b).compile().as_text().count('zorb_'), "
            "jax.jit(blas.gram).lower(a).compile().as_text().count('zorb_'))")

    def run(**env):
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, **env}).stdout.split()

    assert run(ZORB_NATIVE_GEMM="1") == ["True", "1", "1"]
    assert run(ZORB_NATIVE_GEMM="0") == ["False", "0", "1"]
    from zorb import cpu

    auto = run(ZORB_NATIVE_GEMM="auto")
    expected = not cpu.has_avx512() or (blas.openblas_core() or "").lower() in blas.AVX512_CORES
    assert auto == [str(expected), str(int(expected)), "1"]


def test_zorb_native_blas_0_turns_the_extension_off():
    code = ("import jax, jax.numpy as jnp, zorb; from zorb import blas; "
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
