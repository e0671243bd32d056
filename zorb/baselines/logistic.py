"""Multinomial logistic regression (scikit-learn's ``LogisticRegression``, lbfgs) as a
``zorb.Network``: a reference that any classifier of images should beat.

The fitted model is returned as ``flatten -> dense -> softmax`` (``sigmoid`` for one 0/1
output) whose dense weights are ``[coef_.T; intercept_]``: that is logistic regression's
predictor (zorb's softmax subtracts ``eps = 1e-5`` from each exponential, ZORB.md, which moves
a probability by at most ~1e-5 and never the argmax), so the runner evaluates, saves and
logs it exactly as it does a ZORB network.

    net, report = fit_logistic_regression(X, Y, C=[0.01, 0.1, 1.0], validation=(X_val, Y_val))
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Sequence

import numpy as np

from zorb.core.metrics import infer_task
from zorb.core.network import Network, build_network
from zorb.errors import ConfigError

log = logging.getLogger("zorb.baselines.logistic")


@dataclasses.dataclass
class LogisticReport:
    fit_seconds: float
    """Every fit the method made: one per ``C`` on the training rows (when choosing), then the final one."""
    C: float
    """The inverse regularisation strength of the returned model."""
    iterations: int
    """lbfgs iterations of the final fit (``max_iter``: it stopped before its tolerance)."""
    validation_accuracy: dict[float, float]
    """``{C: accuracy on the validation set}`` (empty when one ``C`` was given)."""
    compile_seconds: float = 0.0
    layers: list = dataclasses.field(default_factory=list)
    """Empty: kept so that code iterating a ZORB ``FitReport``'s ``layers`` works on this report."""

    @property
    def metrics(self) -> dict[str, float]:
        """``logreg.<figure>``: what the runner logs beside the run's own figures."""
        figures = {"logreg.C": self.C, "logreg.iterations": float(self.iterations)}
        figures.update({f"logreg.val_accuracy.C{c:g}": accuracy for c, accuracy in self.validation_accuracy.items()})
        return figures


def _labels(Y: np.ndarray, task: str) -> np.ndarray:
    return Y.argmax(axis=1) if task == "classification" else np.round(Y[:, 0]).astype(np.int64)


ABSENT_LOGIT = 1e3
"""How far below the smallest intercept a class without training samples is put: never predicted."""


def _dense_weights(model, outputs: int, task: str) -> np.ndarray:
    """``(features + 1) x outputs``: ``[coef_.T; intercept_]`` with a column for every class.

    scikit-learn fits only the classes present; with two of them its ``coef_`` is one row
    ``w`` of the log-odds, the same as logits ``(0, w)``. A class absent from the training
    data gets a zero column whose bias lies ``ABSENT_LOGIT`` below the others'.
    """
    coef, intercept = model.coef_, model.intercept_
    if task == "binary":
        return np.vstack([coef.T, intercept[None, :]])
    if len(model.classes_) == 2:
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    weights = np.zeros((coef.shape[1] + 1, outputs))
    weights[-1] = intercept.min() - ABSENT_LOGIT
    weights[:-1, model.classes_] = coef.T
    weights[-1, model.classes_] = intercept
    return weights


def fit_logistic_regression(X, Y, *, C: Sequence[float] | float = 1.0, validation: tuple | None = None,
                            max_iter: int = 1000, dtype: str = "float64") -> tuple[Network, LogisticReport]:
    """Fit ``LogisticRegression(C, lbfgs)`` on ``X`` (N x input_shape, flattened) against
    ``Y`` (N x k one-hot, or N x 1 of 0/1).

    With several ``C`` values, each is fitted on ``X`` and scored on ``validation = (X_val,
    Y_val)``; the most accurate (the smallest ``C`` among ties) is fitted again on ``X`` and
    ``validation``'s rows together. Returns the network and a ``LogisticReport``.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x, y = np.asarray(X), np.asarray(Y, np.float64)
    y = y.reshape(len(y), -1)
    task = infer_task(y)
    if task == "regression":
        raise ConfigError("logistic regression needs one-hot or 0/1 targets: this dataset is a regression")
    grid = [float(c) for c in (C if isinstance(C, Sequence) and not isinstance(C, str) else [C])]
    if not grid or any(not np.isfinite(c) or c <= 0 for c in grid):
        raise ConfigError(f"C must be a positive number or a non-empty list of them, got {C!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ConfigError(f"max_iter must be a positive integer, got {max_iter!r}")
    if len(grid) > 1 and validation is None:
        raise ConfigError(f"choosing C among {grid} needs a validation set: pass validation=(X_val, Y_val)")
    present = np.unique(_labels(y, task))
    if len(present) < 2:
        raise ConfigError(f"every training target is class {present[0]}: logistic regression needs samples of at "
                          f"least two classes (use more training samples)")
    input_shape = x.shape[1:]
    flat = x.reshape(len(x), -1).astype(np.float64)

    def fit(rows, labels, c):
        model = LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(rows, labels)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            log.warning("logistic regression with C=%g stopped at max_iter=%d before lbfgs converged", c, max_iter)
        return model

    started = time.perf_counter()
    chosen, scores = grid[0], {}
    if len(grid) > 1:
        x_val = np.asarray(validation[0]).reshape(len(validation[0]), -1).astype(np.float64)
        y_val = np.asarray(validation[1], np.float64).reshape(len(validation[1]), -1)
        labels_val = _labels(y_val, task)
        for c in grid:
            scores[c] = float(fit(flat, _labels(y, task), c).score(x_val, labels_val))
            log.info("logistic regression C=%g: validation accuracy %.4f", c, scores[c])
        chosen = max(grid, key=lambda c: (scores[c], -c))
        flat, y = np.concatenate([flat, x_val]), np.concatenate([y, y_val])
    model = fit(flat, _labels(y, task), chosen)
    seconds = time.perf_counter() - started

    weights = _dense_weights(model, y.shape[1], task)
    head = "softmax" if task == "classification" else "sigmoid"
    network = build_network([{"type": "flatten"}, {"type": "dense", "units": weights.shape[1]}, {"type": head}],
                            input_shape, dtype=dtype, weights=[weights])
    report = LogisticReport(fit_seconds=seconds, C=chosen, iterations=int(np.max(model.n_iter_)),
                            validation_accuracy=scores)
    return network, report
