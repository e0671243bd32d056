"""Conv2D layer (NHWC, valid padding): a Dense layer applied to every k x k x C input patch.

Patch rows are ordered ``(kernel row, kernel column, channel)``, so ``W'`` reshapes to the
``HWIO`` kernel ``(k, k, C, filters)`` that ``lax.conv_general_dilated`` takes.
"""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from zorb.kernels.conv import conv2d, conv_moments, extract_patches
from zorb.errors import ConfigError
from zorb.core.layers.base import Shape, boolean, layer_class, positive_int, shape_text
from zorb.core.layers.dense import ParametricLayer, glorot_uniform
from zorb.core.solvers import gram_moments


FUSED_MOMENTS_MAX = 128
"""Patch sizes (k * k * C) up to which the fused moments beat BLAS on the patch matrix: 27
values (conv1) 49 ms against 178 ms, 128 values 373 ms against 1,085 ms; at 288 (conv2's
second layer) BLAS wins."""


def output_size(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


def sum_patches(patches, in_shape: Shape, kernel: int, stride: int):
    """Transpose of ``extract_patches`` (col2im): add every patch back to its place.

    (N, H', W', k*k*C) -> (N, H, W, C).
    """
    n = patches.shape[0]
    proto = jax.ShapeDtypeStruct((n, *in_shape), patches.dtype)
    (summed,) = jax.linear_transpose(partial(extract_patches, kernel=kernel, stride=stride), proto)(patches)
    return summed


def average_patches(patches, in_shape: Shape, kernel: int, stride: int):
    """col2im with averaging: each input position gets the mean of the patch entries covering it.

    Positions no patch covers (possible with stride > 1) get 0: they do not affect the output.
    """
    summed = sum_patches(patches, in_shape, kernel, stride)
    ones = jnp.ones((1, *patches.shape[1:]), patches.dtype)
    count = sum_patches(ones, in_shape, kernel, stride)
    return jnp.where(count > 0, summed / jnp.where(count > 0, count, 1), 0)


@layer_class(data=("weights",))
class Conv2D(ParametricLayer):
    in_shape: Shape
    filters: int
    kernel_size: int
    stride: int = 1
    bias: bool = True
    weights: Any = None

    kind: ClassVar[str] = "conv2d"

    @classmethod
    def build(cls, in_shape: Shape, key, dtype, *, filters, kernel_size, stride=1, bias=True):
        filters = positive_int("conv2d", "filters", filters)
        kernel_size = positive_int("conv2d", "kernel_size", kernel_size)
        stride = positive_int("conv2d", "stride", stride)
        bias = boolean("conv2d", "bias", bias)
        if len(in_shape) != 3:
            raise ConfigError(
                f"conv2d needs an image input (height x width x channels) but gets {shape_text(in_shape)}")
        h, w, c = in_shape
        if kernel_size > h or kernel_size > w:
            raise ConfigError(f"conv2d kernel {kernel_size} is larger than its {h}x{w} input")
        fan_in, fan_out = kernel_size * kernel_size * c, kernel_size * kernel_size * filters
        weights = glorot_uniform(key, fan_in + bias, fan_in, fan_out, filters, dtype)
        return cls(in_shape=in_shape, filters=filters, kernel_size=kernel_size, stride=stride, bias=bias,
                   weights=weights)

    @property
    def out_shape(self) -> Shape:
        h, w, _ = self.in_shape
        k, s = self.kernel_size, self.stride
        return (output_size(h, k, s), output_size(w, k, s), self.filters)

    def forward(self, x):
        k, c = self.kernel_size, self.in_shape[2]
        kernel = self.kernel.reshape(k, k, c, self.filters)
        return conv2d(x, kernel, self.stride, self.weights[-1] if self.bias else None)

    def rows_per_sample(self) -> int:
        return self.out_shape[0] * self.out_shape[1]

    def design(self, x):
        """Rows of the least-squares problem: every patch of every sample, (N*H'*W', k*k*C)."""
        patches = extract_patches(x, self.kernel_size, self.stride)
        return patches.reshape(-1, patches.shape[-1])

    def target_rows(self, t):
        return t.reshape(-1, self.filters)

    def normal_equations(self, x, t):
        """The moments of the patch matrix without forming it (``zorb.kernels.conv.conv_moments``) while a
        patch has at most ``FUSED_MOMENTS_MAX`` values; BLAS on the patch matrix beyond."""
        if self.kernel_size ** 2 * self.in_shape[2] > FUSED_MOMENTS_MAX:
            return super().normal_equations(x, t)
        def with_bias_column(x, t):
            return gram_moments(self.design(x), self.target_rows(t), bias=True)

        moments = conv_moments(x, t, self.kernel_size, self.stride, reference=with_bias_column)
        if self.bias:
            return moments
        return moments[0][:-1, :-1], moments[1][:-1]

    def inverse(self, t, aux, key, first_row=0):
        n = t.shape[0]
        patch_targets = self.invert_rows(self.target_rows(t), aux)
        patch_targets = patch_targets.reshape(n, *self.out_shape[:2], -1)
        return average_patches(patch_targets, self.in_shape, self.kernel_size, self.stride), self

    def spec(self):
        return {"type": self.kind, "filters": self.filters, "kernel_size": self.kernel_size,
                "stride": self.stride, "bias": self.bias}
