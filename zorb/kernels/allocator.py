"""Keep freed memory in the process instead of handing it back to the kernel at once.

glibc serves every allocation above a threshold (128 KiB to 32 MiB) with a fresh ``mmap``
and unmaps it on free. ZORB allocates and frees arrays of tens to hundreds of MiB at every
step (activations, targets, GEMM outputs), so each one came back as untouched pages: the
first write to every 4 KiB page faulted into the kernel. Measured on a 2-core machine
(docs/performance.md): an elementwise ``tanh`` over a 10,000 x 1,000 float64 array took
29 ms with fresh pages and 5 ms with reused ones; a 10,000 x 1,000 x 800 XLA product 212 ms
and 184 ms.

``tune()`` asks glibc (``mallopt``) to serve large blocks from its heap (``M_MMAP_MAX = 0``),
to keep freed memory for reuse (``M_TRIM_THRESHOLD`` at its 2 GiB maximum) and to keep every
thread in that one heap (``M_ARENA_MAX = 1``). The last matters most: XLA runs a jitted
function on its own threads, and glibc gives those threads arenas of at most 64 MiB, so each
array larger than that (10,000 x 1,000 float64 is 80 MB) came from a fresh ``mmap`` and
went back to the kernel on free, whatever the other settings said. An elementwise pass over
such an array took 20-23 ms with its 19,532 page faults and 2-4 ms without (measured on the
project's 2-core AMD machine; numpy's in-place multiply: 4.4 ms); a 10,000 x 1,000 x 900 XLA
product 139 ms and 114 ms. The price is peak memory: holes in one heap stay resident where freed
``mmap`` blocks did not (mnist_6 on 60,000 rows, gram: 4.56 GiB against 3.24 GiB, 13.0 s
against 19.3 s), and the process does not shrink below its peak while it lives. It is
applied only when called (``zorb.kernels.tuning.tune_process``, which ``run.py`` calls before
JAX starts its threads); ``ZORB_MALLOC_TUNING=0`` turns it off. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
TRIM_THRESHOLD = 2 ** 31 - 1

_applied: bool | None = None


def tune() -> bool:
    """Apply the settings once per process; True when glibc accepted them."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("ZORB_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # glibc only: musl's mallopt does nothing useful
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _applied = (bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
                and bool(mallopt(M_ARENA_MAX, 1)))
    return _applied


def applied() -> bool:
    return bool(_applied)
