"""Let OpenBLAS use the vector unit the CPU has.

OpenBLAS (the BLAS/LAPACK under numpy, SciPy and, through SciPy, jaxlib's CPU
factorizations and zorb's native kernels) picks its kernels from the CPU model when it is loaded. On
AMD CPUs with AVX-512 (Zen 4 and later), and on virtual machines that report a generic AMD
model, its detection can fall back to the AVX2 ``Haswell`` kernels. Measured on the
project's 2-core AMD EPYC (AVX-512) machine (docs/performance.md): a 4000^3 float64 product
ran at 114-118 GFLOP/s with the detected ``Haswell`` kernels and 192-204 GFLOP/s with
``OPENBLAS_CORETYPE=SkylakeX``, against 154-157 for XLA's own dot.

``tune_openblas()`` sets ``OPENBLAS_CORETYPE=SkylakeX`` when the variable is unset, the CPU
is AMD and Linux reports every AVX-512 subset those kernels use (F, CD, BW, DQ, VL: Linux
lists them only when the kernel saves their registers). Intel CPUs are left to OpenBLAS's
own detection, which knows them. It runs only when called (``zorb.kernels.tuning.tune_process``,
which ``run.py`` calls first thing), and must run before numpy and SciPy load their OpenBLAS
(a library loaded earlier keeps its kernels). ``ZORB_OPENBLAS_TUNING=0`` turns it off; an
``OPENBLAS_CORETYPE`` already set is kept.
This module imports nothing heavy so that it can run first.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache

AVX512_KERNEL_FLAGS = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})
CORETYPE = "SkylakeX"

@lru_cache(maxsize=None)
def _cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str, frozenset[str]]:
    """The first CPU's vendor and flags, or ``("", {})`` when they cannot be read."""
    vendor, flags = "", frozenset()
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "vendor_id" and not vendor:
                    vendor = value.strip()
                elif key == "flags" and not flags:
                    flags = frozenset(value.split())
                if vendor and flags:
                    break
    except OSError:
        pass
    return vendor, flags


def has_avx512() -> bool:
    """Whether Linux reports the AVX-512 subsets OpenBLAS's and XLA's AVX-512 kernels use."""
    return AVX512_KERNEL_FLAGS <= _cpuinfo()[1]


def openblas_coretype(environ=None, cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The ``OPENBLAS_CORETYPE`` zorb would set in ``environ`` (default ``os.environ``), or
    None when it would leave OpenBLAS's own choice alone."""
    environ = os.environ if environ is None else environ
    if environ.get("ZORB_OPENBLAS_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    if environ.get("OPENBLAS_CORETYPE") or not sys.platform.startswith("linux"):
        return None
    vendor, flags = _cpuinfo(cpuinfo)
    if vendor != "AuthenticAMD" or not AVX512_KERNEL_FLAGS <= flags:
        return None
    return CORETYPE


def tune_openblas() -> str | None:
    """Set ``OPENBLAS_CORETYPE`` for libraries loaded from now on; returns what was set."""
    coretype = openblas_coretype()
    if coretype is not None:
        os.environ["OPENBLAS_CORETYPE"] = coretype
    return coretype
