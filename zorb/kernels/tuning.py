"""The process tuning zorb's command line and benchmark apply, as one explicit call.

``tune_process()`` lets OpenBLAS use the CPU's AVX-512 kernels where its own detection misses
them (``zorb.kernels.cpu``: sets ``OPENBLAS_CORETYPE``) and makes glibc keep freed memory for
reuse (``zorb.kernels.allocator``: ``mallopt``). Both change the whole process, so importing
zorb does neither: a library user gets them only by calling this, first thing, before numpy
(or anything that loads it, such as jax) is imported: a BLAS loaded earlier keeps its kernels.
``ZORB_OPENBLAS_TUNING=0`` and ``ZORB_MALLOC_TUNING=0`` turn each part off. This module
imports nothing heavy.
"""

from __future__ import annotations

from zorb.kernels import allocator, cpu


def tune_process() -> dict[str, object]:
    """Apply both settings once; returns what was done: ``{"openblas_coretype": str | None,
    "malloc_tuned": bool}``."""
    return {"openblas_coretype": cpu.tune_openblas(), "malloc_tuned": allocator.tune()}
