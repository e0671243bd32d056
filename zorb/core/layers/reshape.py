"""Layers that only move values: Flatten and Identity."""

from __future__ import annotations

import math
from typing import ClassVar

from zorb.core.layers.base import Layer, Shape, layer_class


@layer_class()
class Flatten(Layer):
    """(N, *in_shape) -> (N, prod(in_shape)); the inverse reshapes back."""

    in_shape: Shape

    kind: ClassVar[str] = "flatten"

    @classmethod
    def build(cls, in_shape: Shape, key, dtype):
        return cls(in_shape=in_shape)

    @property
    def out_shape(self) -> Shape:
        return (math.prod(self.in_shape),)

    def forward(self, x):
        return x.reshape(x.shape[0], -1)

    def inverse(self, t, aux, key, first_row=0):
        return t.reshape(t.shape[0], *self.in_shape), self


@layer_class()
class Identity(Layer):
    in_shape: Shape

    kind: ClassVar[str] = "identity"
    samples_last_ok: ClassVar[bool] = True

    @classmethod
    def build(cls, in_shape: Shape, key, dtype):
        return cls(in_shape=in_shape)

    def forward(self, x, samples_last=False):
        return x

    def inverse(self, t, aux, key, first_row=0, samples_last=False):
        return t, self
