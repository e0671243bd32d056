"""Adam on a ``zorb.Network``: the paper's gradient baseline (PAPER_EXPERIMENTS.md, groups A-C).

The same network, from the same initial weights as ZORB for a seed: only the parametric
layers' ``weights`` are differentiated and updated; activations stay plain (no ZORB state).
Each step draws ``batch_size`` rows with replacement, uniformly, from a key derived from the
seed and the step number, so a seed fixes every batch.

The training loop runs compiled, ``eval_every`` steps per call; between calls the paper's
train error (``zorb.scores``' ``error``, the mean Euclidean norm of the residual) is
evaluated outside the clock, so ``fit_seconds`` counts training only (the paper's own code
timed a full evaluation after every step; PAPER_EXPERIMENTS.md, "Known quirks"). The
accuracy on other named sets (``watch``: a validation split, the test set) can be measured
at the same points, also off the clock, and one of them can stop the training early
(``stop_on``, ``patience``), keeping the weights of its best point.
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
import optax

from zorb.baselines import check_untrained
from zorb.errors import ConfigError
from zorb.core.fit import as_data
from zorb.core.metrics import forward_all, infer_task, predict, residual_error, scores
from zorb.core.network import Network
from zorb.core.timing import timed
from zorb.kernels.products import products_in_xla

LOSSES = ("sse", "cross_entropy")
"""``sse``: sum of squared errors of the network's output over the batch and outputs (groups
A and B, softmax/sigmoid outputs included). ``cross_entropy``: Keras' convention, from the
logits (the input of the final softmax or sigmoid): mean over the batch of ``-sum_j y_j
log_softmax(z)_j`` for a softmax output, mean over batch and outputs of the binary
cross-entropy ``softplus(z) - y z`` for a sigmoid output. This is the standard, stable
log-softmax of the logits, not the log of zorb's Softmax layer (whose forward subtracts
``eps`` from each exponential, ZORB.md); predictions and the curve's error still use the
network's own forward pass."""

CURVE_POINTS = 50
"""Default number of train-error evaluations over a run (``eval_every = steps // 50``)."""

_BATCH_STREAM = 0xADA
"""Folded into ``key(seed)`` so Adam's batches do not reuse the keys of ZORB's ReLU draws."""

_EVAL_STREAM = 0xADB
"""Folded into ``key(seed)`` to draw the fixed ``eval_rows`` subset."""

_ADAM = optax.scale_by_adam()
"""Default betas (0.9, 0.999), eps 1e-8; the learning rate is applied in the step, as a
runtime scalar, so one compiled loop serves every rate of a sweep."""


@dataclasses.dataclass
class AdamReport:
    fit_seconds: float
    """Training time: the sum of the compiled chunks' run times, evaluations and compilation excluded."""
    compile_seconds: float
    curve: list[tuple[int, float, float]]
    """``(step, training seconds so far, train error)``, from ``(0, 0.0, initial error)`` to the last step."""
    steps: int
    learning_rate: float
    loss: str
    batch_size: int
    seed: int
    eval_rows: int
    """Rows the curve's error is measured on (all training rows unless ``eval_rows`` was given)."""
    gradient: str = "true"
    """``GRADIENTS``: the true derivative or a straight-through estimator."""
    layers: list = dataclasses.field(default_factory=list)
    """Empty: kept so that code iterating a ZORB ``FitReport``'s ``layers`` works on this report."""
    accuracy_curves: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    """Accuracy on each ``watch`` set at every point of ``curve`` (same length, same steps)."""
    curve_seconds: float = 0.0
    """Time spent measuring the curve (train error, watched sets' accuracy), off the clock."""
    best_step: int | None = None
    """With ``stop_on``: the step whose weights were kept (the first point of the best accuracy)."""
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    """Figures the runner logs beside the run's own (``adam.<name>``), e.g. the rate a search chose."""

    @property
    def steps_run(self) -> int:
        """Steps actually trained: ``steps``, or fewer where early stopping ended the training."""
        return self.curve[-1][0]

    @property
    def final_error(self) -> float:
        return self.curve[-1][2]

    def time_to_reach(self, target_error: float) -> float | None:
        """Training seconds at the first curve point whose train error is ``<= target_error``, else None."""
        for _, seconds, error in self.curve:
            if error <= target_error:
                return seconds
        return None


def speedup(adam_report: AdamReport, zorb_fit_seconds: float, zorb_train_error: float) -> float:
    """The paper's speed-up: Adam's time to reach ZORB's final train error over ZORB's fit time.

    Adam's whole training time counts when it never reaches that error (PAPER_EXPERIMENTS.md, B).
    The time to reach it is only as fine as the curve: pass ``eval_every`` small enough.
    """
    if not zorb_fit_seconds > 0:
        raise ConfigError(f"ZORB's fit time must be positive to compute a speed-up, got {zorb_fit_seconds!r}")
    reached = adam_report.time_to_reach(zorb_train_error)
    return (adam_report.fit_seconds if reached is None else reached) / zorb_fit_seconds


def batch_indices(key, step, rows: int, batch_size: int):
    """The row indices of step ``step``'s batch: ``batch_size`` uniform draws from ``range(rows)``.

    ``key`` is ``jax.random.key(seed)``; works traced (inside the loop) and eagerly.
    """
    stream = jax.random.fold_in(key, _BATCH_STREAM)
    return jax.random.randint(jax.random.fold_in(stream, step), (batch_size,), 0, rows)


GRADIENTS = ("true", "ste", "ste_identity")
"""``true``: the network's own derivative (zero almost everywhere through step, sign and
quantize). ``ste``: the straight-through estimator through every layer that has one
(``layer.straight_through``), with the derivative 1 inside the layer's window and 0 outside
(hardtanh's); ``ste_identity``: 1 everywhere."""


def _forward(layers, x, gradient="true"):
    for layer in layers:
        if gradient != "true" and hasattr(layer, "straight_through"):
            x = layer.straight_through(x, "identity" if gradient == "ste_identity" else "clipped")
        else:
            x = layer.forward(x)
    return x


def _loss(weights, network: Network, x, y, loss: str, gradient: str = "true"):
    net = network.with_weights(weights)
    if loss == "sse":
        return jnp.sum((_forward(net.layers, x, gradient) - y) ** 2)
    logits = _forward(net.layers[:-1], x, gradient)
    if net.layers[-1].kind == "softmax":
        return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(logits, axis=-1), axis=-1))
    return jnp.mean(jax.nn.softplus(logits) - y * logits)


@partial(jax.jit, static_argnames=("loss", "batch_size", "gradient"))
def _train_steps(network: Network, weights, opt_state, x, y, key, start, stop, learning_rate, *, loss, batch_size,
                 gradient="true"):
    """Adam steps ``start .. stop - 1`` from ``(weights, opt_state)``; one compiled loop for any bounds."""

    def step(i, carry):
        weights, opt_state = carry
        rows = batch_indices(key, i, x.shape[0], batch_size)
        grads = jax.grad(_loss)(weights, network, x[rows], y[rows], loss, gradient)
        # optax's bias correction raises a Python float to an int32 count: the one mix of
        # types this loop needs, so standard promotion is scoped to it.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state = _ADAM.update(grads, opt_state, weights)
        weights = [w - learning_rate * u for w, u in zip(weights, updates)]
        return weights, opt_state

    # products of batch_size rows, every step: BLAS's thread hand-off would cost more than they do
    with products_in_xla():
        return jax.lax.fori_loop(start, stop, step, (weights, opt_state))


def _positive_int(name: str, value, *, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_loss(network: Network, loss: str) -> None:
    if loss not in LOSSES:
        raise ConfigError(f"unknown loss {loss!r}: choose one of {', '.join(LOSSES)}")
    if loss == "cross_entropy" and network.layers[-1].kind not in ("softmax", "sigmoid"):
        raise ConfigError(f"cross_entropy needs a network ending in softmax or sigmoid, but its last layer is "
                          f"{network.layers[-1].kind}: use loss=sse")


def train_adam(network: Network, X, Y, *, learning_rate: float, steps: int, batch_size: int = 32,
               loss: str = "sse", seed: int = 0, eval_every: int | None = None,
               eval_rows: int | None = None, progress: Callable[[int], None] | None = None,
               gradient: str = "true", watch: Mapping[str, tuple] | None = None, stop_on: str | None = None,
               patience: int | None = None) -> tuple[Network, AdamReport]:
    """Train ``network`` on ``X`` (N x input_shape), ``Y`` (N x output_shape) with Adam.

    ``steps`` steps of batch ``batch_size`` (rows drawn with replacement), default betas,
    loss ``sse`` or ``cross_entropy`` (see ``LOSSES``). Every ``eval_every`` steps (default
    ``max(1, steps // 50)``) and after the last, the train error is measured on the training
    set, or on a fixed random subset of ``eval_rows`` rows drawn from the seed;
    ``progress(steps)``, if given, hears of those steps as each such stretch is done. ``gradient``
    (``GRADIENTS``) picks the true derivative or the straight-through estimator.

    ``watch``: ``{name: (X_name, Y_name)}`` of classification (one-hot) or binary sets whose
    accuracy is measured at every curve point, off the clock (``report.accuracy_curves``).
    ``stop_on`` names one of them: the training stops once its accuracy has not improved on
    its best for ``patience`` points in a row (or after ``steps``), and the weights of the best
    point are returned (``report.best_step``; Keras' ``EarlyStopping(restore_best_weights)``).

    Returns the trained network (same layers, new weights, dtype kept) and an ``AdamReport``.
    Raises ``ConfigError`` for a bad option, a network ``zorb.fit`` has already trained, or
    data of the wrong shape.
    """
    check_untrained(network, "Adam")
    _check_loss(network, loss)
    if gradient not in GRADIENTS:
        raise ConfigError(f"gradient must be one of {', '.join(GRADIENTS)}, got {gradient!r}")
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or \
            not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ConfigError(f"learning_rate must be a positive number, got {learning_rate!r}")
    steps = _positive_int("steps", steps, allow_zero=True)
    batch_size = _positive_int("batch_size", batch_size)
    eval_every = max(1, steps // CURVE_POINTS) if eval_every is None else _positive_int("eval_every", eval_every)
    dtype = network.dtype
    x = as_data("X", X, dtype, network.input_shape)
    y = as_data("Y", Y, dtype, network.output_shape)
    if x.shape[0] != y.shape[0]:
        raise ConfigError(f"X has {x.shape[0]} samples but Y has {y.shape[0]}")
    key = jax.random.key(seed)
    x_eval, y_eval = x, y
    if eval_rows is not None and _positive_int("eval_rows", eval_rows) < x.shape[0]:
        chosen = jnp.sort(jax.random.permutation(jax.random.fold_in(key, _EVAL_STREAM), x.shape[0])[:eval_rows])
        x_eval, y_eval = x[chosen], y[chosen]

    watched = _watched_sets(network, watch or {}, stop_on, patience)
    y_rows = np.asarray(y_eval, np.float64).reshape(y_eval.shape[0], -1)

    def train_error(weights) -> float:
        # scores(...)["error"] without predict's and scores' copies and other figures: the curve
        # measures it every eval_every steps (100 times a run by default)
        outputs = np.asarray(forward_all(network.with_weights(weights), x_eval), np.float64)
        error = residual_error(outputs.reshape(y_rows.shape), y_rows)
        if not math.isfinite(error):  # scores names the non-finite predictions in its FitError
            return scores(outputs, y_eval, task="regression")["error"]
        return error

    def measure(step: int, seconds: float, weights) -> None:
        nonlocal curve_seconds
        started = time.perf_counter()
        curve.append((step, seconds, train_error(weights)))
        trained = network.with_weights(weights)
        for name, (x_set, y_set, task) in watched.items():
            accuracy = scores(predict(trained, x_set, batch_size=_WATCH_BATCH), y_set, task=task)["accuracy"]
            accuracy_curves[name].append(accuracy)
        curve_seconds += time.perf_counter() - started

    weights = network.weights
    opt_state = _ADAM.init(weights)
    rate = jnp.asarray(learning_rate, dtype)
    curve: list[tuple[int, float, float]] = []
    accuracy_curves: dict[str, list[float]] = {name: [] for name in watched}
    curve_seconds = 0.0
    measure(0, 0.0, weights)
    best_weights, best_point = weights, 0
    seconds = compile_seconds = 0.0
    for start in range(0, steps, eval_every):
        stop = min(start + eval_every, steps)
        (weights, opt_state), c, r = timed(_train_steps, network, weights, opt_state, x, y, key,
                                           jnp.asarray(start, jnp.int32), jnp.asarray(stop, jnp.int32), rate,
                                           loss=loss, batch_size=batch_size, gradient=gradient)
        compile_seconds += c
        seconds += r
        measure(stop, seconds, weights)
        if progress is not None:
            progress(stop - start)
        if stop_on is not None:
            history = accuracy_curves[stop_on]
            if history[-1] > history[best_point]:
                best_weights, best_point = weights, len(history) - 1
            elif len(history) - 1 - best_point >= patience:
                break

    report = AdamReport(fit_seconds=seconds, compile_seconds=compile_seconds, curve=curve, steps=steps,
                        learning_rate=float(learning_rate), loss=loss, batch_size=batch_size, seed=seed,
                        eval_rows=int(x_eval.shape[0]), gradient=gradient, accuracy_curves=accuracy_curves,
                        curve_seconds=curve_seconds)
    if stop_on is not None:
        weights, report.best_step = best_weights, curve[best_point][0]
    return network.with_weights(weights), report


_WATCH_BATCH = 1000
"""Rows per forward pass when measuring a watched set's accuracy (bounds a CNN's memory)."""


def _watched_sets(network: Network, watch: Mapping[str, tuple], stop_on: str | None,
                  patience: int | None) -> dict[str, tuple]:
    """``{name: (x, y, task)}`` of ``train_adam``'s ``watch``, checked with ``stop_on`` and ``patience``."""
    watched = {}
    for name, (x_set, y_set) in watch.items():
        x_set = as_data(f"X of watch[{name!r}]", x_set, network.dtype, network.input_shape)
        y_set = as_data(f"Y of watch[{name!r}]", y_set, network.dtype, network.output_shape)
        task = infer_task(y_set)
        if task == "regression":
            raise ConfigError(f"watch[{name!r}] has targets that are neither one-hot nor 0/1, so it has no "
                              f"accuracy: watch classification sets only")
        watched[name] = (x_set, y_set, task)
    if stop_on is not None:
        if stop_on not in watched:
            raise ConfigError(f"stop_on={stop_on!r} is not a watched set ({', '.join(watched) or 'none'}): "
                              f"pass watch={{{stop_on!r}: (X, Y)}}")
        _positive_int("patience", patience)
    elif patience is not None:
        raise ConfigError("patience needs stop_on: name the watched set whose accuracy stops the training")
    return watched
