"""The training methods a run can use, by ``method.name``: ZORB and the paper's baselines.

A new method is one function here and one entry in ``METHODS``; its options come from the
``method`` config group and are checked against its keyword-only parameters
(``zorb.runner.settings.method_settings``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

import zorb
from zorb import baselines
from zorb.errors import ConfigError

if TYPE_CHECKING:
    from zorb.runner.progress import Progress
    from zorb.runner.settings import SolverSettings

log = logging.getLogger("zorb.runner.methods")


def fit_zorb(network: zorb.Network, dataset, solver: SolverSettings, *, seed: int,
             callback: Callable, progress: Progress) -> tuple[zorb.Network, zorb.FitReport]:
    """ZORB: every dense/conv2d layer solved once by least squares."""
    return zorb.fit(network, dataset.x_train, dataset.y_train, seed=seed, callback=callback,
                    progress=progress.fit, **solver.fit_options())


def fit_mlelm(network: zorb.Network, dataset, solver: SolverSettings, *, seed: int,
              callback: Callable, progress: Progress) -> tuple[zorb.Network, baselines.MLELMReport]:
    """ML-ELM (PAPER_EXPERIMENTS.md, A) with the solver's update cut (``u_rcond``, else ``rcond``)."""
    dense_only = all(layer.kind == "dense" for layer in network.layers if layer.parametric)
    if dense_only and (solver.ridge or solver.per_layer):  # baselines.fit_mlelm refuses the others itself
        raise ConfigError("ML-ELM is plain least squares with one cut: set solver.ridge=0 and leave "
                          "solver.per_layer empty")
    rcond = solver.rcond if solver.u_rcond is None else solver.u_rcond
    trained, report = baselines.fit_mlelm(network, dataset.x_train, dataset.y_train, rcond=rcond)
    for layer in report.layers:
        callback(layer)
    return trained, report


def fit_adam(network: zorb.Network, dataset, solver: SolverSettings, *, seed: int, callback: Callable,
             progress: Progress, learning_rate: float, steps: int, batch_size: int, loss: str,
             eval_every: int | None = None, eval_rows: int | None = None,
             gradient: str = "true", test_curve: bool = False) -> tuple[zorb.Network, baselines.AdamReport]:
    """Adam (``zorb.baselines.train_adam``) from the same initial weights; the solver plays no part.
    ``gradient``: ``true``, or ``ste``/``ste_identity`` (the straight-through estimator).
    ``test_curve``: also measure the test accuracy at every curve point (off the clock), the
    basis of the table's time to ZORB's accuracy; the test set chooses nothing."""
    from zorb.runner.settings import check_flag  # settings reads METHODS from this module

    watch = {"test": curve_test_set(dataset, eval_rows, seed)} if check_flag("method.test_curve", test_curve) else None
    with progress.bar(steps, "adam", "steps") as steps_bar:
        return baselines.train_adam(network, dataset.x_train, dataset.y_train, learning_rate=learning_rate,
                                    steps=steps, batch_size=batch_size, loss=loss, seed=seed,
                                    eval_every=eval_every, eval_rows=eval_rows, progress=steps_bar.update,
                                    gradient=str(gradient).lower(), watch=watch)


def fit_adam_converged(network: zorb.Network, dataset, solver: SolverSettings, *, seed: int, callback: Callable,
                       progress: Progress, learning_rates: list[float], max_steps: int, patience: int,
                       eval_every: int, validation_fraction: float, batch_size: int = 32,
                       loss: str = "cross_entropy", eval_rows: int | None = None,
                       test_curve: bool = True) -> tuple[zorb.Network, baselines.AdamReport]:
    """Adam trained to convergence, an honest reference: a seeded ``validation_fraction`` of the
    training rows is held out; for each of ``learning_rates`` Adam trains on the rest, its
    validation accuracy measured every ``eval_every`` steps, until it has not improved for
    ``patience`` measurements (or ``max_steps``), keeping its best weights. The rate with the
    best validation accuracy wins (the larger rate among ties); its network and curve are
    returned, and ``fit_seconds`` is the training time of every rate tried (the search is
    part of the cost). The test set chooses nothing: ``test_curve`` only records it."""
    from zorb.runner.experiment import validation_split
    from zorb.runner.settings import check_flag

    if not isinstance(learning_rates, list) or not learning_rates or \
            not all(_positive_number(rate) for rate in learning_rates):
        raise ConfigError(f"method.learning_rates must be a non-empty list of positive numbers such as "
                          f"[3e-3, 1e-3, 3e-4], got {learning_rates!r}")
    rest, (x_val, y_val, _) = validation_split(dataset, check_fraction(validation_fraction), seed)
    watch = {"validation": (x_val, y_val)}
    if check_flag("method.test_curve", test_curve):
        watch["test"] = curve_test_set(dataset, eval_rows, seed)
    runs = []
    for rate in learning_rates:
        with progress.bar(max_steps, f"adam {rate:g}", "steps") as steps_bar:
            trained, report = baselines.train_adam(
                network, rest.x_train, rest.y_train, learning_rate=rate, steps=max_steps, batch_size=batch_size,
                loss=loss, seed=seed, eval_every=eval_every, eval_rows=eval_rows, progress=steps_bar.update,
                watch=watch, stop_on="validation", patience=patience)
        best = max(report.accuracy_curves["validation"])
        log.info("adam at %g: validation accuracy %.4f at step %d of %d (%.1f s)", rate, best, report.best_step,
                 report.steps_run, report.fit_seconds)
        runs.append((best, rate, trained, report))
    _, _, trained, chosen = max(runs, key=lambda run: (run[0], run[1]))
    chosen.metrics = {"adam.learning_rate": chosen.learning_rate, "adam.best_step": float(chosen.best_step),
                      "adam.steps_run": float(chosen.steps_run),
                      "adam.epochs_run": chosen.steps_run * batch_size / len(rest.x_train),
                      "adam.chosen_fit_seconds": chosen.fit_seconds, "val_samples": float(len(x_val))}
    chosen.metrics.update({f"adam.val_accuracy.lr{rate:g}": best for best, rate, _, _ in runs})
    chosen.fit_seconds = sum(report.fit_seconds for _, _, _, report in runs)
    chosen.compile_seconds = sum(report.compile_seconds for _, _, _, report in runs)
    chosen.curve_seconds = sum(report.curve_seconds for _, _, _, report in runs)
    return trained, chosen


def fit_logreg(network: zorb.Network, dataset, solver: SolverSettings, *, seed: int, callback: Callable,
               progress: Progress, C: list[float] | float, validation_fraction: float,
               max_iter: int) -> tuple[zorb.Network, baselines.LogisticReport]:
    """Multinomial logistic regression on the flattened inputs (``zorb.baselines.fit_logistic_regression``),
    ``C`` chosen on a seeded ``validation_fraction`` of the training rows when several are given,
    then refitted on all of them. The network and solver play no part: the returned network is
    the fitted ``flatten -> dense -> softmax``."""
    from zorb.runner.experiment import validation_split

    grid = list(C) if isinstance(C, list) else [C]
    rows, validation = dataset.x_train, None
    if len(grid) > 1:
        rest, (x_val, y_val, _) = validation_split(dataset, check_fraction(validation_fraction), seed)
        rows, labels, validation = rest.x_train, rest.y_train, (x_val, y_val)
    else:
        labels = dataset.y_train
    return baselines.fit_logistic_regression(rows, labels, C=grid, validation=validation, max_iter=max_iter,
                                             dtype=network.dtype)


def _positive_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 < value < float("inf")


def check_fraction(value) -> float:
    if not _positive_number(value) or value >= 1:
        raise ConfigError(f"method.validation_fraction must be a number in (0, 1), got {value!r}")
    return float(value)


def curve_test_set(dataset, rows: int | None, seed: int) -> tuple:
    """``(x, y)`` of the test set, or of a seeded subset of ``rows`` of it (the curve's ``eval_rows``)."""
    from zorb.runner.experiment import keep_rows

    subset = keep_rows(dataset, "test", rows, np.random.default_rng([seed, _TEST_CURVE_STREAM]))
    return subset.x_test, subset.y_test


_TEST_CURVE_STREAM = 6


def _adam_refit(options: dict) -> dict:
    """Adam's options for a fit whose curve nobody reads: one stretch of ``steps`` and no test
    curve. The same weights to the bit: the curve is measured between stretches of the same
    compiled loop (its bounds are arguments) and draws nothing from the seed's stream."""
    return {**options, "eval_every": max(1, int(options["steps"])), "test_curve": False}


REFIT_OPTIONS: dict[Callable, Callable[[dict], dict]] = {fit_adam: _adam_refit}
"""How a method's options change for the validation refit (``validation_fraction``), whose
only product is its network: what it would measure along the way and no one reads is left
out (``experiment=paper_a``: two thirds of its Sinc jobs' time went to Adam's curves, half of
them the refits')."""


METHODS: dict[str, Callable] = {"zorb": fit_zorb, "mlelm": fit_mlelm, "adam": fit_adam,
                                "adam_converged": fit_adam_converged, "logreg": fit_logreg}
"""Training methods by ``method.name``: ``fn(network, dataset, solver, *, seed, callback, progress, **options)``
(``progress``: the run's ``zorb.runner.progress.Progress``) returning ``(trained network, report)`` where the
report has ``fit_seconds``,
``compile_seconds`` and ``layers`` (``zorb.LayerReport``s, possibly empty). ``options`` are
the method group's other keys, declared as keyword-only parameters (those without a default
are required). A report with a ``curve`` of ``(step, training seconds, train error)`` has it
logged as the metric histories ``curve.train_error`` and ``curve.train_seconds``, its ``accuracy_curves``
as ``curve.<name>_accuracy``; a report's ``metrics`` (a mapping) join the run's metrics."""
