"""The Conv2D layer's forward pass and the moments of its gram solve on the CPU (conv.cc), where
``zorb.kernels.native`` allows; elsewhere their pure-JAX equivalents."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from zorb.kernels import native


def jax_conv2d(x, kernel, stride: int, bias=None):
    """``conv2d``'s pure-JAX equivalent: XLA's ``conv_general_dilated``."""
    y = jax.lax.conv_general_dilated(x, kernel, (stride, stride), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision=jax.lax.Precision.HIGHEST)
    return y + bias if bias is not None and bias.size else y


@partial(jax.custom_jvp, nondiff_argnums=(3,))
def _conv2d(x, kernel, bias, stride):
    n, h, w, _ = x.shape
    k, f = kernel.shape[0], kernel.shape[3]
    shape = (n, (h - k) // stride + 1, (w - k) // stride + 1, f)
    return native.on_cpu("zorb_conv2d_f64", jax.ShapeDtypeStruct(shape, jnp.float64),
                         lambda x, kernel, bias: jax_conv2d(x, kernel, stride, bias), x, kernel, bias, stride=stride)


def extract_patches(x, kernel: int, stride: int):
    """All k x k patches: (N, H, W, C) -> (N, H', W', k*k*C), whole-array slicing; offsets
    (i, j) then channels, the row order of ``kernel.reshape(k * k * C, F)``.

    One strided slice per kernel offset (k*k of them), never a loop over positions or samples.
    """
    _, h, w, _ = x.shape
    ho, wo = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    return jnp.concatenate([x[:, i:i + (ho - 1) * stride + 1:stride, j:j + (wo - 1) * stride + 1:stride, :]
                            for i in range(kernel) for j in range(kernel)], axis=-1)


def _conv2d_jvp(stride, primals, tangents):
    """The tangent as patch products: ``patches(dx) @ K + patches(x) @ dK + db``. Under ``grad``
    their transposes are a product with the patch matrix and a col2im of slices, where XLA's
    own transposed float64 convolutions ran as scalar loops (Adam on conv1, batch 32: 45-60 ms a
    step, nearly all of it the kernel's gradient). Terms of symbolically zero tangents (the input
    images) are left out."""
    (x, kernel, bias), (dx, dkernel, dbias) = primals, tangents
    y = _conv2d(x, kernel, bias, stride)
    k, f = kernel.shape[0], kernel.shape[3]
    product = partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)
    terms = []
    if not isinstance(dx, jax.custom_derivatives.SymbolicZero):
        terms.append(product(extract_patches(dx, k, stride), kernel.reshape(-1, f)))
    if not isinstance(dkernel, jax.custom_derivatives.SymbolicZero):
        terms.append(product(extract_patches(x, k, stride), dkernel.reshape(-1, f)))
    if not isinstance(dbias, jax.custom_derivatives.SymbolicZero) and bias.size:
        terms.append(jnp.broadcast_to(dbias, y.shape))
    return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)


_conv2d.defjvp(_conv2d_jvp, symbolic_zeros=True)


def conv2d(x, kernel, stride: int, bias=None):
    """The valid-padding NHWC convolution of ``x`` (N, H, W, C) with ``kernel`` (k, k, C, F),
    stride ``stride``, plus ``bias`` (F) if given -> (N, H', W', F): on the CPU for float64 one
    pass of conv.cc (32 output channels accumulated per pixel in vector registers, the output
    written once: 1,280 32x32x3 images with 32 3x3 filters in 26 ms where XLA's float64
    convolution takes 87 ms on two cores), elsewhere ``jax_conv2d``. Differentiable (the JVP by
    patch products, see ``_conv2d_jvp``)."""
    bias = jnp.zeros((0,), x.dtype) if bias is None else bias
    if not (native.float64(x, kernel, bias) and x.ndim == 4 and kernel.ndim == 4 and x.size and kernel.size):
        return jax_conv2d(x, kernel, stride, bias)
    return _conv2d(x, kernel, bias, int(stride))


def conv_moments(x, t, kernel_size: int, stride: int, *, reference):
    """``([M, 1]^T [M, 1], [M, 1]^T T)`` ((d + 1)^2, (d + 1) x F) for the patch matrix ``M`` (d =
    ``kernel_size``^2 C columns) of ``x`` (N, H, W, C) under a ``kernel_size`` x ``kernel_size``
    valid convolution with ``stride`` and the target rows of ``t`` (N, H', W', F), without
    forming ``M``: on the CPU for float64 in one pass of conv.cc (conv1's 1,152,000 x 27
    patches: about 35 ms where forming them alone took 51 ms), elsewhere its pure-JAX
    equivalent ``reference(x, t)``."""
    if not (native.float64(x, t) and x.ndim == 4 and t.ndim == 4):
        return reference(x, t)
    side = kernel_size * kernel_size * x.shape[3] + 1
    return native.on_cpu("zorb_conv_moments_f64", (jax.ShapeDtypeStruct((side, side), jnp.float64),
                                                   jax.ShapeDtypeStruct((side, t.shape[3]), jnp.float64)),
                         lambda x, t: tuple(reference(x, t)), x, t, k=int(kernel_size), stride=int(stride))
