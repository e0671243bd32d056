"""Activations and their relaxed inverses (ZORB.md, "Relaxed backward pass")."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from zorb.kernels.squash import extrema, squash_inverse
from zorb.errors import ConfigError
from zorb.core.layers.base import Layer, Shape, layer_class, margin
from zorb.kernels.special import atanh, logit

DEFAULT_EPS = 1e-5


class SquashingLayer(Layer):
    """Sigmoid and Tanh: an invertible squashing function with an output range.

    The inverse takes the global ``lo = min(T)``, ``hi = max(T)``, stores them as the
    layer's ``output_range``, maps ``T`` affinely onto ``[low + eps, high - eps]`` (the
    function's open range ``(low, high)`` less the margin) and applies the function's inverse.
    From then on ``forward`` maps the function's output back onto ``[lo, hi]`` by the exact
    inverse of that affine map. ``output_range`` is ``None`` until the inverse has run.
    """

    eps: float
    output_range: Any

    low: ClassVar[float]
    high: ClassVar[float]
    samples_last_ok: ClassVar[bool] = True
    records_inverse_state: ClassVar[bool] = True  # the fit gathers the range over all chunks itself

    @classmethod
    def build(cls, in_shape: Shape, key, dtype, *, eps=DEFAULT_EPS):
        return cls(in_shape=in_shape, eps=margin(cls.kind, eps))

    def _margins(self):
        return self.low + self.eps, self.high - self.eps

    def forward(self, h, samples_last=False):
        y = self.function(h)
        if self.output_range is None:
            return y
        a, b = self._margins()
        lo, hi = self.output_range[0], self.output_range[1]
        return lo + (hi - lo) * (y - a) / (b - a)

    def inverse(self, t, aux, key, first_row=0, shift=None, samples_last=False):
        fitted = self.with_range(*extrema(t))
        return fitted.inverse_in_range(t, shift, samples_last), fitted

    def with_range(self, lo, hi):
        """This layer with output range ``[lo, hi]`` (the global extremes of its target)."""
        return dataclasses.replace(self, output_range=jnp.stack([lo, hi]))

    def inverse_in_range(self, t, shift=None, samples_last=False):
        """The inverse with the stored output range: what a chunk of rows gets in a streamed
        fit, where the range comes from a pass over all rows first. ``shift`` (one value per
        feature, e.g. the bias of the dense layer below) is subtracted from the result in the
        same pass (``zorb.kernels.squash.squash_inverse``)."""
        if t.ndim < 2 or (shift is not None and t.ndim != 2):
            out = self._inverse_in_range(t)
            return out if shift is None else out - shift
        a, b = self._margins()
        rows = t.reshape(t.shape[0], -1)  # an image target as rows: no copy
        return squash_inverse(rows, self.output_range, a, b, tanh=self.kind == "tanh", shift=shift,
                              reference=self._inverse_in_range, shift_rows=samples_last).reshape(t.shape)

    def _inverse_in_range(self, t):
        a, b = self._margins()
        lo, hi = self.output_range[0], self.output_range[1]
        span = hi - lo
        # A constant target maps to the middle of the range instead of dividing by zero;
        # forward then returns lo + 0 * (...) = the constant.
        z = jnp.where(span > 0, a + (t - lo) * ((b - a) / jnp.where(span > 0, span, 1)), (a + b) / 2)
        return self.function_inverse(z)

    def spec(self):
        return {"type": self.kind, "eps": self.eps}

    def arrays(self):
        return {"output_range": self.output_range}


@layer_class(data=("output_range",))
class Sigmoid(SquashingLayer):
    in_shape: Shape
    eps: float = DEFAULT_EPS
    output_range: Any = None

    kind: ClassVar[str] = "sigmoid"
    low: ClassVar[float] = 0.0
    high: ClassVar[float] = 1.0

    @staticmethod
    def function(h):
        return jax.nn.sigmoid(h)

    @staticmethod
    def function_inverse(z):
        return logit(z)


@layer_class(data=("output_range",))
class Tanh(SquashingLayer):
    in_shape: Shape
    eps: float = DEFAULT_EPS
    output_range: Any = None

    kind: ClassVar[str] = "tanh"
    low: ClassVar[float] = -1.0
    high: ClassVar[float] = 1.0

    @staticmethod
    def function(h):
        return jnp.tanh(h)

    @staticmethod
    def function_inverse(z):
        return atanh(z)


RELU_INVERSES = ("random", "clip", "keep")


def row_uniform(key, first_row, shape, dtype):
    """``U[0, 1)`` draws of ``shape``, sample ``n``'s row from ``fold_in(key, first_row + n)``.

    Drawing each sample from its own key makes a sample's draw independent of how the rows
    are split into chunks or over devices: a streamed fit equals the in-memory one.
    """
    rows = first_row + jnp.arange(shape[0])
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, rows)
    return jax.vmap(lambda k: jax.random.uniform(k, shape[1:], dtype))(keys)


@layer_class()
class ReLU(Layer):
    """ReLU. Negative targets have no preimage; ``inverse`` says what replaces them:
    ``random`` (the paper's code: an independent ``-u``, ``u ~ U[0, 1)``, seeded per sample
    by ``row_uniform``),
    ``clip`` (0) or ``keep`` (left as they are)."""

    in_shape: Shape
    inverse_mode: str = "random"

    kind: ClassVar[str] = "relu"
    samples_last_ok: ClassVar[bool] = True

    @classmethod
    def build(cls, in_shape: Shape, key, dtype, *, inverse="random"):
        if inverse not in RELU_INVERSES:
            raise ConfigError(f"relu inverse must be one of {', '.join(RELU_INVERSES)}, got {inverse!r}")
        return cls(in_shape=in_shape, inverse_mode=inverse)

    def forward(self, h, samples_last=False):
        return jnp.maximum(h, 0)

    def inverse(self, t, aux, key, first_row=0, samples_last=False):
        if self.inverse_mode == "keep":
            return t, self
        if self.inverse_mode == "clip":
            return jnp.maximum(t, 0), self
        # the same draw for every sample whichever way the samples lie
        draws = row_uniform(key, first_row, t.shape[::-1], t.dtype).T if samples_last else row_uniform(
            key, first_row, t.shape, t.dtype)
        return jnp.where(t < 0, -draws, t), self

    def spec(self):
        return {"type": self.kind, "inverse": self.inverse_mode}


@layer_class(data=("max_logit", "normalizer"))
class Softmax(Layer):
    """The paper's softmax: ``e_j = exp(h_j - m) - eps``, output ``e_j / sum_j e_j``.

    ``observe`` keeps ``m`` (``max_logit``) and ``s`` (``normalizer``), one per sample of
    the training data, and ``inverse`` uses them: ``T_in = log(T * s + eps) + m``.
    """

    in_shape: Shape
    eps: float = DEFAULT_EPS
    max_logit: Any = None
    normalizer: Any = None

    kind: ClassVar[str] = "softmax"
    needs_observation: ClassVar[bool] = True
    samples_last_ok: ClassVar[bool] = True
    per_sample: ClassVar[tuple[str, ...]] = ("max_logit", "normalizer")

    @classmethod
    def build(cls, in_shape: Shape, key, dtype, *, eps=DEFAULT_EPS):
        eps = margin("softmax", eps)
        classes = in_shape[-1]
        # s = sum_j exp(h_j - m) - classes * eps > 1 - classes * eps (the max term is 1, the others
        # positive): positive for every input while eps <= 1 / classes; above it s can reach 0 or
        # turn negative, and e_j / s then inverts the ranking (Fashion-MNIST, eps=0.3: 0.13 accuracy)
        if classes * eps > 1:
            raise ConfigError(f"softmax eps must be at most 1/{classes} for {classes} outputs (its normaliser "
                              f"sum(exp(h - max)) - {classes} * eps must stay positive), got {eps!r}")
        return cls(in_shape=in_shape, eps=eps)

    def _terms(self, h, axis):
        m = jnp.max(h, axis=axis, keepdims=True)
        e = jnp.exp(h - m) - self.eps
        return e, m, jnp.sum(e, axis=axis, keepdims=True)

    def forward(self, h, samples_last=False):
        e, _, s = self._terms(h, 0 if samples_last else -1)
        return e / s

    def observe(self, h, samples_last=False):
        axis = 0 if samples_last else -1
        e, m, s = self._terms(h, axis)
        return e / s, dataclasses.replace(self, max_logit=jnp.squeeze(m, axis), normalizer=jnp.squeeze(s, axis))

    def inverse(self, t, aux, key, first_row=0, samples_last=False):
        if self.normalizer is None:
            raise ConfigError("softmax inverse needs the normalisers of a forward pass over the training data")
        axis = 0 if samples_last else -1
        s, m = jnp.expand_dims(self.normalizer, axis), jnp.expand_dims(self.max_logit, axis)
        return jnp.log(t * s + self.eps) + m, self

    def spec(self):
        return {"type": self.kind, "eps": self.eps}

    def arrays(self):
        return {"max_logit": self.max_logit, "normalizer": self.normalizer}
