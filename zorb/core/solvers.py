"""Linear least squares for ZORB's update step, by three exact routes with one signature.

Every solver takes the layer input ``A`` (rows x d) and the target ``T`` (rows x k), solves

    W = argmin ||[A, 1] W - T||^2 + ridge * ||W||^2     over the kept singular directions,

and returns ``(W, spectrum)``: ``W`` has shape ``(d + 1) x k`` (``d x k`` without bias, the
bias row last) and ``spectrum`` holds the singular values of the design matrix ``[A, 1]``,
(with ``samples_last=True`` they take ``A^T`` (d x rows) and ``T^T`` (k x rows) instead),
descending, ``min(rows, d + 1)`` of them. Singular values ``<= rcond * s_max`` are cut, as
numpy's ``pinv`` does; the kept ones are applied through the filter ``s / (s^2 + ridge)``
(``1 / s`` without ridge). The ridge therefore acts on every row of ``W``, bias included.

- ``svd``: SVD of ``[A, 1]`` itself, the pseudoinverse route of the paper's code.
- ``qr``: one QR of ``[A, 1, T]``; its ``R`` holds the small triangle of ``[A, 1]`` and
  ``Q^T T`` side by side, and an SVD of that triangle applies the same cut. Same numerics as
  ``svd`` with fewer flops and no ``rows x d`` factor kept.
- ``gram``: normal equations ``[A,1]^T [A,1]`` with an eigenvalue cut. Fewest flops, but the
  condition number is squared, so it refuses an ``rcond`` that the dtype cannot honour.

A design matrix wider than tall (fewer rows than columns, e.g. a dense layer on the 28,800
outputs of a conv layer for 1,280 images) has at most ``rows`` nonzero singular values and a
minimum-norm solution ``W = M^T x`` in the row space; ``qr`` and ``gram`` then work on the
small side: ``qr`` factors ``M^T`` (an LQ of ``M``) and ``gram`` eigendecomposes ``M M^T``
(rows x rows), so neither forms nor factors anything ``cols x cols``.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from zorb.kernels.blas import eigvalsh, gram as gram_matrix, gram_solve, matmul
from zorb.errors import ConfigError

DEFAULT_RCOND = 1e-15
"""The paper's feed-forward setting (numpy's ``pinv`` default); its CNN runs used 1e-9 and 1e-2."""


def design_matrix(a, bias: bool):
    """``[A, 1]`` (rows x (d + 1)) or ``A`` itself without bias."""
    if not bias:
        return a
    return jnp.concatenate([a, jnp.ones((a.shape[0], 1), a.dtype)], axis=1)


def _filter(s, rcond, ridge):
    """Filter factors of the kept singular values: 1/s (or s/(s^2+ridge)), 0 where cut."""
    keep = s > rcond * s[0]
    safe = jnp.where(keep, s, 1)
    return jnp.where(keep, jnp.where(ridge > 0, safe / (safe * safe + ridge), 1 / safe), 0)


def _solve_from_svd(u, s, vt, rhs, rcond, ridge):
    """``V diag(f(s)) U^T rhs`` with ``u`` of shape (m, r), ``vt`` (r, n)."""
    f = _filter(s, rcond, ridge)
    return matmul(vt, f[:, None] * matmul(u, rhs, transpose_a=True), transpose_a=True)


def lstsq_svd(a, t, *, rcond, ridge, bias: bool = True, samples_last: bool = False):
    if samples_last:  # the factorisation dominates: a transposed copy costs little
        a, t = a.T, t.T
    m = design_matrix(a, bias)
    u, s, vt = jnp.linalg.svd(m, full_matrices=False)
    return _solve_from_svd(u, s, vt, t, rcond, ridge), s


def qr_triangle(m, t, previous=None):
    """The ``R`` of a QR of ``[M, T]`` (stacked under ``previous``, an earlier such ``R``).

    Rows can arrive in chunks: ``R <- qr([R; M_c, T_c]).R`` keeps ``min(rows, cols)`` rows
    and gives the same triangle (up to row signs, which the solve does not see) as one QR of
    all rows, so memory stops growing with the number of rows.
    """
    block = jnp.concatenate([m, t], axis=1)
    if previous is not None:
        block = jnp.concatenate([previous, block], axis=0)
    return jnp.linalg.qr(block, mode="r")


def solve_from_triangle(r, cols: int, rcond, ridge):
    """Finish the ``qr`` route from ``qr_triangle``: an SVD of the small triangle applies the cut."""
    top = min(r.shape[0], cols)
    u, s, vt = jnp.linalg.svd(r[:top, :cols], full_matrices=False)
    return _solve_from_svd(u, s, vt, r[:top, cols:], rcond, ridge), s


def _dual_solve(a, u, s, t, rcond, ridge, bias: bool):
    """The minimum-norm solution of a wide design ``M = [A, 1] = U S V^T`` from its left
    factors: ``V f(S) U^T T = M^T U (f(S)/S) U^T T``, with ``f(s)/s`` = ``1/s^2`` (or
    ``1/(s^2 + ridge)``) for the kept values and 0 where cut. ``V`` is never needed."""
    keep = s > rcond * s[0]
    safe = jnp.where(keep, s, 1)
    x = matmul(u, jnp.where(keep, 1 / (safe * safe + ridge), 0)[:, None] * matmul(u, t, transpose_a=True))
    out = matmul(a, x, transpose_a=True)  # [A, 1]^T x without forming [A, 1]
    return jnp.concatenate([out, jnp.sum(x, axis=0, keepdims=True)], axis=0) if bias else out


def lstsq_qr(a, t, *, rcond, ridge, bias: bool = True, samples_last: bool = False):
    if samples_last:
        a, t = a.T, t.T
    m = design_matrix(a, bias)
    rows, cols = m.shape
    if rows >= cols:
        return solve_from_triangle(qr_triangle(m, t), cols, rcond, ridge)
    # Wide: M^T = Q R (an LQ of M), R^T = U S V1^T, so M = U S (Q V1)^T and the solution
    # Q V1 f(S) U^T T equals M^T U (f(S)/S) U^T T: Q is never formed.
    r = jnp.linalg.qr(m.T, mode="r")
    u, s, _ = jnp.linalg.svd(r.T, full_matrices=False)
    return _dual_solve(a, u, s, t, rcond, ridge, bias), s


def gram_moments(a, t, previous=None, *, bias: bool = False, samples_last: bool = False):
    """``(M^T M, M^T T)`` for ``M = [A, 1]`` (``A`` itself without bias), added to ``previous``
    moments: the normal equations, chunk by chunk. The bias column's blocks are column sums,
    so the ``rows x (d + 1)`` copy ``[A, 1]`` is never made. With ``samples_last``, ``a`` and
    ``t`` are ``A^T`` and ``T^T``."""
    if samples_last:
        gram, moment = gram_matrix(a, rows=True), matmul(a, t, transpose_b=True)
    else:
        gram, moment = gram_matrix(a), matmul(a, t, transpose_a=True)
    if bias:
        sample_axis = 1 if samples_last else 0
        sums = jnp.sum(a, axis=sample_axis)
        corner = jnp.full((1, 1), a.shape[sample_axis], a.dtype)
        gram = jnp.concatenate([jnp.concatenate([gram, sums[:, None]], axis=1),
                                jnp.concatenate([sums[None, :], corner], axis=1)], axis=0)
        moment = jnp.concatenate([moment, jnp.sum(t, axis=sample_axis)[None, :]], axis=0)
    if previous is not None:
        gram, moment = previous[0] + gram, previous[1] + moment
    return gram, moment


def solve_from_gram(gram, moment, rows: int, rcond, ridge):
    """Finish the ``gram`` route: the cut on ``sqrt(eigenvalues)``.

    The eigenvalues alone (a tridiagonal reduction, no eigenvectors) say whether anything is
    cut. If nothing is, ``(M^T M + ridge) W = M^T T`` is solved by Cholesky: the same solution
    without the eigenvectors (1,001^2 with 800 targets: 0.255 s against 0.294 s on a 2-core
    CPU, ``scripts/perf_items.py``); otherwise the eigenvectors of the kept eigenvalues apply
    the cut. On the CPU ``zorb.kernels.blas.gram_solve`` does all of it in one LAPACK call sequence
    (one tridiagonal reduction, only the kept eigenvectors); ``_solve_from_gram_xla`` is the
    same in JAX.
    """
    w, s = gram_solve(gram, moment, rcond, ridge,
                      reference=lambda gram, moment: _solve_from_gram_xla(gram, moment, rcond, ridge))
    return w, s[: min(rows, gram.shape[0])]


def _solve_from_gram_xla(gram, moment, rcond, ridge):
    def singular_values(eigenvalues):
        return jnp.sqrt(jnp.maximum(eigenvalues, 0))

    s = singular_values(eigvalsh(gram)[::-1])

    def by_cholesky(gram, moment):
        ridged = gram + ridge * jnp.eye(gram.shape[0], dtype=gram.dtype)
        return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(ridged, lower=True), moment), s

    def by_eigenvectors(gram, moment):
        # The cut and the reported spectrum both come from this decomposition's eigenvalues.
        eigenvalues, v = jnp.linalg.eigh(gram)
        eigenvalues, v = eigenvalues[::-1], v[:, ::-1]
        values = singular_values(eigenvalues)
        keep = values > rcond * values[0]
        f = jnp.where(keep, 1 / (jnp.where(keep, eigenvalues, 1) + ridge), 0)
        return matmul(v, f[:, None] * matmul(v, moment, transpose_a=True)), values

    return jax.lax.cond(s[-1] > rcond * s[0], by_cholesky, by_eigenvectors, gram, moment)


def lstsq_gram(a, t, *, rcond, ridge, bias: bool = True, samples_last: bool = False):
    rows, cols = (a.shape[1], a.shape[0] + bool(bias)) if samples_last else (a.shape[0], a.shape[1] + bool(bias))
    if rows >= cols:
        return solve_from_gram(*gram_moments(a, t, bias=bias, samples_last=samples_last), rows, rcond, ridge)
    if samples_last:
        a, t = a.T, t.T
    # Wide: eigendecompose M M^T = [A,1][A,1]^T = A A^T + 1 1^T (rows x rows) = U S^2 U^T;
    # the solution is M^T U (f(S)/S) U^T T.
    kernel = gram_matrix(a, rows=True)
    if bias:
        kernel = kernel + 1
    eigenvalues, u = jnp.linalg.eigh(kernel)
    eigenvalues, u = eigenvalues[::-1], u[:, ::-1]
    s = jnp.sqrt(jnp.maximum(eigenvalues, 0))
    return _dual_solve(a, u, s, t, rcond, ridge, bias), s


class Solver(NamedTuple):
    name: str
    solve: Callable
    squares_condition: bool
    streams: bool
    """Whether rows can arrive in chunks (``qr_triangle`` / ``gram_moments``)."""


SOLVERS: dict[str, Solver] = {
    "svd": Solver("svd", lstsq_svd, squares_condition=False, streams=False),
    "qr": Solver("qr", lstsq_qr, squares_condition=False, streams=True),
    "gram": Solver("gram", lstsq_gram, squares_condition=True, streams=True),
}


def gram_min_rcond(dtype) -> float:
    """Smallest rcond the normal equations honour: singular values below about
    ``sqrt(machine eps) * s_max`` drown in the rounding of the squared spectrum."""
    return 5 * math.sqrt(float(np.finfo(np.dtype(dtype)).eps))


def check_rcond(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if value < 0:
        raise ConfigError(f"{name} must be >= 0 (singular values <= rcond * s_max are cut), got {value!r}")
    if value >= 1:
        raise ConfigError(f"{name} must be < 1 (1 or more cuts every singular value), got {value!r}")
    return float(value)


def check_solver_options(solver: str = "svd", rcond=DEFAULT_RCOND, u_rcond=None, b_rcond=None,
                         ridge=0.0, dtype="float64") -> tuple[float, float, float]:
    """Validate the solver settings before any compute; return ``(u_rcond, b_rcond, ridge)``.

    ``rcond`` sets both ``u_rcond`` (the update solve) and ``b_rcond`` (the backward
    pseudoinverses) unless they are given.
    """
    if solver not in SOLVERS:
        raise ConfigError(f"unknown solver {solver!r}: choose one of {', '.join(SOLVERS)}")
    rcond = check_rcond("rcond", rcond)
    u = rcond if u_rcond is None else check_rcond("u_rcond", u_rcond)
    b = rcond if b_rcond is None else check_rcond("b_rcond", b_rcond)
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not (ridge >= 0 and math.isfinite(ridge)):
        raise ConfigError(f"ridge must be a number >= 0, got {ridge!r}")
    if SOLVERS[solver].squares_condition:
        floor = gram_min_rcond(dtype)
        if u < floor:
            raise ConfigError(
                f"solver 'gram' cannot honour u_rcond={u:g} in {np.dtype(dtype).name}: the normal "
                f"equations square the condition number, so use u_rcond >= {floor:.1e} or solver=qr "
                f"(the same answer as svd, exact to rounding, at less cost)")
    return u, b, float(ridge)


PINV_GRAM_MAX_COND = 100.0
"""``pseudoinverse`` takes the Gram route only for matrices at most this ill-conditioned."""
PINV_GRAM_MIN_SIDE = 64


def _pseudoinverse_svd(m, rcond):
    u, s, vt = jnp.linalg.svd(m, full_matrices=False)
    keep = s > rcond * s[0]
    inv = jnp.where(keep, 1 / jnp.where(keep, s, 1), 0)
    return matmul(vt, inv[:, None] * u.T, transpose_a=True)


def pseudoinverse(m, rcond):
    """Moore-Penrose pseudoinverse of ``m`` (r x c) -> (c x r), zeroing ``s <= rcond * s_max``.

    A full-rank, well-conditioned ``m`` (condition number <= ``PINV_GRAM_MAX_COND``, nothing
    under the cut: e.g. a Glorot-initialised rectangular weight matrix, whose pseudoinverse
    every backward pass needs) gets ``(m^T m)^-1 m^T`` (or ``m^T (m m^T)^-1``) by a Cholesky
    solve with the small Gram matrix, whose eigenvalues (no eigenvectors) decide: the same
    matrix to a relative ``cond^2 * eps`` <= 2e-12, in a third of the SVD's time (1000 x 900:
    48 ms against 73 ms by the Gram's eigenvectors and about 150 ms by SVD on a 2-core CPU).
    Anything else gets the SVD.
    """
    rows, cols = m.shape
    if min(rows, cols) < PINV_GRAM_MIN_SIDE:
        return _pseudoinverse_svd(m, rcond)
    tall = rows >= cols
    gram = gram_matrix(m, rows=not tall)
    eigenvalues = eigvalsh(gram)  # ascending
    low, high = eigenvalues[0], eigenvalues[-1]
    well = (low > 0) & (high <= PINV_GRAM_MAX_COND ** 2 * low) & (low > (rcond * rcond) * high)

    def via_gram(m):
        factor = jax.scipy.linalg.cho_factor(gram, lower=True)
        return jax.scipy.linalg.cho_solve(factor, m.T) if tall else jax.scipy.linalg.cho_solve(factor, m).T

    return jax.lax.cond(well, via_gram, lambda m: _pseudoinverse_svd(m, rcond), m)


def spectrum_summary(spectrum: np.ndarray, rcond: float) -> tuple[float, int, float]:
    """``(cutoff, rank, cond)`` of a descending spectrum under ``rcond``.

    ``cond`` is ``s_max / s_min_kept``, the condition number of the solve actually made.
    """
    spectrum = np.asarray(spectrum)
    if spectrum.size == 0 or not spectrum[0] > 0:  # all zero, or NaN from a failed solve
        return 0.0, 0, math.inf
    cutoff = float(rcond * spectrum[0])
    kept = spectrum[spectrum > cutoff]
    return cutoff, int(kept.size), float(spectrum[0] / kept[-1])
