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
    shapes = tuple((getattr(leaf, "shape", ()), str(getattr(leaf, "dtype", type(leaf).__name__)),
                    _placement(leaf)) for leaf in leaves)
    return fn, treedef, shapes, tuple(sorted(static.items()))


def _placement(leaf):
    """The device a committed array lives on (executables are compiled for one placement)."""
    if isinstance(leaf, jax.Array) and getattr(leaf, "committed", False):
        return leaf.sharding
    return None


def clear() -> None:
    """Forget the compiled executables (e.g. after changing what a function traces to)."""
    _CACHE.clear()


def _compiled(fn, args, static):
    key = _signature(fn, args, static)
    compiled = _CACHE.get(key)
    if compiled is not None:
        _CACHE.move_to_end(key)
        return compiled, 0.0
    start = time.perf_counter()
    compiled = fn.lower(*args, **static).compile()
    seconds = time.perf_counter() - start
    _CACHE[key] = compiled
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return compiled, seconds


def timed_each(fn, calls, **static):
    """Like ``timed`` for several argument tuples: all compiled first, then dispatched
    together (asynchronously, so several devices work at once) and waited for together.

    Returns ``(outputs, compile_seconds, run_seconds)``.
    """
    executables, compile_seconds = [], 0.0
    for args in calls:
        compiled, seconds = _compiled(fn, args, static)
        executables.append(compiled)
        compile_seconds += seconds
    start = time.perf_counter()
    outs = jax.block_until_ready([compiled(*args) for compiled, args in zip(executables, calls)])
    return outs, compile_seconds, time.perf_counter() - start


def timed(fn, *args, **static):
    """``fn(*args, **static)`` for a ``jax.jit``-ed ``fn`` whose static arguments are ``static``.

    Returns ``(output, compile_seconds, run_seconds)``; compile time is 0 on a cache hit.
    """
    compiled, compile_seconds = _compiled(fn, args, static)
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, compile_seconds, time.perf_counter() - start
