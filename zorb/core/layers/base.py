"""What every layer shares: the pytree registration and the error prefix.

A layer is an immutable dataclass registered as a JAX pytree: arrays (weights and the state
that ZORB's relaxed inverse needs) are leaves, configuration (sizes, shapes, eps) is static.
Methods never mutate; updates return a new layer through ``dataclasses.replace``.

Every layer offers:

- ``forward(x)``: the prediction-time map.
- ``observe(x) -> (y, layer)``: a forward pass over the training data that also records what
  the inverse will need (only Softmax records anything).
- ``inverse(t, aux, key, first_row=0) -> (t_in, layer)``: the relaxed inverse of ZORB.md,
  which may record state (Sigmoid/Tanh store their output range). ``aux`` is what
  ``prepare_inverse`` computed once for a parametric layer (its pseudoinverse); ``key`` and
  ``first_row`` (the global index of ``t``'s first sample) feed ReLU's random inverse.
- ``spec()`` and ``arrays()``: what ``zorb.core.io`` saves.

Layers with ``samples_last_ok`` also take ``samples_last=True`` in ``forward``, ``observe`` and
``inverse``: arrays then hold one sample per column, ``(features, N)``, the transposed layout
in which the fit's products run faster through BLAS (``zorb.fit``). The results are the same.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax

from zorb.errors import ConfigError

Shape = tuple[int, ...]


def layer_class(*, data: tuple[str, ...] = ()):
    """Make ``cls`` a frozen dataclass and a pytree whose leaves are the fields in ``data``."""

    def wrap(cls):
        cls = dataclasses.dataclass(frozen=True, eq=False)(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        meta = [n for n in names if n not in data]
        jax.tree_util.register_dataclass(cls, data_fields=list(data), meta_fields=meta)
        return cls

    return wrap


class Layer:
    """Defaults shared by the non-parametric layers."""

    kind: ClassVar[str] = ""
    parametric: ClassVar[bool] = False
    needs_observation: ClassVar[bool] = False
    per_sample: ClassVar[tuple[str, ...]] = ()
    """State fields holding one value per training sample (sliced with the rows)."""
    samples_last_ok: ClassVar[bool] = False
    """Whether the methods also take arrays of shape (features, N) (``samples_last=True``)."""

    in_shape: Shape

    @property
    def out_shape(self) -> Shape:
        return self.in_shape

    def observe(self, x, **layout):
        return self.forward(x, **layout), self

    def spec(self) -> dict[str, Any]:
        return {"type": self.kind}

    def arrays(self) -> dict[str, Any]:
        return {}


def shape_text(shape: Shape) -> str:
    """``(26, 26, 8)`` -> ``'26x26x8'`` for messages."""
    return "x".join(str(d) for d in shape)


def positive_int(kind: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{kind} {name} must be a positive integer, got {value!r}")
    return value


def boolean(kind: str, name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{kind} {name} must be true or false, got {value!r}")
    return value


def margin(kind: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 0.5:
        raise ConfigError(f"{kind} eps must be a number in (0, 0.5), got {value!r}")
    return float(value)
