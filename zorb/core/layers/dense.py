"""Dense layer: ``H = [A, 1] @ W`` with ``W`` of shape ``(d_in + 1) x units`` (bias row last)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from zorb.errors import ConfigError
from zorb.kernels.products import matmul
from zorb.core.layers.base import Layer, Shape, boolean, layer_class, positive_int, shape_text
from zorb.core.solvers import gram_moments, pseudoinverse


def glorot_uniform(key, rows: int, fan_in: int, fan_out: int, units: int, dtype):
    """Glorot-uniform ``rows x units`` matrix, ``U(-sqrt(6/(fan_in+fan_out)), +...)``.

    Applied to every row of ``W``, the bias row included, as the paper's code does.
    """
    limit = (6.0 / (fan_in + fan_out)) ** 0.5
    return jax.random.uniform(key, (rows, units), dtype, minval=-limit, maxval=limit)


class ParametricLayer(Layer):
    """Shared by Dense and Conv2D: both apply one weight matrix to rows of a design matrix."""

    parametric: ClassVar[bool] = True
    bias: bool
    weights: Any

    def rows_per_sample(self) -> int:
        """Rows each sample adds to the design matrix (``design(x)`` has ``N * rows_per_sample()``)."""
        return 1

    @property
    def kernel(self):
        """``W'``: the weight rows without the bias row."""
        return self.weights[:-1] if self.bias else self.weights

    def apply_rows(self, rows, samples_last=False):
        """``[rows, 1] @ W`` for a 2-D ``rows``; with ``samples_last`` its transpose
        ``W'^T @ rows + b`` for rows of shape (d_in, N)."""
        if samples_last:
            out = matmul(self.kernel, rows, transpose_a=True)
            return out + self.weights[-1][:, None] if self.bias else out
        if self.bias:
            return matmul(rows, self.weights[:-1]) + self.weights[-1]
        return matmul(rows, self.weights)

    def normal_equations(self, x, t, samples_last=False):
        """``([D, 1]^T [D, 1], [D, 1]^T T)`` for the design rows ``D`` of input ``x`` and the target
        rows of ``t`` (``D`` itself without bias): the ``gram`` solver's moments."""
        return gram_moments(self.design(x), self.target_rows(t), bias=self.bias, samples_last=samples_last)

    def prepare_inverse(self, rcond):
        """What the backward pass needs, computed once: ``pinv(W', rcond)``."""
        return pseudoinverse(self.kernel, rcond)

    def invert_rows(self, t_rows, pinv, shifted: bool = False, samples_last: bool = False):
        """``(T - b) @ pinv(W')`` for a 2-D ``t_rows`` (``T @ pinv(W')`` when ``shifted``: the bias
        already subtracted, by the Sigmoid/Tanh inverse above); with ``samples_last`` its
        transpose, for ``t_rows`` of shape (d_out, N)."""
        if samples_last:
            if self.bias and not shifted:
                t_rows = t_rows - self.weights[-1][:, None]
            return matmul(pinv, t_rows, transpose_a=True)
        if self.bias and not shifted:
            t_rows = t_rows - self.weights[-1]
        return matmul(t_rows, pinv)

    def with_weights(self, weights):
        return dataclasses.replace(self, weights=weights)

    def arrays(self):
        return {"weights": self.weights}


@layer_class(data=("weights",))
class Dense(ParametricLayer):
    in_shape: Shape
    units: int
    bias: bool = True
    weights: Any = None

    kind: ClassVar[str] = "dense"
    samples_last_ok: ClassVar[bool] = True

    @classmethod
    def build(cls, in_shape: Shape, key, dtype, *, units, bias=True):
        units = positive_int("dense", "units", units)
        bias = boolean("dense", "bias", bias)
        if len(in_shape) != 1:
            raise ConfigError(
                f"dense needs a flat input but gets {shape_text(in_shape)}: add {{type: flatten}} before it")
        d_in = in_shape[0]
        w = glorot_uniform(key, d_in + bias, d_in, units, units, dtype)
        return cls(in_shape=in_shape, units=units, bias=bias, weights=w)

    @property
    def out_shape(self) -> Shape:
        return (self.units,)

    def forward(self, x, samples_last=False):
        return self.apply_rows(x, samples_last)

    def design(self, x):
        """Rows of the least-squares problem: the layer input itself, (N, d_in)."""
        return x

    def target_rows(self, t):
        return t

    def inverse(self, t, aux, key, first_row=0, samples_last=False):
        return self.invert_rows(t, aux, samples_last=samples_last), self

    def spec(self):
        return {"type": self.kind, "units": self.units, "bias": self.bias}
