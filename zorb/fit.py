"""ZORB's one-pass fit (ZORB.md, "Training"), as a plain function.

    A = X
    for l in 1..L:
        if layer l is parametric:
            forward from l to L on A          (refreshes softmax's normalisers; skipped if none above)
            T = Y; T = inverse_j(T) for j = L .. l+1
            W_l = least-squares solve of [A, 1] W = T
        A = forward_l(A)

Layers above ``l`` still hold their initial weights while ``l`` is solved, so each one's
backward pseudoinverse is computed once and reused by every layer below it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from zorb.errors import ConfigError, FitError
from zorb.network import Network
from zorb.layers.activations import SquashingLayer
from zorb.solvers import (DEFAULT_RCOND, SOLVERS, check_solver_options, design_matrix, gram_moments, qr_triangle,
                          solve_from_gram, solve_from_triangle, spectrum_summary)
from zorb.timing import timed


@dataclasses.dataclass(frozen=True)
class LayerOptions:
    solver: str
    u_rcond: float
    b_rcond: float
    ridge: float


@dataclasses.dataclass
class LayerReport:
    """What the fit measured for one parametric layer (``index`` is its 1-based position)."""

    index: int
    kind: str
    design_shape: tuple[int, int]
    solver: str
    u_rcond: float
    b_rcond: float
    ridge: float
    spectrum: np.ndarray
    cutoff: float
    rank: int
    cond: float
    solve_seconds: float
    target_seconds: float
    forward_seconds: float
    compile_seconds: float


@dataclasses.dataclass
class FitReport:
    layers: list[LayerReport]
    fit_seconds: float
    """Wall time of the fit less compilation: the time a warm second fit takes."""
    compile_seconds: float
    solver: str

    def layer(self, index: int) -> LayerReport:
        return next(r for r in self.layers if r.index == index)


PER_LAYER_KEYS = ("solver", "rcond", "u_rcond", "b_rcond", "ridge")


def resolve_options(network: Network, *, solver: str, rcond, u_rcond, b_rcond, ridge,
                    per_layer: Mapping | None) -> dict[int, LayerOptions]:
    """Global settings overridden per parametric layer; validated before any compute."""
    dtype = str(network.dtype)
    per_layer = dict(per_layer or {})
    for index, options in per_layer.items():
        if index not in network.parametric_indices:
            raise ConfigError(f"per_layer names layer {index}, which is not a dense/conv2d layer "
                              f"(those are {network.parametric_indices})")
        unknown = sorted(set(options) - set(PER_LAYER_KEYS))
        if unknown:
            raise ConfigError(f"per_layer layer {index}: unknown option {unknown[0]!r} "
                              f"(known: {', '.join(PER_LAYER_KEYS)})")
    resolved = {}
    for index in network.parametric_indices:
        own = per_layer.get(index, {})
        layer_rcond = own.get("rcond", rcond)
        u = own.get("u_rcond", u_rcond if "rcond" not in own else None)
        b = own.get("b_rcond", b_rcond if "rcond" not in own else None)
        name = own.get("solver", solver)
        try:
            u, b, r = check_solver_options(name, layer_rcond, u, b, own.get("ridge", ridge), dtype)
        except ConfigError as error:
            raise ConfigError(f"layer {index}: {error}") from None
        resolved[index] = LayerOptions(name, u, b, r)
    return resolved


@jax.jit
def _observe(layers, a):
    """Forward over the training data through ``layers``, recording what inverses need."""
    new = []
    for layer in layers:
        a, layer = layer.observe(a)
        new.append(layer)
    return tuple(new)


@jax.jit
def _prepare_inverse(layer, rcond):
    return layer.prepare_inverse(rcond)


@partial(jax.jit, static_argnames=("offset", "fixed_ranges"))
def _targets(layers, auxes, y, key, first_row, *, offset, fixed_ranges):
    """Push ``y`` backward through ``layers`` (top first; ``layers[0]`` sits at position
    ``offset`` of the network). With ``fixed_ranges`` Sigmoid/Tanh use their stored output
    range (a chunk of rows); otherwise they take it from this target (all rows).

    Returns the target at the input of ``layers[0]``, the layers (with new ranges) and
    whether the target is finite.
    """
    new = list(layers)
    t = y
    for j in reversed(range(len(layers))):
        layer_key = jax.random.fold_in(key, offset + j)
        if fixed_ranges and isinstance(layers[j], SquashingLayer):
            t = layers[j].inverse_in_range(t)
        else:
            t, new[j] = layers[j].inverse(t, auxes[j], layer_key, first_row)
    return t, tuple(new), jnp.all(jnp.isfinite(t))


@partial(jax.jit, static_argnames=("solver",))
def _solve(layer, a, t, rcond, ridge, *, solver):
    w, spectrum = SOLVERS[solver].solve(layer.design(a), layer.target_rows(t), rcond=rcond, ridge=ridge,
                                        bias=layer.bias)
    return w, spectrum, jnp.all(jnp.isfinite(w))


@partial(jax.jit, static_argnames=("solver",))
def _accumulate(layer, a, t, previous, *, solver):
    """Add a chunk of rows to the running QR triangle or normal-equation moments."""
    m, rows = design_matrix(layer.design(a), layer.bias), layer.target_rows(t)
    return qr_triangle(m, rows, previous) if solver == "qr" else gram_moments(m, rows, previous)


@partial(jax.jit, static_argnames=("solver", "rows", "cols"))
def _finish(accumulated, rcond, ridge, *, solver, rows, cols):
    """Solve from what ``_accumulate`` gathered over all ``rows`` rows (``cols`` design columns)."""
    if solver == "qr":
        w, spectrum = solve_from_triangle(accumulated, cols, rcond, ridge)
    else:
        w, spectrum = solve_from_gram(*accumulated, rows, rcond, ridge)
    return w, spectrum, jnp.all(jnp.isfinite(w))


@jax.jit
def _forward(layers, a):
    for layer in layers:
        a = layer.forward(a)
    return a


def as_data(name: str, value, dtype, shape) -> jax.Array:
    """``value`` as a finite ``dtype`` array of shape (N, *shape), or a ConfigError."""
    array = jnp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.number) or jnp.issubdtype(array.dtype, jnp.complexfloating):
        raise ConfigError(f"{name} must be a real numeric array, got dtype {array.dtype}")
    array = array.astype(dtype)
    if array.ndim < 1 or tuple(array.shape[1:]) != tuple(shape):
        raise ConfigError(f"{name} must have shape (N, {', '.join(map(str, shape))}), got {tuple(array.shape)}")
    if not bool(jnp.all(jnp.isfinite(array))):
        raise ConfigError(f"{name} contains NaN or infinite values")
    return array


class _Clock:
    """Adds up compile and run seconds of the stages that make one layer's step."""

    def __init__(self):
        self.compile = self.forward = self.target = self.solve = 0.0

    def run(self, stage: str, fn, *args, **static):
        out, compile_seconds, run_seconds = timed(fn, *args, **static)
        self.compile += compile_seconds
        setattr(self, stage, getattr(self, stage) + run_seconds)
        return out


def _rows_of(layers, start: int, stop: int):
    """``layers`` with their per-sample state (softmax normalisers) cut to rows start:stop."""
    return tuple(dataclasses.replace(layer, **{f: getattr(layer, f)[start:stop] for f in layer.per_sample})
                 if layer.per_sample and getattr(layer, layer.per_sample[0]) is not None else layer
                 for layer in layers)


def fit(network: Network, X, Y, *, solver: str = "svd", rcond: float = DEFAULT_RCOND,
        u_rcond: float | None = None, b_rcond: float | None = None, ridge: float = 0.0,
        per_layer: Mapping[int, Mapping] | None = None, seed: int = 0, chunk_rows: int | None = None,
        callback: Callable[[LayerReport], None] | None = None) -> tuple[Network, FitReport]:
    """Train ``network`` on ``X`` (N x input_shape) and ``Y`` (N x output_shape) in one pass.

    ``rcond`` sets ``u_rcond`` (cut of the update solve) and ``b_rcond`` (cut of the backward
    pseudoinverses) unless given; ``per_layer`` maps a parametric layer's 1-based position to
    its own ``solver``/``rcond``/``u_rcond``/``b_rcond``/``ridge`` (its ``b_rcond`` is the cut
    used when targets pass backward through it). ``seed`` drives ReLU's random inverse.
    ``callback`` receives each ``LayerReport`` as soon as that layer is solved.

    ``chunk_rows`` streams the rows through every step in chunks of that many (``X`` and
    ``Y`` may then be any arrays that slice, e.g. a ``numpy.memmap``), so memory no longer
    grows with N: the solve accumulates a QR triangle (``qr``) or normal equations
    (``gram``), Sigmoid/Tanh ranges come from a pass over all rows, and each layer's input is
    recomputed from ``X``. The weights equal the in-memory fit's to rounding.

    Returns the trained network and a ``FitReport``. Raises ``FitError`` naming the layer and
    its condition number when a target or solved weight is not finite.
    """
    options = resolve_options(network, solver=solver, rcond=rcond, u_rcond=u_rcond, b_rcond=b_rcond,
                              ridge=ridge, per_layer=per_layer)
    n = len(X)
    if len(Y) != n:
        raise ConfigError(f"X has {n} samples but Y has {len(Y)}")
    if chunk_rows is not None:
        if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise ConfigError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
        for index, opts in options.items():
            if not SOLVERS[opts.solver].streams:
                raise ConfigError(f"layer {index}: solver {opts.solver!r} needs the whole design matrix in "
                                  f"memory; use solver=qr (the same answer) or gram with chunk_rows")
    started = time.perf_counter()
    if chunk_rows is None or chunk_rows >= n:
        layers, reports = _fit_in_memory(network, X, Y, options, seed, callback)
    else:
        layers, reports = _fit_chunked(network, X, Y, options, seed, chunk_rows, callback)
    wall = time.perf_counter() - started
    compile_total = sum(r.compile_seconds for r in reports)
    return network.replace_layers(layers), FitReport(layers=reports, fit_seconds=wall - compile_total,
                                                     compile_seconds=compile_total, solver=solver)


def _prepare_inverses(layers, auxes, above: int, options, clock: _Clock) -> None:
    """Pseudoinverses of the parametric layers above ``above``, each computed once: they hold
    their initial weights until their own turn comes."""
    for j in range(above + 1, len(layers)):
        if layers[j].parametric and auxes[j] is None:
            rcond = jnp.asarray(options[j + 1].b_rcond, layers[j].weights.dtype)
            auxes[j] = clock.run("target", _prepare_inverse, layers[j], rcond)


def _report(i, layer, rows, opts, spectrum, t_finite, w_finite, clock) -> LayerReport:
    spectrum = np.asarray(spectrum)
    cutoff, rank, cond = spectrum_summary(spectrum, opts.u_rcond)
    if not bool(t_finite):
        raise FitError(f"layer {i + 1}: the target pushed back from the labels is not finite "
                       f"(condition number of its design matrix {cond:.3g}); check the scale of Y "
                       f"and raise b_rcond")
    if not bool(w_finite):
        raise FitError(f"layer {i + 1}: the solved weights are not finite (condition number "
                       f"{cond:.3g}); raise u_rcond or add a ridge")
    return LayerReport(
        index=i + 1, kind=layer.kind, design_shape=(rows, int(layer.weights.shape[0])), solver=opts.solver,
        u_rcond=opts.u_rcond, b_rcond=opts.b_rcond, ridge=opts.ridge, spectrum=spectrum, cutoff=cutoff,
        rank=rank, cond=cond, solve_seconds=clock.solve, target_seconds=clock.target,
        forward_seconds=clock.forward, compile_seconds=clock.compile)


def _fit_in_memory(network, X, Y, options, seed, callback):
    dtype = network.dtype
    a = as_data("X", X, dtype, network.input_shape)
    y = as_data("Y", Y, dtype, network.output_shape)
    layers = list(network.layers)
    auxes: list = [None] * len(layers)
    key = jax.random.key(seed)
    last = max(i for i, layer in enumerate(layers) if layer.parametric)
    reports = []
    pending = _Clock()  # non-parametric layers below the next parametric one
    for i in range(last + 1):
        layer = layers[i]
        if not layer.parametric:
            a = pending.run("forward", _forward, (layer,), a)
            continue
        opts, clock, pending = options[i + 1], pending, _Clock()
        if any(above.needs_observation for above in layers[i + 1:]):
            layers[i + 1:] = clock.run("forward", _observe, tuple(layers[i:]), a)[1:]
        _prepare_inverses(layers, auxes, i, options, clock)
        t, layers[i + 1:], t_finite = clock.run(
            "target", _targets, tuple(layers[i + 1:]), tuple(auxes[i + 1:]), y, jax.random.fold_in(key, i + 1), 0,
            offset=i + 1, fixed_ranges=False)
        scalar = partial(jnp.asarray, dtype=dtype)
        w, spectrum, w_finite = clock.run("solve", _solve, layer, a, t, scalar(opts.u_rcond), scalar(opts.ridge),
                                          solver=opts.solver)
        del t
        layers[i] = layer.with_weights(w)
        if i < last:
            a_next = clock.run("forward", _forward, (layers[i],), a)
        report = _report(i, layer, _design_rows(layer, a.shape[0]), opts, spectrum, t_finite, w_finite, clock)
        if i < last:
            a = a_next
        reports.append(report)
        if callback is not None:
            callback(report)
    return layers, reports


def _fit_chunked(network, X, Y, options, seed, chunk_rows, callback):
    dtype = network.dtype
    n = len(X)
    spans = [(start, min(start + chunk_rows, n)) for start in range(0, n, chunk_rows)]

    def rows(start, stop):
        return (as_data("X", np.asarray(X[start:stop]), dtype, network.input_shape),
                as_data("Y", np.asarray(Y[start:stop]), dtype, network.output_shape))

    layers = list(network.layers)
    auxes: list = [None] * len(layers)
    key = jax.random.key(seed)
    last = max(i for i, layer in enumerate(layers) if layer.parametric)
    reports = []
    for i in range(last + 1):
        layer = layers[i]
        if not layer.parametric:
            continue
        opts, clock = options[i + 1], _Clock()
        below, above = tuple(layers[:i]), i + 1
        layer_key = jax.random.fold_in(key, i + 1)

        def chunks():
            """Each chunk's layer input (recomputed through the trained layers below) and Y."""
            for start, stop in spans:
                x, y = rows(start, stop)
                yield start, stop, clock.run("forward", _forward, below, x), y

        if any(layer.needs_observation for layer in layers[above:]):
            observed = [clock.run("forward", _observe, tuple(layers[i:]), a)[1:] for _, _, a, _ in chunks()]
            layers[above:] = [_concat_samples(parts) for parts in zip(*observed)]
        _prepare_inverses(layers, auxes, i, options, clock)
        # Sigmoid/Tanh above take their range from the global extremes of their target, top
        # first: one pass over the rows for each, through the ranges already fixed above it.
        for j in reversed(range(above, len(layers))):
            if not isinstance(layers[j], SquashingLayer):
                continue
            lo, hi = np.inf, -np.inf
            for start, stop, _, y in chunks():
                t, _, _ = clock.run("target", _targets, _rows_of(layers[j + 1:], start, stop),
                                    tuple(auxes[j + 1:]), y, layer_key, start, offset=j + 1, fixed_ranges=True)
                lo, hi = min(lo, float(jnp.min(t))), max(hi, float(jnp.max(t)))
            layers[j] = layers[j].with_range(jnp.asarray(lo, dtype), jnp.asarray(hi, dtype))
        accumulated, t_finite = None, True
        for start, stop, a, y in chunks():
            t, _, finite = clock.run("target", _targets, _rows_of(layers[above:], start, stop), tuple(auxes[above:]),
                                     y, layer_key, start, offset=above, fixed_ranges=True)
            t_finite = t_finite and bool(finite)
            accumulated = clock.run("solve", _accumulate, layer, a, t, accumulated, solver=opts.solver)
        design_rows = _design_rows(layer, n)
        scalar = partial(jnp.asarray, dtype=dtype)
        w, spectrum, w_finite = clock.run("solve", _finish, accumulated, scalar(opts.u_rcond), scalar(opts.ridge),
                                          solver=opts.solver, rows=design_rows, cols=int(layer.weights.shape[0]))
        layers[i] = layer.with_weights(w)
        report = _report(i, layer, design_rows, opts, spectrum, t_finite, w_finite, clock)
        reports.append(report)
        if callback is not None:
            callback(report)
    return layers, reports


def _concat_samples(parts):
    """One layer from its per-chunk copies: per-sample state joined along the rows."""
    first = parts[0]
    if not first.per_sample:
        return first
    return dataclasses.replace(first, **{f: jnp.concatenate([getattr(p, f) for p in parts]) for f in first.per_sample})


def _design_rows(layer, samples: int) -> int:
    """Rows of the layer's design matrix: samples, times output positions for Conv2D."""
    positions = math.prod(layer.out_shape[:-1]) if layer.kind == "conv2d" else 1
    return int(samples) * positions
