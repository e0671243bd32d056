"""zorb.kernels.solve: symmetric eigenvalues and the normal equations with the eigenvalue cut through LAPACK,
checked against numpy and the JAX code they replace."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernel_fixtures import custom_calls
from zorb.kernels import native, solve


@pytest.mark.parametrize("n", [1, 5, 70, 333])
def test_eigvalsh_matches_numpy_reads_the_lower_triangle_and_skips_eigenvectors(n, rng):
    a = rng.normal(size=(2 * n, n))
    g = a.T @ a
    scrambled = np.tril(g) + np.triu(np.full_like(g, 1e3), 1)  # only the lower triangle is read
    if n >= native.MIN_SIDE:
        assert custom_calls(solve.eigvalsh, scrambled) == 1
    got = np.asarray(jax.jit(solve.eigvalsh)(scrambled))
    expected = np.linalg.eigvalsh(g)
    assert got.dtype == np.float64 and np.all(np.diff(got) >= 0)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13 * expected.max())


def test_eigvalsh_of_a_matrix_with_nan_is_nan(rng):
    g = np.eye(40)
    g[3, 2] = np.nan
    assert np.all(np.isnan(np.asarray(jax.jit(solve.eigvalsh)(g))))


def test_eigvalsh_gradient_equals_jax_eigvalsh_gradient(rng):
    a = rng.normal(size=(60, 40))
    g = a.T @ a
    weights = np.linspace(1, 2, 40)
    got = jax.grad(lambda g: jnp.sum(weights * solve.eigvalsh(g)))(g)
    expected = jax.grad(lambda g: jnp.sum(weights * jnp.linalg.eigvalsh(g)))(g)
    np.testing.assert_allclose(got + got.T, expected + expected.T, rtol=1e-10, atol=1e-10)


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

    native = jax.jit(lambda g, b: solve.gram_solve(g, b, rcond, ridge, reference=xla))
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
    w, s = jax.jit(lambda g, b: solve.gram_solve(g, b, 1e-7, 0.0, reference=lambda g, b: _solve_from_gram_xla(
        g, b, 1e-7, 0.0)))(gram, np.ones((5, 2)))
    assert np.isnan(np.asarray(w)).all() and np.isnan(np.asarray(s)).all()
