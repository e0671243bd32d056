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

``ridge="auto"`` chooses the ridge from the data by generalised cross-validation (Golub, Heath
& Wahba 1979): over ``RIDGE_GRID`` (relative to ``s_max^2``) it minimises

    GCV(ridge) = rows * ||T - [A, 1] W_ridge||^2 / (rows - df(ridge))^2,   df = sum s^2 / (s^2 + ridge),

read off the factorisation the solve makes anyway (the singular values and ``U^T T``; for
``gram`` the eigendecomposition of the normal equations and ``||T||^2``), so the choice costs
a few (grid x rank) vector operations. The solve then returns ``(W, spectrum, RidgeChoice)``.

A design matrix wider than tall (fewer rows than columns, e.g. a dense layer on the 28,800
outputs of a conv layer for 1,280 images) has at most ``rows`` nonzero singular values and a
minimum-norm solution ``W = M^T x`` in the row space; ``qr`` and ``gram`` then work on the
small side: ``qr`` factors ``M^T`` (an LQ of ``M``) and ``gram`` eigendecomposes ``M M^T``
(rows x rows), so neither forms nor factors anything ``cols x cols``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from zorb.core import timing
from zorb.kernels.products import gram as gram_matrix, matmul
from zorb.kernels.solve import eigvalsh, gram_solve
from zorb.errors import ConfigError

DEFAULT_RCOND = 1e-15
"""The float64 cut where none is given: the paper's feed-forward setting (numpy's ``pinv``
default), about 4.5 float64 epsilons; its CNN runs used 1e-9 and 1e-2. Other dtypes get the
same multiple of their own epsilon (``default_rcond``)."""


def default_rcond(dtype) -> float:
    """The cut used where none is given: ``DEFAULT_RCOND`` scaled from float64's machine
    epsilon to ``dtype``'s (1e-15 in float64, 5.4e-7 in float32), so that a direction
    rounding made nonzero (an exact duplicate column) is cut in either precision."""
    return DEFAULT_RCOND * float(np.finfo(np.dtype(dtype)).eps) / float(np.finfo(np.float64).eps)


AUTO = "auto"
"""``ridge=AUTO``: choose the ridge by generalised cross-validation (module docstring)."""

RIDGE_GRID = tuple(float(10.0 ** (e / 4)) for e in range(-60, 1))
"""Ridge values ``auto`` tries, as multiples of ``s_max^2``: 1e-15 to 1, four per decade."""


class RidgeChoice(NamedTuple):
    """What ``ridge="auto"`` chose: ``ridge`` (the value used, absolute), ``grid`` (G,) the
    absolute values tried and ``score`` (G,) the GCV criterion at each."""

    ridge: jax.Array
    grid: jax.Array
    score: jax.Array


def is_auto(ridge) -> bool:
    return isinstance(ridge, str) and ridge == AUTO


def gcv_scores(s, energy, outside, rows: int, rcond, grid):
    """GCV criterion ``rows * RSS / (rows - df)^2`` at every ridge in ``grid`` (G,).

    ``s`` (r,) descending singular values of the design matrix, ``energy`` (r,) the squared
    norm of each row of ``U^T T`` (the target's energy along each left singular vector),
    ``outside`` the energy of ``T`` outside the range of ``U`` (0 when ``U`` is square). Cut
    directions (``s <= rcond * s_max``) are not fitted: their energy stays in the residual.
    """
    keep = s > rcond * s[0]
    s2 = jnp.where(keep, s * s, 0)
    ridge = grid[:, None]
    shrink = jnp.where(keep, ridge / (s2 + ridge), 1)  # (G, r): the share of each direction left unfitted
    rss = outside + jnp.sum(shrink * shrink * energy, axis=1)
    df = jnp.sum(jnp.where(keep, s2 / (s2 + ridge), 0), axis=1)
    dof = rows - df
    return jnp.where(dof > 0, rows * rss / jnp.where(dof > 0, dof * dof, 1), jnp.inf)


def choose_ridge(s, energy, outside, rows: int, rcond) -> RidgeChoice:
    """The grid value of ``RIDGE_GRID * s_max^2`` with the lowest GCV (``gcv_scores``)."""
    grid = jnp.asarray(RIDGE_GRID, s.dtype) * s[0] * s[0]
    score = gcv_scores(s, energy, outside, rows, rcond, grid)
    return RidgeChoice(grid[jnp.argmin(score)], grid, score)


def _choose(s, projected, outside, rows, rcond, ridge):
    """``(ridge, choice)``: ``ridge`` itself, or GCV's choice from ``projected`` = ``U^T T`` (r, k)."""
    if not is_auto(ridge):
        return ridge, None
    choice = choose_ridge(s, jnp.sum(projected * projected, axis=1), outside, rows, rcond)
    return choice.ridge, choice


def _outside(t, projected):
    """``||T||^2 - ||U^T T||^2`` for a tall ``U`` (rows > columns); a square ``U`` leaves nothing
    outside, and the subtraction's rounding would then dominate GCV's residual at small ridges."""
    if t.shape[0] <= projected.shape[0]:
        return jnp.zeros((), t.dtype)
    return jnp.maximum(jnp.sum(t * t) - jnp.sum(projected * projected), 0)


def _result(w, s, choice):
    return (w, s) if choice is None else (w, s, choice)


def design_matrix(a, bias: bool):
    """``[A, 1]`` (rows x (d + 1)) or ``A`` itself without bias."""
    if not bias:
        return a
    return jnp.concatenate([a, jnp.ones((a.shape[0], 1), a.dtype)], axis=1)


def _divide_and_conquer_svd(m):
    return jax.lax.linalg.svd(m, full_matrices=False)


def _qr_iteration_svd(m):
    return jax.lax.linalg.svd(m, full_matrices=False, algorithm=jax.lax.linalg.SvdAlgorithm.QR)


def _gram_svd(m):
    """``(u, s, vt)`` of ``m`` from the eigendecomposition of its small Gram matrix (LAPACK's
    ``syevd``, no SVD routine at all). Singular values below ``sqrt(n * eps) * s_max`` (``n``
    the Gram matrix's side; its eigenvalues are exact to about ``n * eps * s_max^2``) are beyond
    what it resolves: they come back as 0 (cut by any rcond), their vectors as 0."""
    wide = m.shape[0] < m.shape[1]
    a = m.T if wide else m
    eigenvalues, v = jnp.linalg.eigh(matmul(a, a, transpose_a=True))
    eigenvalues, v = eigenvalues[::-1], v[:, ::-1]  # descending
    s = jnp.sqrt(jnp.maximum(eigenvalues, 0))
    keep = s > jnp.sqrt(a.shape[1] * jnp.finfo(m.dtype).eps) * s[0]
    s = jnp.where(keep, s, 0)
    u = jnp.where(keep, matmul(a, v) / jnp.where(keep, s, 1), 0)
    v = jnp.where(keep, v, 0)
    return (v, s, u.T) if wide else (u, s, v.T)


def all_finite(tree):
    """Whether every float entry of the arrays in ``tree`` is finite (traced: a 0-d bool)."""
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


_ROBUST_SVD = False
"""Whether ``svd`` traces its fallback routes (``robust_svd``)."""


@contextlib.contextmanager
def robust_svd():
    """Within: ``svd`` also tries ``gesvd`` and the Gram route where ``gesdd`` fails. The fit
    redoes a solve or a pseudoinverse in here when it came back non-finite from finite inputs;
    tracing the fallbacks into every program would cost every fit's compile (40-60% more on
    the shipped networks) for a failure that some CPUs' kernels show and most never do. JAX
    and ``zorb.core.timing`` key their compiled programs on the functions and shapes, not on
    this flag, so entering and leaving forget what they compiled in memory (JAX's persistent
    cache keys on the programs' code and holds both variants apart)."""
    global _ROBUST_SVD
    previous = _ROBUST_SVD
    _ROBUST_SVD = True
    _forget_compiled()
    try:
        yield
    finally:
        _ROBUST_SVD = previous
        _forget_compiled()


def _forget_compiled() -> None:
    jax.clear_caches()
    timing.clear()


def svd(m):
    """Thin SVD ``(u, s, vt)`` of ``m`` by LAPACK's divide and conquer (``gesdd``); within
    ``robust_svd``, where that returns anything non-finite, by its QR iteration (``gesvd``),
    then by the eigenvectors of the Gram matrix (``_gram_svd``).

    ``gesdd`` fails (JAX then returns NaN) on some exactly rank-deficient finite matrices with
    some CPUs' OpenBLAS kernels, printing ``On entry to DLASCL parameter number 4 had an
    illegal value``: e.g. the design of a layer whose inputs are a few repeated +-1 columns,
    which step and sign activations produce. The later routes take other paths through LAPACK
    and run only when the one before failed; checking costs one read of the factors. A matrix
    that holds a NaN or an infinity stays non-finite on every route, and the fit reports it."""
    first = _divide_and_conquer_svd(m)
    if not _ROBUST_SVD:
        return first

    def retry(m):
        second = _qr_iteration_svd(m)
        return jax.lax.cond(all_finite(second), lambda _: second, _gram_svd, m)

    return jax.lax.cond(all_finite(first), lambda _: first, retry, m)


def _filter(s, rcond, ridge):
    """Filter factors of the kept singular values: 1/s (or s/(s^2+ridge)), 0 where cut."""
    keep = s > rcond * s[0]
    safe = jnp.where(keep, s, 1)
    return jnp.where(keep, jnp.where(ridge > 0, safe / (safe * safe + ridge), 1 / safe), 0)


def _solve_from_svd(u, s, vt, rhs, rcond, ridge, *, projected=None):
    """``V diag(f(s)) U^T rhs`` with ``u`` of shape (m, r), ``vt`` (r, n) (``projected``:
    ``U^T rhs`` when already known)."""
    f = _filter(s, rcond, ridge)
    if projected is None:
        projected = matmul(u, rhs, transpose_a=True)
    return matmul(vt, f[:, None] * projected, transpose_a=True)


def lstsq_svd(a, t, *, rcond, ridge, bias: bool = True, samples_last: bool = False):
    if samples_last:  # the factorisation dominates: a transposed copy costs little
        a, t = a.T, t.T
    m = design_matrix(a, bias)
    u, s, vt = svd(m)
    projected = matmul(u, t, transpose_a=True)
    ridge, choice = _choose(s, projected, _outside(t, projected), m.shape[0], rcond, ridge)
    return _result(_solve_from_svd(u, s, vt, t, rcond, ridge, projected=projected), s, choice)


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


def solve_from_triangle(r, cols: int, rcond, ridge, rows: int | None = None):
    """Finish the ``qr`` route from ``qr_triangle``: an SVD of the small triangle applies the cut.

    Below ``Q^T T`` the triangle's target columns hold the residual of the unregularised fit,
    which is what ``ridge="auto"`` needs besides the design's ``rows``."""
    top = min(r.shape[0], cols)
    u, s, vt = svd(r[:top, :cols])
    projected = matmul(u, r[:top, cols:], transpose_a=True)
    ridge, choice = _choose(s, projected, jnp.sum(r[top:, cols:] ** 2), rows, rcond, ridge)
    return _result(_solve_from_svd(u, s, vt, None, rcond, ridge, projected=projected), s, choice)


def _dual_solve(a, u, s, t, rcond, ridge, bias: bool):
    """The minimum-norm solution of a wide design ``M = [A, 1] = U S V^T`` from its left
    factors: ``V f(S) U^T T = M^T U (f(S)/S) U^T T``, with ``f(s)/s`` = ``1/s^2`` (or
    ``1/(s^2 + ridge)``) for the kept values and 0 where cut. ``V`` is never needed."""
    keep = s > rcond * s[0]
    safe = jnp.where(keep, s, 1)
    projected = matmul(u, t, transpose_a=True)
    ridge, choice = _choose(s, projected, _outside(t, projected), t.shape[0], rcond, ridge)
    x = matmul(u, jnp.where(keep, 1 / (safe * safe + ridge), 0)[:, None] * projected)
    out = matmul(a, x, transpose_a=True)  # [A, 1]^T x without forming [A, 1]
    w = jnp.concatenate([out, jnp.sum(x, axis=0, keepdims=True)], axis=0) if bias else out
    return _result(w, s, choice)


def lstsq_qr(a, t, *, rcond, ridge, bias: bool = True, samples_last: bool = False):
    if samples_last:
        a, t = a.T, t.T
    m = design_matrix(a, bias)
    rows, cols = m.shape
    if rows >= cols:
        return solve_from_triangle(qr_triangle(m, t), cols, rcond, ridge, rows)
    # Wide: M^T = Q R (an LQ of M), R^T = U S V1^T, so M = U S (Q V1)^T and the solution
    # Q V1 f(S) U^T T equals M^T U (f(S)/S) U^T T: Q is never formed.
    r = jnp.linalg.qr(m.T, mode="r")
    u, s, _ = svd(r.T)
    return _dual_solve(a, u, s, t, rcond, ridge, bias)


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


def solve_from_gram(gram, moment, rows: int, rcond, ridge, total=None):
    """Finish the ``gram`` route: the cut on ``sqrt(eigenvalues)``.

    ``ridge="auto"`` needs ``total`` = ``||T||^2`` and always takes the eigenvectors
    (``_solve_from_gram_auto``).

    The eigenvalues alone (a tridiagonal reduction, no eigenvectors) say whether anything is
    cut. If nothing is, ``(M^T M + ridge) W = M^T T`` is solved by Cholesky: the same solution
    without the eigenvectors (1,001^2 with 800 targets: 0.255 s against 0.294 s on a 2-core
    CPU, ``python scripts/bench.py --sections kernels``); otherwise the eigenvectors of the kept eigenvalues apply
    the cut. On the CPU ``zorb.kernels.solve.gram_solve`` does all of it in one LAPACK call sequence
    (one tridiagonal reduction, only the kept eigenvectors); ``_solve_from_gram_xla`` is the
    same in JAX.
    """
    if is_auto(ridge):
        return _solve_from_gram_auto(gram, moment, rows, rcond, total)
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


def _solve_from_gram_auto(gram, moment, rows: int, rcond, total):
    """GCV's ridge from ``M^T M = V S^2 V^T``: ``U^T T = S^-1 V^T M^T T`` on the kept directions."""
    eigenvalues, v = jnp.linalg.eigh(gram)
    eigenvalues, v = eigenvalues[::-1], v[:, ::-1]
    s = jnp.sqrt(jnp.maximum(eigenvalues, 0))
    keep = s > rcond * s[0]
    rotated = matmul(v, moment, transpose_a=True)  # S U^T T
    energy = jnp.where(keep, jnp.sum(rotated * rotated, axis=1) / jnp.where(keep, eigenvalues, 1), 0)
    # cut directions' energy (rotated^2 / a tiny eigenvalue: inaccurate) is counted in the rest
    choice = choose_ridge(s, energy, jnp.maximum(total - jnp.sum(energy), 0), rows, rcond)
    f = jnp.where(keep, 1 / (jnp.where(keep, eigenvalues, 1) + choice.ridge), 0)
    return matmul(v, f[:, None] * rotated), s[: min(rows, gram.shape[0])], choice


def lstsq_gram(a, t, *, rcond, ridge, bias: bool = True, samples_last: bool = False):
    rows, cols = (a.shape[1], a.shape[0] + bool(bias)) if samples_last else (a.shape[0], a.shape[1] + bool(bias))
    if rows >= cols:
        total = jnp.sum(t * t) if is_auto(ridge) else None
        return solve_from_gram(*gram_moments(a, t, bias=bias, samples_last=samples_last), rows, rcond, ridge, total)
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
    return _dual_solve(a, u, s, t, rcond, ridge, bias)


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


def check_solver_options(solver: str = "svd", rcond=None, u_rcond=None, b_rcond=None,
                         ridge=0.0, dtype="float64") -> tuple[float, float, float | str]:
    """Validate the solver settings before any compute; return ``(u_rcond, b_rcond, ridge)``.

    ``rcond`` (None: ``default_rcond(dtype)``) sets both ``u_rcond`` (the update solve) and
    ``b_rcond`` (the backward pseudoinverses) unless they are given.
    """
    if solver not in SOLVERS:
        raise ConfigError(f"unknown solver {solver!r}: choose one of {', '.join(SOLVERS)}")
    rcond = default_rcond(dtype) if rcond is None else check_rcond("rcond", rcond)
    u = rcond if u_rcond is None else check_rcond("u_rcond", u_rcond)
    b = rcond if b_rcond is None else check_rcond("b_rcond", b_rcond)
    if is_auto(ridge):
        ridge = AUTO
    elif isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not (ridge >= 0 and math.isfinite(ridge)):
        raise ConfigError(f"ridge must be a number >= 0 or 'auto' (chosen by cross-validation), got {ridge!r}")
    if SOLVERS[solver].squares_condition:
        floor = gram_min_rcond(dtype)
        if u < floor:
            raise ConfigError(
                f"solver 'gram' cannot honour u_rcond={u:g} in {np.dtype(dtype).name}: the normal "
                f"equations square the condition number, so use u_rcond >= {floor:.1e} or solver=qr "
                f"(the same answer as svd, exact to rounding, at less cost)")
    return u, b, ridge if is_auto(ridge) else float(ridge)


PINV_GRAM_MAX_COND = 100.0
"""``pseudoinverse`` takes the Gram route only for matrices at most this ill-conditioned."""
PINV_GRAM_MIN_SIDE = 64


def _pseudoinverse_svd(m, rcond):
    u, s, vt = svd(m)
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
