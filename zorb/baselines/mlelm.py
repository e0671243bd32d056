"""ML-ELM, the multilayer extreme learning machine of the paper's group A (PAPER_EXPERIMENTS.md).

Literally, from the network's initial weights ``W_init`` (the ones ZORB starts from)::

    A = X
    for each hidden Dense layer, input side first:
        H = [A, 1] @ W_init                  (N x units: its pre-activation)
        beta = pinv(H, rcond) @ [A, 1]       (units x (d_in + 1): an auto-encoder from H back to A)
        W = beta^T                           ((d_in + 1) x units: exactly the layer's shape, its
                                              last row, the bias, is beta's column for the ones)
        A = activation([A, 1] @ W)           (plain activations, no ZORB output range)
    output Dense layer: W = pinv([A, 1], rcond) @ Y     (plain least squares against Y)

The output activation (softmax, sigmoid) is applied at prediction, by the network's forward
pass; the least squares ignores it. Both pseudoinverse products are computed from an SVD
with numpy's cut (singular values ``<= rcond * s_max`` dropped), without forming ``pinv``.
A Dense layer without bias uses ``A`` for ``[A, 1]``.

With ``rcond = 1e-15`` and a layer wider than its input (``units > d_in + 1``), ``H`` has
rank ``d_in + 1`` and its remaining singular values are rounding noise near the cut: which of
them survive, and so ``W``, depends on rounding (as in the paper's numpy code).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from zorb.baselines import check_untrained
from zorb.errors import ConfigError, FitError
from zorb.core.fit import LayerReport, as_data
from zorb.core.network import Network
from zorb.core.solvers import check_rcond, default_rcond, design_matrix, lstsq_svd, spectrum_summary
from zorb.core.timing import timed


@dataclasses.dataclass
class MLELMReport:
    layers: list[LayerReport]
    """One per Dense layer; ``design_shape`` and ``spectrum`` describe the matrix pseudo-inverted:
    ``H`` for a hidden layer, ``[A, 1]`` for the output layer."""
    fit_seconds: float
    """Wall time of the fit less compilation."""
    compile_seconds: float
    rcond: float
    solver: str = "svd"


@jax.jit
def _autoencode(layer, a, rcond):
    """``(beta^T, spectrum of H, all finite)`` for a hidden Dense layer on its input ``a``."""
    h = layer.forward(a)
    beta, spectrum = lstsq_svd(h, design_matrix(a, layer.bias), rcond=rcond, ridge=jnp.zeros_like(rcond),
                               bias=False)
    return beta.T, spectrum, jnp.all(jnp.isfinite(beta))


@jax.jit
def _least_squares(layer, a, y, rcond):
    w, spectrum = lstsq_svd(a, y, rcond=rcond, ridge=jnp.zeros_like(rcond), bias=layer.bias)
    return w, spectrum, jnp.all(jnp.isfinite(w))


@jax.jit
def _forward(layers, a):
    for layer in layers:
        a = layer.forward(a)
    return a


def fit_mlelm(network: Network, X, Y, *, rcond: float | None = None) -> tuple[Network, MLELMReport]:
    """Train the Dense network ``network`` on ``X`` (N x d), ``Y`` (N x outputs) by ML-ELM.

    Returns the trained network (same layers, new weights) and an ``MLELMReport``. Raises
    ``ConfigError`` for a Conv2D layer, a network ``zorb.fit`` has already trained, a bad
    ``rcond`` or data of the wrong shape, and ``FitError`` for non-finite weights.
    """
    check_untrained(network, "ML-ELM")
    for index, layer in enumerate(network.layers, 1):
        if layer.parametric and layer.kind != "dense":
            raise ConfigError(f"ML-ELM is defined for dense networks, but layer {index} is {layer.kind}: "
                              f"compare a CNN with Adam only")
    dtype = network.dtype
    rcond = default_rcond(dtype) if rcond is None else check_rcond("rcond", rcond)
    a = as_data("X", X, dtype, network.input_shape)
    y = as_data("Y", Y, dtype, network.output_shape)
    if a.shape[0] != y.shape[0]:
        raise ConfigError(f"X has {a.shape[0]} samples but Y has {y.shape[0]}")

    started = time.perf_counter()
    cut = jnp.asarray(rcond, dtype)
    layers = list(network.layers)
    last = max(i for i, layer in enumerate(layers) if layer.parametric)
    reports, compile_total = [], 0.0
    for i in range(last + 1):
        layer = layers[i]
        if not layer.parametric:
            a, c, _ = timed(_forward, (layer,), a)
            compile_total += c
            continue
        if i < last:
            (w, spectrum, finite), c, solve_s = timed(_autoencode, layer, a, cut)
            design_shape = (int(a.shape[0]), layer.units)
        else:
            (w, spectrum, finite), c, solve_s = timed(_least_squares, layer, a, y, cut)
            design_shape = (int(a.shape[0]), int(layer.weights.shape[0]))
        spectrum = np.asarray(spectrum)
        cutoff, rank, cond = spectrum_summary(spectrum, rcond)
        if not bool(finite):
            raise FitError(f"layer {i + 1}: ML-ELM's weights are not finite (condition number {cond:.3g}); "
                           f"raise rcond")
        layers[i] = layer.with_weights(w)
        forward_s = 0.0
        if i < last:
            a, c_forward, forward_s = timed(_forward, (layers[i],), a)
            c += c_forward
        compile_total += c
        reports.append(LayerReport(
            index=i + 1, kind=layer.kind, design_shape=design_shape, solver="svd", u_rcond=rcond, b_rcond=rcond,
            ridge=0.0, spectrum=spectrum, cutoff=cutoff, rank=rank, cond=cond, solve_seconds=solve_s,
            target_seconds=0.0, forward_seconds=forward_s, compile_seconds=c))
    wall = time.perf_counter() - started
    return network.replace_layers(layers), MLELMReport(layers=reports, fit_seconds=wall - compile_total,
                                                       compile_seconds=compile_total, rcond=rcond)
