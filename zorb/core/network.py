"""A sequential network built from a list of layer specs, shapes inferred at build time."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from zorb.errors import ConfigError
from zorb.core.layers import LAYERS
from zorb.core.layers.base import Shape, build_parameters

OUTPUTS = "outputs"
"""``units: outputs`` (or ``filters: outputs``) takes the width of the dataset's targets."""

DTYPES = ("float64", "float32")


@dataclasses.dataclass(frozen=True, eq=False)
class Network:
    """An immutable stack of layers; a pytree whose leaves are the layers' arrays.

    ``input_shape`` excludes the sample axis: ``(784,)`` or ``(28, 28, 1)``.
    """

    input_shape: Shape
    layers: tuple

    @property
    def output_shape(self) -> Shape:
        return self.layers[-1].out_shape if self.layers else self.input_shape

    @property
    def parametric_indices(self) -> list[int]:
        """1-based positions of the Dense/Conv2D layers, the numbering every report uses."""
        return [i + 1 for i, layer in enumerate(self.layers) if layer.parametric]

    @property
    def weights(self) -> list:
        return [layer.weights for layer in self.layers if layer.parametric]

    @property
    def dtype(self):
        for layer in self.layers:
            if layer.parametric:
                return layer.weights.dtype
        return jnp.dtype("float64")

    def replace_layers(self, layers: Sequence) -> "Network":
        return dataclasses.replace(self, layers=tuple(layers))

    def with_weights(self, weights: Sequence) -> "Network":
        """The same network starting from given weight arrays, one per parametric layer in order."""
        weights = list(weights)
        params = [i for i, layer in enumerate(self.layers) if layer.parametric]
        if len(weights) != len(params):
            raise ConfigError(f"expected {len(params)} weight arrays (one per dense/conv2d layer), got {len(weights)}")
        layers = list(self.layers)
        for i, w in zip(params, weights):
            expected = layers[i].weights.shape
            w = jnp.asarray(w)
            if w.shape != expected:
                raise ConfigError(f"layer {i + 1}: weights must have shape {expected}, got {w.shape}")
            layers[i] = layers[i].with_weights(w.astype(layers[i].weights.dtype))
        return self.replace_layers(layers)

    def describe(self) -> str:
        lines = [f"input {self.input_shape}"]
        for i, layer in enumerate(self.layers, 1):
            extra = f" weights {tuple(layer.weights.shape)}" if layer.parametric else ""
            lines.append(f"layer {i}: {layer.kind} -> {layer.out_shape}{extra}")
        return "\n".join(lines)


jax.tree_util.register_dataclass(Network, data_fields=["layers"], meta_fields=["input_shape"])


def _layer_options(index: int, spec: Mapping, output_dim: int | None) -> tuple[type, dict]:
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise ConfigError(f"layer {index}: a layer spec is a mapping with a 'type', got {spec!r}")
    kind = spec["type"]
    if kind not in LAYERS:
        raise ConfigError(f"layer {index}: unknown layer type {kind!r}; known types: {', '.join(LAYERS)}")
    options = {k: v for k, v in spec.items() if k != "type"}
    for key, value in options.items():
        if value == OUTPUTS:
            if output_dim is None:
                raise ConfigError(f"layer {index}: {key}: outputs needs the dataset's output width")
            options[key] = output_dim
    return LAYERS[kind], options


def _build_layer(cls, index: int, in_shape: Shape, key, dtype, options: dict):
    accepted, required = build_parameters(cls)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) if accepted else "no parameters"
        raise ConfigError(f"layer {index}: {cls.kind} has no parameter {unknown[0]!r} (it takes {takes})")
    missing = [p for p in required if p not in options]
    if missing:
        raise ConfigError(f"layer {index}: {cls.kind} needs {missing[0]!r}")
    try:
        return cls.build(in_shape, key, dtype, **options)
    except ConfigError as error:
        raise ConfigError(f"layer {index}: {error}") from None


@functools.partial(jax.jit, static_argnums=1)
def _layer_keys(seed, count: int) -> tuple:
    """``split(key(seed), count)`` as ``count`` separate keys, in one compiled program: the
    same ops run one by one (and each key indexed out) would compile five."""
    return tuple(jax.random.split(jax.random.key(seed), count))


def build_network(specs: Sequence[Mapping[str, Any]], input_shape: Sequence[int], *,
                  output_dim: int | None = None, seed: int = 0, dtype: str = "float64",
                  weights: Sequence | None = None) -> Network:
    """Build a network from layer specs such as ``{"type": "dense", "units": 10}``.

    Layer ``i`` (0-based in the stack) draws its Glorot-uniform weights from
    ``split(key(seed), len(specs))[i]``, so a seed fixes every initial weight and any
    implementation given the same seed starts from the same arrays. ``weights`` (one array
    per parametric layer) replaces them. Raises ``ConfigError`` naming the layer for an
    unknown type, a bad parameter or an impossible shape, before any compute.
    """
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if isinstance(specs, (str, bytes)) or not isinstance(specs, Sequence) or len(specs) == 0:
        raise ConfigError("a network is a non-empty list of layer specs")
    shape = tuple(int(d) for d in input_shape)
    if not shape or any(d < 1 for d in shape):
        raise ConfigError(f"input shape must be non-empty and positive, got {tuple(input_shape)}")
    if output_dim is not None and (isinstance(output_dim, bool) or int(output_dim) < 1):
        raise ConfigError(f"output_dim must be a positive integer, got {output_dim!r}")
    keys = _layer_keys(seed, len(specs))
    layers = []
    for i, spec in enumerate(specs):
        cls, options = _layer_options(i + 1, spec, output_dim)
        layer = _build_layer(cls, i + 1, shape, keys[i], jnp.dtype(dtype), options)
        layers.append(layer)
        shape = layer.out_shape
    if output_dim is not None and int(np.prod(shape)) != output_dim:
        raise ConfigError(f"the network ends with {'x'.join(map(str, shape))} outputs but the targets have "
                          f"{output_dim}: set the last dense layer's units to {output_dim} (or 'outputs')")
    network = Network(input_shape=tuple(int(d) for d in input_shape), layers=tuple(layers))
    return network.with_weights(weights) if weights is not None else network
