"""Run jitted stages with compile time and run time measured apart.

Each stage is lowered and compiled ahead of time once per argument structure (the compiled
executable is cached for later calls, e.g. a second fit of the same shapes), then run and
waited for with ``block_until_ready`` before the clock is read.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import jax

_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 512


def _signature(fn, args, static):
    leaves, treedef = jax.tree_util.tree_flatten(args)
    shapes = tuple((getattr(leaf, "shape", ()), str(getattr(leaf, "dtype", type(leaf).__name__))) for leaf in leaves)
    return fn, treedef, shapes, tuple(sorted(static.items()))


def timed(fn, *args, **static):
    """``fn(*args, **static)`` for a ``jax.jit``-ed ``fn`` whose static arguments are ``static``.

    Returns ``(output, compile_seconds, run_seconds)``; compile time is 0 on a cache hit.
    """
    key = _signature(fn, args, static)
    compiled = _CACHE.get(key)
    compile_seconds = 0.0
    if compiled is None:
        start = time.perf_counter()
        compiled = fn.lower(*args, **static).compile()
        compile_seconds = time.perf_counter() - start
        _CACHE[key] = compiled
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        _CACHE.move_to_end(key)
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, compile_seconds, time.perf_counter() - start
