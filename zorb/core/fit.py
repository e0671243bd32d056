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
import time
from collections.abc import Callable, Mapping
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from zorb.kernels.squash import extrema
from zorb.errors import ConfigError, FitError
from zorb.core.network import Network
from zorb.core.layers.activations import SquashingLayer
from zorb.core.layers.dense import Dense
from zorb.core.solvers import (AUTO, SOLVERS, all_finite, check_solver_options, design_matrix, is_auto,
                               qr_triangle, robust_svd, solve_from_gram, solve_from_triangle, spectrum_summary)
from zorb.core.timing import timed, timed_each


@dataclasses.dataclass(frozen=True)
class LayerOptions:
    solver: str
    u_rcond: float
    b_rcond: float
    ridge: float | str
    """A value, or ``"auto"``: chosen by generalised cross-validation (``zorb.core.solvers``)."""


@dataclasses.dataclass
class LayerReport:
    """What the fit measured for one parametric layer (``index`` is its 1-based position).

    ``ridge`` is the value the solve used; with ``ridge="auto"`` it is GCV's choice and
    ``ridge_grid`` (G,) / ``ridge_score`` (G,) hold the values tried and their GCV criterion.
    """

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
    ridge_grid: np.ndarray | None = None
    ridge_score: np.ndarray | None = None


@dataclasses.dataclass
class FitReport:
    layers: list[LayerReport]
    fit_seconds: float
    """Wall time of the fit less compilation: the time a warm second fit takes."""
    compile_seconds: float
    solver: str
    devices: tuple[str, ...] = ()
    """The devices the rows were spread over."""

    def layer(self, index: int) -> LayerReport:
        return next(r for r in self.layers if r.index == index)


@dataclasses.dataclass(frozen=True)
class LayerStart:
    """What ``fit`` tells its ``progress`` hook just before it solves a parametric layer."""

    index: int                     # 1-based position, as in LayerReport
    kind: str
    design_shape: tuple[int, int]  # rows x columns of [A, 1]
    solver: str
    blocks: int                    # blocks of rows the data is streamed in (1: in memory)
    passes: int = 1                # passes the layer makes over those blocks


Progress = Callable[[LayerStart], "Callable[[int], None] | None"]
"""``fit``'s progress hook: called with a ``LayerStart``; may return ``advance(blocks)``,
which the fit calls with the number of blocks done as each wave of them (one per device) is
done, ``blocks * passes`` in all."""


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


def _layout(samples_last: bool) -> dict:
    """The keyword that tells layers their arrays hold one sample per column."""
    return {"samples_last": True} if samples_last else {}


@partial(jax.jit, static_argnames=("samples_last",))
def _observe(layers, a, samples_last=False):
    """Forward over the training data through ``layers``, recording what inverses need."""
    new = []
    for layer in layers:
        a, layer = layer.observe(a, **_layout(samples_last))
        new.append(layer)
    return tuple(new)


@jax.jit
def _prepare_inverse(layer, rcond):
    """What the layer's inverse needs (its weights' pseudoinverse), and whether it came out
    finite while the weights are (else LAPACK's SVD failed on them: ``_prepare_inverses``)."""
    aux = layer.prepare_inverse(rcond)
    return aux, all_finite(aux) | ~all_finite(layer.weights)


@partial(jax.jit, static_argnames=("offset", "fixed_ranges", "samples_last"))
def _targets(layers, auxes, y, key, first_row, *, offset, fixed_ranges, samples_last=False):
    """Push ``y`` backward through ``layers`` (top first; ``layers[0]`` sits at position
    ``offset`` of the network). With ``fixed_ranges`` Sigmoid/Tanh use their stored output
    range (a chunk of rows); otherwise they take it from this target (all rows).

    Returns the target at the input of ``layers[0]``, the layers (with new ranges) and
    whether the target is finite.
    """
    new = list(layers)
    t = y
    layout = _layout(samples_last)
    shifted = False  # whether t already has the bias of layers[j] subtracted
    for j in reversed(range(len(layers))):
        layer_key = jax.random.fold_in(key, offset + j)
        if isinstance(layers[j], SquashingLayer):
            # A dense layer below subtracts its bias first: done in the same pass as the inverse.
            below = layers[j - 1] if j > 0 else None
            shift = below.weights[-1] if isinstance(below, Dense) and below.bias else None
            if fixed_ranges:
                t = layers[j].inverse_in_range(t, shift, **layout)
            else:
                t, new[j] = layers[j].inverse(t, auxes[j], layer_key, first_row, shift=shift, **layout)
            shifted = shift is not None
        elif shifted:
            t, shifted = layers[j].invert_rows(t, auxes[j], shifted=True, **layout), False
        else:
            t, new[j] = layers[j].inverse(t, auxes[j], layer_key, first_row, **layout)
    return t, tuple(new), jnp.all(jnp.isfinite(t))


def _ridge_argument(ridge, dtype):
    """What the jitted solves take: a scalar array, or ``None`` for ``"auto"`` (static)."""
    return None if is_auto(ridge) else np.asarray(ridge, dtype)  # a host scalar: no program to convert it


def _solved(result):
    """``(w, spectrum, choice or None, finite)`` from a solver's 2- or 3-tuple."""
    w, spectrum, *choice = result
    return w, spectrum, (choice[0] if choice else None), jnp.all(jnp.isfinite(w))


@partial(jax.jit, static_argnames=("solver", "samples_last", "rows"))
def _solve(layer, a, t, rcond, ridge, *, solver, rows, samples_last=False):
    """One layer's solve; ``ridge=None`` chooses it (``"auto"``)."""
    ridge = AUTO if ridge is None else ridge
    if solver == "gram" and rows >= layer.weights.shape[0]:
        # the layer forms its own normal equations (a conv layer without its patch matrix)
        total = jnp.sum(t * t) if ridge is AUTO else None
        return _solved(solve_from_gram(*layer.normal_equations(a, t, **_layout(samples_last)), rows, rcond, ridge,
                                       total))
    return _solved(SOLVERS[solver].solve(layer.design(a), layer.target_rows(t), rcond=rcond, ridge=ridge,
                                         bias=layer.bias, samples_last=samples_last))


@partial(jax.jit, static_argnames=("solver",))
def _accumulate(layer, a, t, previous, *, solver):
    """Add a chunk of rows to the running QR triangle or normal-equation moments."""
    if solver == "qr":
        return qr_triangle(design_matrix(layer.design(a), layer.bias), layer.target_rows(t), previous)
    moments = (*layer.normal_equations(a, t), jnp.sum(t * t))  # ||T||^2 for ridge="auto"
    return moments if previous is None else tuple(p + m for p, m in zip(previous, moments))


@partial(jax.jit, static_argnames=("solver",))
def _reduce(parts, *, solver):
    """Combine the accumulations of several devices: stacked triangles factored again (TSQR)
    or summed normal equations."""
    if solver == "qr":
        return jnp.linalg.qr(jnp.concatenate(parts, axis=0), mode="r")
    return tuple(sum(moments) for moments in zip(*parts))


@partial(jax.jit, static_argnames=("solver", "rows", "cols"))
def _finish(accumulated, rcond, ridge, *, solver, rows, cols):
    """Solve from what ``_accumulate`` gathered over all ``rows`` rows (``cols`` design columns)."""
    ridge = AUTO if ridge is None else ridge
    if solver == "qr":
        return _solved(solve_from_triangle(accumulated, cols, rcond, ridge, rows))
    gram, moment, total = accumulated
    return _solved(solve_from_gram(gram, moment, rows, rcond, ridge, total))


_extrema = jax.jit(extrema)
"""A chunk's min and max in one pass (``zorb.kernels.squash.extrema``)."""


@partial(jax.jit, static_argnames=("samples_last",))
def _forward(layers, a, samples_last=False):
    for layer in layers:
        a = layer.forward(a, **_layout(samples_last))
    return a


SAMPLES_LAST_MIN_ROWS = 4096
"""The in-memory fit holds its arrays as (features, N) from this many samples on (see
``_samples_last``)."""


def _samples_last(network: Network, samples: int) -> bool:
    """Whether the in-memory fit runs on transposed arrays, one sample per column: the same
    arithmetic, but every large product becomes the BLAS call with the N-long side as its
    leading dimension, which OpenBLAS runs faster (10,000 x 400 @ 400 x 200: 138 against 127
    GFLOP/s; x 600 @ 600 x 400: 148 against 128; docs/performance.md). Only where every
    layer takes that layout (dense networks), the products go to BLAS, and N is large."""
    from zorb.kernels import native

    return (samples >= SAMPLES_LAST_MIN_ROWS and native.GEMM_NATIVE and network.dtype == jnp.float64
            and jax.default_backend() == "cpu" and len(network.input_shape) == 1
            and all(layer.samples_last_ok for layer in network.layers))


@jax.jit
def _layer_key(seed, index):
    """``fold_in(key(seed), index)``: the key of the targets of the layers above layer
    ``index``, in one compiled program (the same ops one by one compile four)."""
    return jax.random.fold_in(jax.random.key(seed), index)


def as_data(name: str, value, dtype, shape) -> jax.Array:
    """``value`` as a finite ``dtype`` array of shape (N, *shape), or a ConfigError.

    A NumPy array (or list) is checked and converted on the host: the same checks through
    JAX would compile a program per shape and dtype (~50 ms each, a small run's whole fit)."""
    on_device = isinstance(value, jax.Array)
    xp = jnp if on_device else np
    array = xp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.number) or jnp.issubdtype(array.dtype, jnp.complexfloating):
        raise ConfigError(f"{name} must be a real numeric array, got dtype {array.dtype}")
    array = array.astype(dtype, copy=False)  # host data already of the dtype is not copied
    if array.ndim < 1 or tuple(array.shape[1:]) != tuple(shape):
        raise ConfigError(f"{name} must have shape (N, {', '.join(map(str, shape))}), got {tuple(array.shape)}")
    if not bool(xp.isfinite(array).all()):
        raise ConfigError(f"{name} contains NaN or infinite values")
    return array if on_device else jax.device_put(array)  # jnp.asarray would compile a copy per shape


class _Clock:
    """Adds up compile and run seconds of the stages that make one layer's step."""

    def __init__(self):
        self.compile = self.forward = self.target = self.solve = 0.0

    def run(self, stage: str, fn, *args, **static):
        out, compile_seconds, run_seconds = timed(fn, *args, **static)
        self.compile += compile_seconds
        setattr(self, stage, getattr(self, stage) + run_seconds)
        return out

    def run_each(self, stage: str, fn, calls, **static) -> list:
        """``fn(*args)`` for every ``args`` in ``calls`` (each on its own device), dispatched
        together so devices work at once; one wall time for all of them."""
        out, compile_seconds, run_seconds = timed_each(fn, calls, **static)
        self.compile += compile_seconds
        setattr(self, stage, getattr(self, stage) + run_seconds)
        return out


def _rows_of(layers, start: int, stop: int):
    """``layers`` with their per-sample state (softmax normalisers) cut to rows start:stop."""
    return tuple(dataclasses.replace(layer, **{f: getattr(layer, f)[start:stop] for f in layer.per_sample})
                 if layer.per_sample and getattr(layer, layer.per_sample[0]) is not None else layer
                 for layer in layers)


def fit(network: Network, X, Y, *, solver: str = "svd", rcond: float | None = None,
        u_rcond: float | None = None, b_rcond: float | None = None, ridge: float | str = 0.0,
        per_layer: Mapping[int, Mapping] | None = None, seed: int = 0, chunk_rows: int | None = None,
        devices=None, processes: bool = False, callback: Callable[[LayerReport], None] | None = None,
        progress: Progress | None = None) -> tuple[Network, FitReport]:
    """Train ``network`` on ``X`` (N x input_shape) and ``Y`` (N x output_shape) in one pass.

    ``rcond`` (None: ``zorb.default_rcond(network.dtype)``, 1e-15 in float64) sets ``u_rcond``
    (cut of the update solve) and ``b_rcond`` (cut of the backward pseudoinverses) unless given; ``per_layer`` maps a parametric layer's 1-based position to
    its own ``solver``/``rcond``/``u_rcond``/``b_rcond``/``ridge`` (its ``b_rcond`` is the cut
    used when targets pass backward through it). ``ridge="auto"`` chooses each layer's ridge
    by generalised cross-validation from the solve's own factorisation (``zorb.core.solvers``;
    the choice and its curve are in the layer's report). ``seed`` drives ReLU's random inverse.
    ``callback`` receives each ``LayerReport`` as soon as that layer is solved; ``progress``
    (see ``Progress``) hears of each layer before its solve, and of the blocks of a chunked fit.

    ``chunk_rows`` streams the rows through every step in chunks of that many (``X`` and
    ``Y`` may then be any arrays that slice, e.g. a ``numpy.memmap``), so memory no longer
    grows with N: the solve accumulates a QR triangle (``qr``) or normal equations
    (``gram``), Sigmoid/Tanh ranges come from a pass over all rows, and each layer's input is
    recomputed from ``X``. The weights equal the in-memory fit's to rounding.

    ``devices`` (a number of devices, ``"all"``, or a list of ``jax.Device``) splits the rows
    over several devices: each works on its own rows (with ``chunk_rows``, on its own chunks),
    the global extremes and the solve reduce across them (QR triangles stacked and factored
    again, or normal equations summed), and the weights equal the one-device fit's.

    ``processes=True`` fits one data set held by several processes (``jax.distributed``
    initialised, CPU collectives e.g. gloo): ``X`` and ``Y`` are this process's share of the
    rows, the shares in the order of ``jax.process_index()``; every process calls ``fit``
    with the same network and settings, and the extremes and the solves also reduce across
    the processes, so each gets the weights one process would get from all rows. With
    ``chunk_rows`` each process streams its share; with ``devices``, over its own devices.

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
    devices = _devices(devices)
    if len(devices) > 1 or processes or (chunk_rows is not None and chunk_rows < n):
        _check_blockable(network)
    if len(devices) > 1 or processes:
        for index, opts in options.items():
            if not SOLVERS[opts.solver].streams:
                raise ConfigError(f"layer {index}: solver {opts.solver!r} cannot split rows over devices or "
                                  f"processes; use solver=qr (the same answer) or gram")
    share = _Share.of(n) if processes else _Share(0, n)
    if len(devices) == 1 and not processes and (chunk_rows is None or chunk_rows >= n):
        # checked and converted before the clock starts (it compiles once per data shape)
        x = as_data("X", X, network.dtype, network.input_shape)
        y = as_data("Y", Y, network.dtype, network.output_shape)
        started = time.perf_counter()
        layers, reports = _fit_in_memory(network, x, y, options, seed, callback, progress)
    elif chunk_rows is None or chunk_rows >= n:  # one block of rows per device, kept in memory
        started = time.perf_counter()
        bounds = np.linspace(0, n, len(devices) + 1).round().astype(int)
        spans = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        layers, reports = _fit_blocked(network, X, Y, options, seed, spans, devices, True, callback, share, progress)
    else:
        started = time.perf_counter()
        spans = [(start, min(start + chunk_rows, n)) for start in range(0, n, chunk_rows)]
        layers, reports = _fit_blocked(network, X, Y, options, seed, spans, devices, False, callback, share, progress)
    wall = time.perf_counter() - started
    compile_total = sum(r.compile_seconds for r in reports)
    return network.replace_layers(layers), FitReport(layers=reports, fit_seconds=wall - compile_total,
                                                     compile_seconds=compile_total, solver=solver,
                                                     devices=tuple(str(d) for d in devices))


def _check_blockable(network: Network) -> None:
    """ConfigError for a layer whose inverse records state from all rows at once (``records_inverse_state``):
    a chunked or multi-device fit only sees a block of rows at a time."""
    first = network.parametric_indices[0] if network.parametric_indices else len(network.layers) + 1
    for index, layer in enumerate(network.layers, 1):
        if index > first and layer.records_inverse_state and not isinstance(layer, SquashingLayer):
            raise ConfigError(f"layer {index} ({layer.kind}) records state from the whole target in its inverse, "
                              f"so it cannot be fitted in chunks or over several devices: set chunk_rows=null "
                              f"and devices=null")


def _prepare_inverses(layers, auxes, above: int, options, clock: _Clock) -> None:
    """Pseudoinverses of the parametric layers above ``above``, each computed once: they hold
    their initial weights until their own turn comes."""
    for j in range(above + 1, len(layers)):
        if layers[j].parametric and auxes[j] is None:
            rcond = np.asarray(options[j + 1].b_rcond, layers[j].weights.dtype)  # no program to convert it
            auxes[j], sound = clock.run("target", _prepare_inverse, layers[j], rcond)
            if not bool(sound):
                with robust_svd():  # LAPACK's gesdd failed on finite weights (solvers.svd)
                    auxes[j], _ = clock.run("target", _prepare_inverse, layers[j], rcond)


def _svd_failed(spectrum, t_finite) -> bool:
    """Whether a solve from a finite target came back with non-finite singular values: LAPACK's
    ``gesdd`` failing (``solvers.svd``), or a non-finite input, which the retry cannot mend."""
    return bool(t_finite) and not np.isfinite(np.asarray(spectrum)).all()


def _report(i, layer, rows, opts, spectrum, choice, t_finite, w_finite, clock) -> LayerReport:
    spectrum = np.asarray(spectrum)
    cutoff, rank, cond = spectrum_summary(spectrum, opts.u_rcond)
    if not bool(t_finite):
        raise FitError(f"layer {i + 1}: the target pushed back from the labels is not finite "
                       f"(condition number of its design matrix {cond:.3g}); check the scale of Y "
                       f"and raise b_rcond")
    if not np.all(np.isfinite(spectrum)):
        raise FitError(f"layer {i + 1}: its design matrix has no finite singular values (its input, "
                       f"the layer below's output, holds a NaN or an infinity, or LAPACK failed on it); "
                       f"check the layers below, or fit this layer with solver=gram")
    if not bool(w_finite):
        raise FitError(f"layer {i + 1}: the solved weights are not finite (condition number "
                       f"{cond:.3g}); raise u_rcond or add a ridge")
    return LayerReport(
        index=i + 1, kind=layer.kind, design_shape=(rows, int(layer.weights.shape[0])), solver=opts.solver,
        u_rcond=opts.u_rcond, b_rcond=opts.b_rcond, ridge=opts.ridge if choice is None else float(choice.ridge),
        spectrum=spectrum, cutoff=cutoff, rank=rank, cond=cond, solve_seconds=clock.solve,
        target_seconds=clock.target, forward_seconds=clock.forward, compile_seconds=clock.compile,
        ridge_grid=None if choice is None else np.asarray(choice.grid),
        ridge_score=None if choice is None else np.asarray(choice.score))


def _fit_in_memory(network, a, y, options, seed, callback, progress):
    dtype = network.dtype
    layers = list(network.layers)
    auxes: list = [None] * len(layers)
    first = min(i for i, layer in enumerate(layers) if layer.parametric)
    last = max(i for i, layer in enumerate(layers) if layer.parametric)
    samples = a.shape[0]
    samples_last = _samples_last(network, samples)
    if samples_last:
        a, y = a.T, y.T
    reports = []
    pending = _Clock()  # non-parametric layers below the first parametric one
    for i in range(last + 1):
        layer = layers[i]
        if not layer.parametric:
            if i < first:
                a = pending.run("forward", _forward, (layer,), a, samples_last=samples_last)
            continue
        opts, clock, pending = options[i + 1], pending, _Clock()
        if progress is not None:
            progress(LayerStart(i + 1, layer.kind, (_design_rows(layer, samples), int(layer.weights.shape[0])),
                                opts.solver, 1))
        if any(above.needs_observation for above in layers[i + 1:]):
            layers[i + 1:] = clock.run("forward", _observe, tuple(layers[i:]), a, samples_last=samples_last)[1:]
        _prepare_inverses(layers, auxes, i, options, clock)
        t, layers[i + 1:], t_finite = clock.run(
            "target", _targets, tuple(layers[i + 1:]), tuple(auxes[i + 1:]), y, _layer_key(seed, i + 1), 0,
            offset=i + 1, fixed_ranges=False, samples_last=samples_last)
        scalar = partial(np.asarray, dtype=dtype)  # host scalars: no program to convert them
        solve = partial(clock.run, "solve", _solve, layer, a, t, scalar(opts.u_rcond),
                        _ridge_argument(opts.ridge, dtype), solver=opts.solver, rows=_design_rows(layer, samples),
                        samples_last=samples_last)
        w, spectrum, choice, w_finite = solve()
        if _svd_failed(spectrum, t_finite):
            with robust_svd():
                w, spectrum, choice, w_finite = solve()
        del t, solve
        layers[i] = layer.with_weights(w)
        if i < last:
            # with the activations up to the next parametric layer: one jitted call, so XLA fuses
            # the bias with the activation (one pass over the rows instead of two)
            upto = next(j for j in range(i + 1, last + 1) if layers[j].parametric)
            a_next = clock.run("forward", _forward, tuple(layers[i:upto]), a, samples_last=samples_last)
        report = _report(i, layer, _design_rows(layer, samples), opts, spectrum, choice, t_finite, w_finite, clock)
        if i < last:
            a = a_next
        reports.append(report)
        if callback is not None:
            callback(report)
    return layers, reports


def _devices(devices) -> list:
    # this process's devices (all of them in a fit of one process)
    if devices is None:
        return [jax.local_devices()[0]]
    available = jax.local_devices()
    if devices == "all":
        return available
    if isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise ConfigError(f"devices must be between 1 and the {len(available)} available, got {devices}")
        return available[:devices]
    devices = list(devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise ConfigError("devices must be a number of devices, 'all', or a list of jax devices")
    return devices


@dataclasses.dataclass(frozen=True)
class _Share:
    """This process's rows of the fit: ``offset``, the index of its first row among all
    processes' rows, and ``total``, their number. ``across`` is False in a fit of one process."""

    offset: int
    total: int
    across: bool = False

    @classmethod
    def of(cls, rows: int) -> "_Share":
        """Each process's count of rows, gathered from every process."""
        counts = np.asarray(_gather(np.asarray([rows]))).reshape(-1)
        if counts.min() < 1:
            raise ConfigError(f"every process needs rows of its own, but the processes hold {counts.tolist()}")
        index = jax.process_index()
        return cls(int(counts[:index].sum()), int(counts.sum()), True)

    def extremes(self, lo: float, hi: float) -> tuple[float, float]:
        """The least ``lo`` and greatest ``hi`` over all processes."""
        if not self.across:
            return lo, hi
        both = np.asarray(_gather(np.asarray([lo, hi])))
        return float(both[:, 0].min()), float(both[:, 1].max())

    def all(self, flag: bool) -> bool:
        """Whether ``flag`` holds in every process (so that all raise, or none, before a collective)."""
        return bool(np.asarray(_gather(np.asarray([flag]))).all()) if self.across else bool(flag)

    def combine(self, accumulated, solver: str, home):
        """The accumulations of all processes reduced to one, as the devices' are (``_reduce``);
        QR triangles padded with zero rows to one shape (a share with fewer rows than columns
        has a shorter one)."""
        if not self.across:
            return accumulated
        if solver == "qr":
            cols = accumulated.shape[1]
            accumulated = jnp.pad(accumulated, ((0, cols - accumulated.shape[0]), (0, 0)))
        gathered = jax.device_put(_gather(accumulated), home)
        parts = [jax.tree_util.tree_map(lambda a, p=p: a[p], gathered) for p in range(jax.process_count())]
        return _reduce(parts, solver=solver)


def _gather(tree):
    """``tree`` of every process, stacked along a new first axis (a collective: every process calls it)."""
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree)


def _fit_blocked(network, X, Y, options, seed, spans, devices, keep_inputs, callback, share, progress):
    """The fit over blocks of rows: chunks streamed through memory (``keep_inputs=False``:
    each layer's input recomputed from X) and/or spread over devices (block ``c`` on device
    ``c mod D``; ``keep_inputs=True`` holds each device's block and its activations); the
    extremes and solves reduced across processes too when ``share.across``."""
    dtype = network.dtype
    n = share.total
    home = devices[0]
    blocks = [(start, stop, devices[c % len(devices)]) for c, (start, stop) in enumerate(spans)]
    waves = [blocks[w:w + len(devices)] for w in range(0, len(blocks), len(devices))]

    def load(start, stop, device):
        x = as_data("X", np.asarray(X[start:stop]), dtype, network.input_shape)
        y = as_data("Y", np.asarray(Y[start:stop]), dtype, network.output_shape)
        return jax.device_put((x, y), device)

    def everywhere(tree):
        return {device: jax.device_put(tree, device) for device in devices}

    layers = list(network.layers)
    auxes: list = [None] * len(layers)
    last = max(i for i, layer in enumerate(layers) if layer.parametric)
    held = [load(*block) for block in blocks] if keep_inputs else None
    applied = 0  # held[c][0] is the input of layer `applied`
    reports = []
    for i in range(last + 1):
        layer = layers[i]
        if not layer.parametric:
            continue
        opts, clock = options[i + 1], _Clock()
        above = i + 1
        layer_key = _layer_key(seed, above)
        # passes over the rows: an observation pass if a layer above needs one, one per
        # Sigmoid/Tanh above (its range), and the solve's
        count = (any(u.needs_observation for u in layers[above:]) +
                 sum(isinstance(u, SquashingLayer) for u in layers[above:]) + 1)
        advance = progress(LayerStart(above, layer.kind, (_design_rows(layer, n), int(layer.weights.shape[0])),
                                      opts.solver, len(blocks), count)) if progress is not None else None
        if keep_inputs and applied < i:
            below = everywhere(tuple(layers[applied:i]))
            inputs = clock.run_each("forward", _forward, [(below[b[2]], h[0]) for b, h in zip(blocks, held)])
            held = [(a, h[1]) for a, h in zip(inputs, held)]
            applied = i

        def passes():
            """Per wave of blocks (one per device): the blocks, their layer inputs and Y."""
            below = None if keep_inputs else everywhere(tuple(layers[:i]))
            for w, wave in enumerate(waves):
                if keep_inputs:
                    yield wave, held[w * len(devices):(w + 1) * len(devices)]
                else:
                    data = [load(*block) for block in wave]
                    inputs = clock.run_each("forward", _forward, [(below[b[2]], d[0]) for b, d in zip(wave, data)])
                    yield wave, [(a, d[1]) for a, d in zip(inputs, data)]
                if advance is not None:
                    advance(len(wave))

        if any(above_layer.needs_observation for above_layer in layers[above:]):
            tail = everywhere(tuple(layers[i:]))
            observed = []
            for wave, data in passes():
                observed += clock.run_each("forward", _observe, [(tail[b[2]], d[0]) for b, d in zip(wave, data)])
            layers[above:] = [_concat_samples(jax.device_put(parts, home)) for parts in zip(*(o[1:] for o in observed))]
        _prepare_inverses(layers, auxes, i, options, clock)

        def chain(top: int, wave, data):
            """Targets at the input of layer ``top`` for a wave of blocks, ranges fixed."""
            rest = [jax.device_put((_rows_of(layers[top:], b[0], b[1]), tuple(auxes[top:])), b[2]) for b in wave]
            return clock.run_each("target", _targets, [(r[0], r[1], d[1], layer_key, share.offset + b[0])
                                                       for r, b, d in zip(rest, wave, data)],
                                  offset=top, fixed_ranges=True)

        # Sigmoid/Tanh above take their range from the global extremes of their target, top
        # first: one pass over the rows for each, through the ranges already fixed above it.
        for j in reversed(range(above, len(layers))):
            if not isinstance(layers[j], SquashingLayer):
                continue
            lo, hi = np.inf, -np.inf
            for wave, data in passes():
                for t, _, _ in chain(j + 1, wave, data):
                    lo_t, hi_t = _extrema(t)
                    lo, hi = min(lo, float(lo_t)), max(hi, float(hi_t))
            lo, hi = share.extremes(lo, hi)
            layers[j] = layers[j].with_range(jnp.asarray(lo, dtype), jnp.asarray(hi, dtype))
        accumulated, t_finite = {}, True
        solving = everywhere(layer)
        for wave, data in passes():
            targets = chain(above, wave, data)
            t_finite = t_finite and all(bool(finite) for _, _, finite in targets)
            sums = clock.run_each("solve", _accumulate,
                                  [(solving[b[2]], d[0], t[0], accumulated.get(b[2])) for b, d, t in zip(wave, data, targets)],
                                  solver=opts.solver)
            accumulated.update({b[2]: acc for b, acc in zip(wave, sums)})
        parts = jax.device_put(list(accumulated.values()), home)
        total = parts[0] if len(parts) == 1 else clock.run("solve", _reduce, parts, solver=opts.solver)
        t_finite = share.all(t_finite)
        total = share.combine(total, opts.solver, home)
        design_rows = _design_rows(layer, n)
        scalar = partial(np.asarray, dtype=dtype)
        finish = partial(clock.run, "solve", _finish, total, scalar(opts.u_rcond), _ridge_argument(opts.ridge, dtype),
                         solver=opts.solver, rows=design_rows, cols=int(layer.weights.shape[0]))
        w, spectrum, choice, w_finite = finish()
        if _svd_failed(spectrum, t_finite):
            with robust_svd():
                w, spectrum, choice, w_finite = finish()
        layers[i] = layer.with_weights(w)
        report = _report(i, layer, design_rows, opts, spectrum, choice, t_finite, w_finite, clock)
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
    return int(samples) * layer.rows_per_sample()
