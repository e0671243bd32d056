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
from zorb.solvers import DEFAULT_RCOND, SOLVERS, check_solver_options, spectrum_summary
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


@jax.jit
def _targets(layers, auxes, y, key):
    """Push ``y`` backward through ``layers`` (top first); return the target and the layers."""
    new = list(layers)
    t = y
    for j in reversed(range(len(layers))):
        t, new[j] = layers[j].inverse(t, auxes[j], jax.random.fold_in(key, j))
    return t, tuple(new), jnp.all(jnp.isfinite(t))


@partial(jax.jit, static_argnames=("solver",))
def _solve(layer, a, t, rcond, ridge, *, solver):
    w, spectrum = SOLVERS[solver].solve(layer.design(a), layer.target_rows(t), rcond=rcond, ridge=ridge,
                                        bias=layer.bias)
    return w, spectrum, jnp.all(jnp.isfinite(w))


@jax.jit
def _forward(layer, a):
    return layer.forward(a)


def as_data(name: str, value, dtype, shape) -> jax.Array:
    array = jnp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.number) or jnp.issubdtype(array.dtype, jnp.complexfloating):
        raise ConfigError(f"{name} must be a real numeric array, got dtype {array.dtype}")
    array = array.astype(dtype)
    if array.ndim < 1 or tuple(array.shape[1:]) != tuple(shape):
        raise ConfigError(f"{name} must have shape (N, {', '.join(map(str, shape))}), got {tuple(array.shape)}")
    if not bool(jnp.all(jnp.isfinite(array))):
        raise ConfigError(f"{name} contains NaN or infinite values")
    return array


def fit(network: Network, X, Y, *, solver: str = "svd", rcond: float = DEFAULT_RCOND,
        u_rcond: float | None = None, b_rcond: float | None = None, ridge: float = 0.0,
        per_layer: Mapping[int, Mapping] | None = None, seed: int = 0,
        callback: Callable[[LayerReport], None] | None = None) -> tuple[Network, FitReport]:
    """Train ``network`` on ``X`` (N x input_shape) and ``Y`` (N x output_shape) in one pass.

    ``rcond`` sets ``u_rcond`` (cut of the update solve) and ``b_rcond`` (cut of the backward
    pseudoinverses) unless given; ``per_layer`` maps a parametric layer's 1-based position to
    its own ``solver``/``rcond``/``u_rcond``/``b_rcond``/``ridge`` (its ``b_rcond`` is the cut
    used when targets pass backward through it). ``seed`` drives ReLU's random inverse.
    ``callback`` receives each ``LayerReport`` as soon as that layer is solved.

    Returns the trained network and a ``FitReport``. Raises ``FitError`` naming the layer and
    its condition number when a target or solved weight is not finite.
    """
    options = resolve_options(network, solver=solver, rcond=rcond, u_rcond=u_rcond, b_rcond=b_rcond,
                              ridge=ridge, per_layer=per_layer)
    dtype = network.dtype
    a = as_data("X", X, dtype, network.input_shape)
    y = as_data("Y", Y, dtype, network.output_shape)
    if a.shape[0] != y.shape[0]:
        raise ConfigError(f"X has {a.shape[0]} samples but Y has {y.shape[0]}")

    started = time.perf_counter()
    layers = list(network.layers)
    auxes: list = [None] * len(layers)
    key = jax.random.key(seed)
    last = max(i for i, layer in enumerate(layers) if layer.parametric)
    reports, compile_total = [], 0.0
    scalar = partial(jnp.asarray, dtype=dtype)

    for i in range(last + 1):
        layer = layers[i]
        if not layer.parametric:
            a, c, _ = timed(_forward, layer, a)
            compile_total += c
            continue
        opts = options[i + 1]
        compile_s = forward_s = target_s = 0.0
        if any(above.needs_observation for above in layers[i + 1:]):
            observed, c, forward_s = timed(_observe, tuple(layers[i:]), a)
            layers[i + 1:] = observed[1:]
            compile_s += c
        for j in range(i + 1, len(layers)):
            if layers[j].parametric and auxes[j] is None:
                auxes[j], c, r = timed(_prepare_inverse, layers[j], scalar(options[j + 1].b_rcond))
                compile_s, target_s = compile_s + c, target_s + r
        (t, inverted, t_finite), c, r = timed(_targets, tuple(layers[i + 1:]), tuple(auxes[i + 1:]), y,
                                              jax.random.fold_in(key, i + 1))
        layers[i + 1:] = inverted
        compile_s, target_s = compile_s + c, target_s + r
        (w, spectrum, w_finite), c, solve_s = timed(_solve, layer, a, t, scalar(opts.u_rcond), scalar(opts.ridge),
                                                     solver=opts.solver)
        compile_s += c
        spectrum = np.asarray(spectrum)
        cutoff, rank, cond = spectrum_summary(spectrum, opts.u_rcond)
        if not bool(t_finite):
            raise FitError(f"layer {i + 1}: the target pushed back from the labels is not finite "
                           f"(condition number of its design matrix {cond:.3g}); check the scale of Y "
                           f"and raise b_rcond")
        if not bool(w_finite):
            raise FitError(f"layer {i + 1}: the solved weights are not finite (condition number "
                           f"{cond:.3g}); raise u_rcond or add a ridge")
        layers[i] = layer.with_weights(w)
        rows = _design_rows(layer, a)
        report = LayerReport(
            index=i + 1, kind=layer.kind, design_shape=(rows, int(layer.weights.shape[0])),
            solver=opts.solver, u_rcond=opts.u_rcond, b_rcond=opts.b_rcond, ridge=opts.ridge,
            spectrum=spectrum, cutoff=cutoff, rank=rank, cond=cond, solve_seconds=solve_s,
            target_seconds=target_s, forward_seconds=forward_s, compile_seconds=compile_s)
        if i < last:
            a, c, r = timed(_forward, layers[i], a)
            report.forward_seconds += r
            report.compile_seconds += c
        compile_total += report.compile_seconds
        reports.append(report)
        if callback is not None:
            callback(report)

    wall = time.perf_counter() - started
    fitted = network.replace_layers(layers)
    return fitted, FitReport(layers=reports, fit_seconds=wall - compile_total, compile_seconds=compile_total,
                             solver=solver)


def _design_rows(layer, a) -> int:
    """Rows of the layer's design matrix: samples, times output positions for Conv2D."""
    positions = math.prod(layer.out_shape[:-1]) if layer.kind == "conv2d" else 1
    return int(a.shape[0]) * positions
