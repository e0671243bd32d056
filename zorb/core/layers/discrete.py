"""Activations without a useful derivative, and their relaxed inverses.

``step``, ``sign`` and ``quantize`` are piecewise constant: their derivative is zero almost
everywhere, so gradient descent through them learns nothing unless it swaps in a surrogate
(the straight-through estimator, ``straight_through``). ZORB needs no derivative, only a
target for the pre-activation whose forward gives the target's level: each inverse below maps a
target to the level nearest it and then to a pre-activation inside that level's interval, at
least ``margin`` from its edges (so rounding cannot move it to the next level) and otherwise
as close to the target as it can be, so that the least-squares solve below still sees how far
the target lies beyond the threshold. ``hardtanh`` is piecewise linear and its inverse is
the identity clipped to its range.

All four are elementwise: they take ``samples_last`` arrays, record no state and so work in
chunked and multi-device fits unchanged.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp

from zorb.errors import ConfigError
from zorb.core.layers.base import Layer, Shape, layer_class, positive_int

STE_MODES = ("clipped", "identity")
"""``clipped``: the surrogate gradient is 1 inside the layer's window and 0 outside (hardtanh's
derivative: Hubara et al. 2016); ``identity``: 1 everywhere (Bengio et al. 2013)."""


def straight_through(function, h, window: tuple[float, float], mode: str):
    """``function(h)`` whose derivative is replaced by the straight-through estimator ``mode``."""
    if mode not in STE_MODES:
        raise ConfigError(f"straight-through mode must be one of {', '.join(STE_MODES)}, got {mode!r}")

    @jax.custom_jvp
    def surrogate(h):
        return function(h)

    @surrogate.defjvp
    def surrogate_jvp(primals, tangents):
        (h,), (dh,) = primals, tangents
        if mode == "identity":
            return function(h), dh
        return function(h), jnp.where((h >= window[0]) & (h <= window[1]), dh, jnp.zeros_like(dh))

    return surrogate(h)


def positive_number(kind: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{kind} {name} must be a positive number, got {value!r}")
    return float(value)


def _beyond(t, threshold, margin):
    """``t - threshold`` moved to at least ``margin`` on its own side of 0 (0 counts as above)."""
    d = t - threshold
    return jnp.where(d >= 0, jnp.maximum(d, margin), jnp.minimum(d, -margin))


class ElementwiseLayer(Layer):
    """Shared by the layers here: elementwise, no state, any layout."""

    samples_last_ok: ClassVar[bool] = True
    window: ClassVar[tuple[float, float]] = (-1.0, 1.0)

    def straight_through(self, h, mode: str = "clipped"):
        """``forward`` with the straight-through estimator as its derivative (Adam's ``gradient=ste``)."""
        return straight_through(self.forward, h, self.window, mode)


@layer_class()
class Step(ElementwiseLayer):
    """Heaviside step: ``1`` where ``h >= 0``, else ``0``.

    Inverse: a target ``t`` has level 1 where ``t >= 1/2``; the pre-activation target is
    ``t - 1/2`` moved to at least ``margin`` on that level's side of 0.
    """

    in_shape: Shape
    margin: float = 0.1

    kind: ClassVar[str] = "step"

    @classmethod
    def build(cls, in_shape: Shape, key, dtype, *, margin=0.1):
        return cls(in_shape=in_shape, margin=positive_number("step", "margin", margin))

    def forward(self, h, samples_last=False):
        return jnp.where(h >= 0, 1, 0).astype(h.dtype)

    def inverse(self, t, aux, key, first_row=0, samples_last=False):
        return _beyond(t, 0.5, self.margin), self


@layer_class()
class Sign(ElementwiseLayer):
    """Sign: ``1`` where ``h >= 0``, else ``-1``.

    Inverse: a target ``t`` has level 1 where ``t >= 0``; the pre-activation target is ``t``
    moved to at least ``margin`` on that level's side of 0.
    """

    in_shape: Shape
    margin: float = 0.1

    kind: ClassVar[str] = "sign"

    @classmethod
    def build(cls, in_shape: Shape, key, dtype, *, margin=0.1):
        return cls(in_shape=in_shape, margin=positive_number("sign", "margin", margin))

    def forward(self, h, samples_last=False):
        return jnp.where(h >= 0, 1, -1).astype(h.dtype)

    def inverse(self, t, aux, key, first_row=0, samples_last=False):
        return _beyond(t, 0.0, self.margin), self


@layer_class()
class Quantize(ElementwiseLayer):
    """``levels`` uniform levels ``low + i * delta``, ``delta = (high - low) / (levels - 1)``: the
    input is clipped to ``[low, high]`` and rounded to the nearest level.

    Inverse: a target ``t`` goes to its nearest level ``i`` (targets outside the range to the
    end level), then to ``t`` clipped into level ``i``'s interval ``[level - delta/2,
    level + delta/2]`` shrunk by ``margin * delta`` at each end.
    """

    in_shape: Shape
    levels: int
    low: float = -1.0
    high: float = 1.0
    margin: float = 0.1

    kind: ClassVar[str] = "quantize"

    @classmethod
    def build(cls, in_shape: Shape, key, dtype, *, levels, low=-1.0, high=1.0, margin=0.1):
        levels = positive_int("quantize", "levels", levels)
        if levels < 2:
            raise ConfigError(f"quantize levels must be at least 2, got {levels}")
        for name, value in (("low", low), ("high", high)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"quantize {name} must be a number, got {value!r}")
        if not low < high:
            raise ConfigError(f"quantize low must be below high, got low={low} high={high}")
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 < margin < 0.5:
            raise ConfigError(f"quantize margin (a fraction of the level spacing) must be in (0, 0.5), got {margin!r}")
        return cls(in_shape=in_shape, levels=levels, low=float(low), high=float(high), margin=float(margin))

    @property
    def window(self):
        return (self.low, self.high)

    @property
    def delta(self) -> float:
        return (self.high - self.low) / (self.levels - 1)

    def _level_index(self, x):
        return jnp.round((jnp.clip(x, self.low, self.high) - self.low) / self.delta)

    def forward(self, h, samples_last=False):
        return (self.low + self.delta * self._level_index(h)).astype(h.dtype)

    def inverse(self, t, aux, key, first_row=0, samples_last=False):
        level = self.low + self.delta * self._level_index(t)
        half = self.delta * (0.5 - self.margin)
        return jnp.clip(t, level - half, level + half), self


@layer_class()
class HardTanh(ElementwiseLayer):
    """``clip(h, -1, 1)``. Inverse: ``clip(t, -1, 1)``, the preimage of the attainable output
    nearest ``t`` that lies nearest ``t``."""

    in_shape: Shape

    kind: ClassVar[str] = "hardtanh"

    def forward(self, h, samples_last=False):
        return jnp.clip(h, -1.0, 1.0)

    def inverse(self, t, aux, key, first_row=0, samples_last=False):
        return jnp.clip(t, -1.0, 1.0), self
