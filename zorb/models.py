"""``Sequential``: a keras-style model over zorb's own calls. It holds layer specs and a
network; ``fit``, ``predict``, ``evaluate``, ``save`` and ``load`` are ``zorb.fit``,
``zorb.predict``, ``zorb.evaluate``, ``zorb.save`` and ``zorb.load``.

    model = zorb.models.Sequential(input_shape=(28, 28, 1), network=[
        zorb.layers.Convolution2D(n_kernels=8, size=3, stride=1), zorb.layers.Sigmoid(), zorb.layers.Flatten(),
        zorb.layers.Dense(units=10), zorb.layers.Softmax()])
    model.fit(X=data.train_x, Y=data.train_y, solver="qr", rcond=1e-9)
    model.evaluate(X=data.test_x, Y=data.test_y)   # {"error": ..., "mse": ..., "accuracy": ...}
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import zorb
from zorb.errors import ConfigError
from zorb.layers import Layer


def _spec(layer) -> dict[str, Any]:
    if isinstance(layer, Layer):
        return layer.spec()
    if isinstance(layer, Mapping):
        return dict(layer)
    raise ConfigError(f"a Sequential layer is a zorb.layers object or a spec mapping, got {layer!r}")


class Sequential:
    """A stack of layers trained by ZORB. ``input_shape`` excludes the sample axis; when it is
    None, ``fit`` takes it from ``X``. ``seed`` draws the initial weights (``zorb.build_network``)."""

    def __init__(self, input_shape: Sequence[int] | None = None, network: Sequence | None = None, *,
                 seed: int = 0, dtype: str = "float64"):
        self.input_shape = None if input_shape is None else tuple(input_shape)
        self.specs = [_spec(layer) for layer in network or []]
        self.seed = seed
        self.dtype = dtype
        self.network: zorb.Network | None = None
        self.report = None

    @classmethod
    def from_network(cls, network: zorb.Network) -> "Sequential":
        model = cls(network.input_shape, [layer.spec() for layer in network.layers], dtype=str(network.dtype))
        model.network = network
        return model

    def add(self, layer) -> "Sequential":
        """Append a layer; a built (or trained) network is dropped, to be built again."""
        self.specs.append(_spec(layer))
        self.network = None
        return self

    def build(self, input_shape: Sequence[int] | None = None) -> zorb.Network:
        """The untrained network (``zorb.build_network``), built once."""
        if self.network is None:
            shape = self.input_shape or (tuple(input_shape) if input_shape is not None else None)
            if shape is None:
                raise ConfigError("Sequential needs input_shape (without the sample axis), or data to fit")
            self.input_shape = shape
            self.network = zorb.build_network(self.specs, shape, seed=self.seed, dtype=self.dtype)
        return self.network

    def summary(self, print_fn=print) -> str:
        """One line per layer: its type, output shape and parameter count; then the total."""
        network = self.build()
        rows = [("layer", "type", "output shape", "parameters"), ("0", "input", str(network.input_shape), "0")]
        total = 0
        for index, layer in enumerate(network.layers, 1):
            count = math.prod(layer.weights.shape) if layer.parametric else 0
            total += count
            rows.append((str(index), layer.kind, str(layer.out_shape), f"{count:,}"))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        lines.append(f"total parameters: {total:,}")
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text

    def fit(self, X, Y, **options) -> zorb.FitReport:
        """Train on ``X`` (N x input_shape), ``Y`` (N x outputs) with ``zorb.fit``; ``options`` are its
        keywords (``solver``, ``rcond``, ``ridge``, ``per_layer``, ``chunk_rows``, ...). Fits from the
        initial weights each time."""
        if self.network is not None and self.report is not None:
            self.network = None  # start again from the seed's weights
        network = self.build(tuple(X.shape[1:]))
        options.setdefault("seed", self.seed)
        self.network, self.report = zorb.fit(network, X, Y, **options)
        return self.report

    def predict(self, X, *, batch_size: int | None = None):
        return zorb.predict(self._trained(), X, batch_size=batch_size)

    def evaluate(self, X, Y, *, task: str | None = None, batch_size: int | None = None) -> dict[str, float]:
        """``zorb.evaluate``'s figures (``error``, ``mse``; for classes ``accuracy`` and ``log_loss``)."""
        return zorb.evaluate(self._trained(), X, Y, task=task, batch_size=batch_size)

    def save(self, path: str | os.PathLike) -> None:
        zorb.save(self.build(), path)

    def _trained(self) -> zorb.Network:
        if self.network is None:
            raise ConfigError("the model has no network yet: call fit first (or zorb.models.load a saved one)")
        return self.network


def load(path: str | os.PathLike) -> Sequential:
    """A model from a file ``Sequential.save`` (or ``zorb.save``) wrote; it predicts as the saved one."""
    return Sequential.from_network(zorb.load(path))


__all__ = ["Sequential", "load"]
