"""The fit's large products, ``matmul`` and ``gram``, through BLAS on the CPU (products.cc).

On the CPU, XLA's float64 dot reaches 55-66 GFLOP/s on the fit's shapes (10,000 x 1,000
by 1,000 x 800) where OpenBLAS's ``dgemm`` reaches 75-88 on the same two cores, and XLA
forms ``A^T A`` as a full product where ``dsyrk`` computes one triangle (half the flops).
So where ``zorb.kernels.native`` allows, these lower to XLA FFI calls into ``dgemm`` and
``dsyrk``; elsewhere they are their pure-JAX equivalents ``jax_matmul`` and ``jax_gram``.
Results equal XLA's to rounding (another summation order).

Both are differentiable (their JVP uses ``jnp.matmul``), so layers that call them still
work under ``jax.grad`` (the Adam baseline).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from functools import partial

import jax
import jax.numpy as jnp

from zorb.kernels import native

MIN_OUTPUT_COLUMNS = 192
"""``a @ b`` (``a`` not transposed) with fewer output columns than this stays in XLA: OpenBLAS
is slower on such narrow outputs (10,000 x 1,000 @ 1,000 x 128: 54 ms against XLA's 43;
x 200: 63 ms against 74; x 800: 76 GFLOP/s against 57)."""


_IN_XLA = contextvars.ContextVar("zorb_products_in_xla", default=False)


@contextlib.contextmanager
def products_in_xla() -> Iterator[None]:
    """Within the block, ``matmul`` traces XLA's dot instead of BLAS's ``dgemm``.

    For compiled loops of small products, such as Adam's steps on batches of 32 rows: with
    two threads, each ``dgemm`` inside the loop wakes the BLAS workers, and that hand-off
    costs more than the product (docs/performance.md, "One thread pool"). Only tracing reads
    it: use it inside the jitted function, so that every trace of it takes this route.
    """
    token = _IN_XLA.set(True)
    try:
        yield
    finally:
        _IN_XLA.reset(token)


def jax_matmul(a, b, *, transpose_a: bool = False, transpose_b: bool = False):
    """``matmul``'s pure-JAX equivalent."""
    return jnp.matmul(a.T if transpose_a else a, b.T if transpose_b else b)


def _out_shape(a, b, transpose_a, transpose_b):
    return (a.shape[1] if transpose_a else a.shape[0], b.shape[0] if transpose_b else b.shape[1])


@partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _matmul(a, b, transpose_a, transpose_b):
    return native.on_cpu("zorb_matmul_f64", jax.ShapeDtypeStruct(_out_shape(a, b, transpose_a, transpose_b), jnp.float64),
                         partial(jax_matmul, transpose_a=transpose_a, transpose_b=transpose_b), a, b,
                         transpose_a=transpose_a, transpose_b=transpose_b)


@_matmul.defjvp
def _matmul_jvp(transpose_a, transpose_b, primals, tangents):
    (a, b), (da, db) = primals, tangents
    product = partial(jax_matmul, transpose_a=transpose_a, transpose_b=transpose_b)
    return _matmul(a, b, transpose_a, transpose_b), product(da, b) + product(a, db)


def matmul(a, b, *, transpose_a: bool = False, transpose_b: bool = False):
    """``op(a) @ op(b)`` with ``op`` the transpose where asked; 2-D ``a``, ``b``.

    Asking for a transpose (``matmul(a, t, transpose_a=True)`` for ``a.T @ t``) lets BLAS
    read the matrix as it lies instead of XLA materialising the transposed copy.
    """
    narrow = not transpose_a and _out_shape(a, b, transpose_a, transpose_b)[1] < MIN_OUTPUT_COLUMNS
    if narrow or _IN_XLA.get() or not native.GEMM_NATIVE or not native.blas_matrices(a, b):
        return jax_matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    return _matmul(a, b, bool(transpose_a), bool(transpose_b))


def jax_gram(a, *, rows: bool = False):
    """``gram``'s pure-JAX equivalent."""
    return a @ a.T if rows else a.T @ a


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def _gram(a, rows):
    n = a.shape[0] if rows else a.shape[1]
    return native.on_cpu("zorb_gram_f64", jax.ShapeDtypeStruct((n, n), jnp.float64), partial(jax_gram, rows=rows), a,
                         rows=rows)


@_gram.defjvp
def _gram_jvp(rows, primals, tangents):
    (a,), (da,) = primals, tangents
    cross = a @ da.T if rows else a.T @ da
    return _gram(a, rows), cross + cross.T


def gram(a, *, rows: bool = False):
    """The Gram matrix ``a.T @ a`` of a 2-D ``a`` (``a @ a.T`` with ``rows``). On the BLAS
    route one triangle is computed (``dsyrk``) and mirrored, so it is exactly symmetric."""
    if not native.blas_matrices(a):
        return jax_gram(a, rows=rows)
    return _gram(a, bool(rows))
