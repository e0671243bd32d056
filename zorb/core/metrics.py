"""Predictions and the paper's evaluation figures."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from zorb.errors import ConfigError, FitError
from zorb.core.network import Network

TASKS = ("classification", "binary", "regression")


@jax.jit
def forward_all(network: Network, x):
    """The network's output for a batch ``x`` (on the device), in one compiled call."""
    for layer in network.layers:
        x = layer.forward(x)
    return x


def predict(network: Network, X, *, batch_size: int | None = None,
            progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Network output for ``X`` (N x input_shape) -> (N x output_shape), in ``batch_size`` rows
    at a time; ``progress(rows)`` hears of each batch done."""
    x = np.asarray(X)
    if tuple(x.shape[1:]) != tuple(network.input_shape):
        raise ConfigError(f"X must have shape (N, {', '.join(map(str, network.input_shape))}), got {x.shape}")
    dtype = network.dtype
    if batch_size is None or batch_size >= len(x):
        return np.asarray(forward_all(network, jnp.asarray(x, dtype)))
    outputs = []
    for start in range(0, len(x), batch_size):
        outputs.append(np.asarray(forward_all(network, jnp.asarray(x[start:start + batch_size], dtype))))
        if progress is not None:
            progress(len(outputs[-1]))
    return np.concatenate(outputs)


def infer_task(Y) -> str:
    """``classification`` for one-hot rows, ``binary`` for one 0/1 column, else ``regression``."""
    y = np.asarray(Y).reshape(len(Y), -1)
    binary_values = np.isin(y, (0, 1)).all()
    if y.shape[1] > 1 and binary_values and (y.sum(axis=1) == 1).all():
        return "classification"
    if y.shape[1] == 1 and binary_values:
        return "binary"
    return "regression"


def residual_error(p: np.ndarray, y: np.ndarray) -> float:
    """The paper's error: the mean over samples of ``||p - y||_2`` for float64 ``N x k``
    predictions and targets (NaN or infinite when a prediction is)."""
    return float(np.mean(np.linalg.norm(p - y, axis=1)))


def scores(predictions, Y, task: str | None = None) -> dict[str, float]:
    """The paper's figures for predictions ``P`` against targets ``Y`` (both N x k).

    - ``error``: mean over samples of ``||p - y||_2`` (target units, the paper's figure);
    - ``mse``: mean of ``(p - y)^2`` over all entries;
    - ``accuracy``: argmax match (classification) or ``round(p) == round(y)`` (one output);
    - ``log_loss``: cross-entropy with predictions clipped to ``[1e-15, 1]`` (ZORB's softmax
      can put an output a hair below 0).

    Raises ``FitError`` when a prediction is NaN or infinite (no figure of such a network means anything).
    """
    p = np.asarray(predictions, np.float64).reshape(len(predictions), -1)
    y = np.asarray(Y, np.float64).reshape(len(Y), -1)
    if p.shape != y.shape:
        raise ConfigError(f"predictions have shape {p.shape} but targets {y.shape}")
    bad = np.size(p) - np.count_nonzero(np.isfinite(p))
    if bad:
        raise FitError(f"{bad} of the {np.size(p)} predictions are not finite (NaN or infinite): the network "
                       f"diverged or holds non-finite weights, so it has no score; raise rcond or lower the "
                       f"learning rate")
    task = task or infer_task(y)
    if task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    out = {"error": residual_error(p, y), "mse": float(np.mean((p - y) ** 2))}
    clipped = np.clip(p, 1e-15, 1.0)
    if task == "classification":
        out["accuracy"] = float(np.mean(p.argmax(axis=1) == y.argmax(axis=1)))
        out["log_loss"] = float(-np.mean(np.sum(y * np.log(clipped), axis=1)))
    elif task == "binary":
        out["accuracy"] = float(np.mean(np.round(p) == np.round(y)))
        rest = np.clip(1 - p, 1e-15, 1.0)
        out["log_loss"] = float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(rest)))
    return out


def evaluate(network: Network, X, Y, *, task: str | None = None, batch_size: int | None = None,
             progress: Callable[[int], None] | None = None) -> dict[str, float]:
    """``scores(predict(network, X), Y, task)``; ``task`` is inferred from ``Y`` when None."""
    return scores(predict(network, X, batch_size=batch_size, progress=progress), Y, task)
