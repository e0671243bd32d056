"""The one place that decides whether a kernel runs natively or as its pure-JAX equivalent.

The native kernels (``products``, ``solve``, ``squash``, ``conv``: one ``.cc`` file and one
Python wrapper each) are XLA FFI calls into the extension ``zorb.kernels._native``, which calls
the BLAS and LAPACK that jaxlib's own CPU kernels use (SciPy's OpenBLAS, through
``scipy.linalg.cython_blas``/``cython_lapack``: no copy, no callback into Python, one BLAS
thread pool). A kernel runs natively only where all of these hold:

- the extension is built (an install without a C++ compiler has none) and loads;
- ``ZORB_NATIVE_BLAS`` is not ``0`` in the environment when zorb's kernels are first imported;
- its arrays are float64 (``float64``);
- the computation is lowered for the CPU (``on_cpu``: on a GPU or TPU the same jitted function
  runs the pure-JAX code).

Everywhere else each wrapper runs its pure-JAX equivalent, the reference the native kernels are
tested against (tests/test_kernels_native.py): the same results to rounding, another summation
order. Setting ``NATIVE`` to False before a function is traced selects the pure-JAX path in a
running process (the tests do).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

_OFF = ("0", "false", "no", "off")
_ON = ("1", "true", "yes", "on")
_INT_MAX = 2 ** 31 - 1  # the BLAS's integer type


def _setting(name: str, default: str) -> str:
    return os.environ.get(name, default).strip().lower()


def _load():
    """The extension with its BLAS/LAPACK functions set and its FFI targets registered; None
    when it is missing, built from other sources, or turned off."""
    if _setting("ZORB_NATIVE_BLAS", "1") in _OFF:
        return None
    try:
        from zorb.kernels import _native
    except ImportError:
        return None
    from scipy.linalg import cython_blas, cython_lapack

    from zorb.kernels.special import LN2_HI, LN2_LO, LOG_SERIES

    try:
        _native.set_blas({**{name: cython_blas.__pyx_capi__[name] for name in ("dgemm", "dsyrk", "dtrsm")},
                          **{name: cython_lapack.__pyx_capi__[name]
                             for name in ("dsyevd", "dsytrd", "dsterf", "dstemr", "dstedc", "dormtr", "dpotrf")}})
        _native.set_log_constants(LN2_HI, LN2_LO, LOG_SERIES)
    except (TypeError, AttributeError):  # an extension built from other sources: rebuild (make install)
        return None
    for name, handler in _native.handlers().items():
        jax.ffi.register_ffi_target(name, handler, platform="cpu")
    return _native


EXTENSION = _load()
"""The loaded extension module (its pool and split queries: ``pool_workers()``, ``gram_parts(n,
k)``, ``gemm_parts(m, n, k)``, ``vector_lanes()``), or None."""

NATIVE = EXTENSION is not None
"""Whether float64 kernels on the CPU run natively (the extension is built and not turned off)."""

SHARED_POOL = NATIVE and _setting("ZORB_BLAS_POOL", "1") not in _OFF and bool(EXTENSION.share_threads())
"""Whether OpenBLAS's parallel jobs run on zorb's worker pool (``ZORB_BLAS_POOL=0``: on
OpenBLAS's own threads)."""

AVX512_CORES = ("skylakex", "cooperlake", "sapphirerapids")
"""OpenBLAS's names for its AVX-512 kernel sets."""


def openblas_cores() -> dict[str, str]:
    """The kernel set each loaded OpenBLAS chose, e.g. ``{"numpy": "Haswell", "scipy":
    "SkylakeX"}`` (SciPy's is the one the native kernels and jaxlib's LAPACK kernels call)."""
    try:
        import scipy.linalg.cython_blas  # noqa: F401  (loaded, so that it is listed)
        from threadpoolctl import threadpool_info
    except ImportError:
        return {}
    return {("scipy" if "scipy.libs" in info.get("filepath", "") else "numpy"): info.get("architecture")
            for info in threadpool_info() if info.get("internal_api") == "openblas"}


def wide_kernels(core: str | None) -> bool:
    """Whether ``core`` (an OpenBLAS kernel set) is one of its AVX-512 sets."""
    return (core or "").lower() in AVX512_CORES


def _gemm_native() -> bool:
    """``dgemm`` through BLAS unless XLA's own dot is the faster: on a CPU with AVX-512 whose
    OpenBLAS runs narrower kernels (``OPENBLAS_CORETYPE=Haswell`` set by the environment, or a
    CPU it does not know), XLA's AVX-512 dot wins (measured: 158 GFLOP/s against OpenBLAS's
    Haswell kernels' 117 on 10,000 x 1,000 @ 1,000 x 900; with its SkylakeX kernels OpenBLAS
    reaches 190). The Gram matrix stays on ``dsyrk`` either way: half the flops.
    ``ZORB_NATIVE_GEMM=1`` (or ``0``) forces the choice."""
    if not NATIVE:
        return False
    forced = _setting("ZORB_NATIVE_GEMM", "auto")
    if forced in _OFF + _ON:
        return forced in _ON
    from zorb.kernels import cpu

    if not cpu.has_avx512():
        return True
    core = openblas_cores().get("scipy")
    return core is None or wide_kernels(core)


GEMM_NATIVE = _gemm_native()
"""Whether ``products.matmul`` goes through BLAS's ``dgemm`` (``products.gram`` goes through
``dsyrk`` whenever ``NATIVE``)."""

MIN_SIDE = 16
"""Matrices with a side shorter than this stay in XLA: such products are memory-bound
(matrix-vector or rank-few), XLA's loops are as fast or faster there (10,000 x 1,000 @ 1,000 x
10: XLA 5.9 ms, dgemm 13.3 ms), and XLA's summation order is the one the tests' ill-conditioned
paper problems were calibrated on (Sinc's rcond=1e-15 fit lives on singular directions that
rounding noise decides)."""


def float64(*arrays) -> bool:
    """Whether a native kernel may take these arrays: the extension is on and all are float64."""
    return NATIVE and all(x.dtype == jnp.float64 for x in arrays)


def blas_matrices(*arrays) -> bool:
    """``float64`` for 2-D matrices whose sides are all at least ``MIN_SIDE`` and fit the BLAS's
    integer type."""
    return float64(*arrays) and all(x.ndim == 2 and MIN_SIDE <= min(x.shape) and max(x.shape) <= _INT_MAX
                                    for x in arrays)


def on_cpu(target: str, result, pure_jax, *args, **attributes):
    """The FFI call ``target(*args, **attributes)`` (``result``: a ``jax.ShapeDtypeStruct`` or a
    tuple of them) where the computation is lowered for the CPU, ``pure_jax(*args)`` on any
    other platform; a tuple ``result`` comes back as a tuple (``pure_jax`` returns one too)."""

    def native(*args):
        out = jax.ffi.ffi_call(target, result, vmap_method="sequential")(*args, **attributes)
        return tuple(out) if isinstance(result, tuple) else out

    return jax.lax.platform_dependent(*args, cpu=native, default=pure_jax)
