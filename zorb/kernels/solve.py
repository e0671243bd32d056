"""Symmetric eigenvalues and the normal equations with the eigenvalue cut through LAPACK on the
CPU (solve.cc), where ``zorb.kernels.native`` allows; elsewhere their pure-JAX equivalents."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zorb.kernels import native


def jax_eigvalsh(a):
    """``eigvalsh``'s pure-JAX equivalent."""
    return jnp.linalg.eigvalsh(a, UPLO="L", symmetrize_input=False)


@jax.custom_jvp
def _eigvalsh(a):
    return native.on_cpu("zorb_eigvalsh_f64", jax.ShapeDtypeStruct(a.shape[:1], jnp.float64), jax_eigvalsh, a)


@_eigvalsh.defjvp
def _eigvalsh_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    values, vectors = jnp.linalg.eigh(a)
    return values, jnp.einsum("ji,jk,ki->i", vectors, da, vectors)


def eigvalsh(a):
    """The eigenvalues of the symmetric ``a`` (n x n), ascending (its lower triangle is read). On
    the LAPACK route ``dsyevd`` computes them without eigenvectors: 1,001^2 in 30-35 ms where
    ``jnp.linalg.eigvalsh`` (which computes the eigenvectors too) takes 65-80 ms."""
    if not native.blas_matrices(a) or a.shape[0] != a.shape[1]:
        return jax_eigvalsh(a)
    return _eigvalsh(a)


def gram_solve(gram, moment, rcond, ridge, *, reference):
    """``(W, spectrum)`` (n x k, n) of the normal equations ``gram W = moment`` (n x n, n x k)
    with the eigenvalue cut (see ``zorb.core.solvers.solve_from_gram``): on the CPU for float64
    in one call of solve.cc (one tridiagonal reduction for the eigenvalues and, where something
    is cut, the kept eigenvectors; Cholesky where nothing is), elsewhere its pure-JAX
    equivalent ``reference(gram, moment)``."""
    rcond, ridge = jnp.asarray(rcond, jnp.float64), jnp.asarray(ridge, jnp.float64)
    if not (native.float64(gram, moment) and gram.ndim == 2 and moment.ndim == 2) or gram.shape[0] == 0:
        return reference(gram, moment)
    n, k = moment.shape
    return native.on_cpu("zorb_gram_solve_f64", (jax.ShapeDtypeStruct((n, k), jnp.float64),
                                                 jax.ShapeDtypeStruct((n,), jnp.float64)),
                         lambda gram, moment, rcond, ridge: tuple(reference(gram, moment)), gram, moment, rcond, ridge)
