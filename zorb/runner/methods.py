"""The training methods a run can use, by ``method.name``: ZORB and the paper's baselines.

A new method is one function here and one entry in ``METHODS``; its options come from the
``method`` config group and are checked against its keyword-only parameters
(``zorb.runner.settings.method_settings``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import zorb
from zorb import baselines
from zorb.errors import ConfigError

if TYPE_CHECKING:
    from zorb.runner.progress import Progress
    from zorb.runner.settings import SolverSettings


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
             gradient: str = "true") -> tuple[zorb.Network, baselines.AdamReport]:
    """Adam (``zorb.baselines.train_adam``) from the same initial weights; the solver plays no part.
    ``gradient``: ``true``, or ``ste``/``ste_identity`` (the straight-through estimator)."""
    with progress.bar(steps, "adam", "steps") as steps_bar:
        return baselines.train_adam(network, dataset.x_train, dataset.y_train, learning_rate=learning_rate,
                                    steps=steps, batch_size=batch_size, loss=loss, seed=seed,
                                    eval_every=eval_every, eval_rows=eval_rows, progress=steps_bar.update,
                                    gradient=str(gradient).lower())


METHODS: dict[str, Callable] = {"zorb": fit_zorb, "mlelm": fit_mlelm, "adam": fit_adam}
"""Training methods by ``method.name``: ``fn(network, dataset, solver, *, seed, callback, progress, **options)``
(``progress``: the run's ``zorb.runner.progress.Progress``) returning ``(trained network, report)`` where the
report has ``fit_seconds``,
``compile_seconds`` and ``layers`` (``zorb.LayerReport``s, possibly empty). ``options`` are
the method group's other keys, declared as keyword-only parameters (those without a default
are required). A report with a ``curve`` of ``(step, training seconds, train error)`` has it
logged as the metric histories ``curve.train_error`` and ``curve.train_seconds``."""
