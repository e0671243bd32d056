"""Keras-style layer objects: each one stands for a layer spec (``{"type": "dense", "units": 10}``)
that ``zorb.build_network`` resolves through the registry. Nothing here computes: the layers
themselves live in ``zorb.core.layers``; importing this module loads neither JAX nor numpy.

    zorb.layers.Convolution2D(n_kernels=8, size=3, stride=1) == zorb.layers.Conv2D(filters=8, kernel_size=3)
    zorb.layers.Dense(units=10), zorb.layers.Dense(10), zorb.layers.Sigmoid(), zorb.layers.Softmax()
    zorb.layers.Layer("my_layer", gain=2.0)   # any registered type, a plugin's too

Positional values fill the options in the order the layer's ``build`` lists them (as in
``network.spec``); keras names (``filters``, ``kernel_size``, ``strides``, ``use_bias``) and the
short ones (``n_kernels``, ``size``) map to zorb's option names.
"""

from __future__ import annotations

from typing import Any


class Layer:
    """A layer spec: ``Layer("dense", units=10).spec() == {"type": "dense", "units": 10}``."""

    renames: dict[str, str] = {}

    def __init__(self, kind: str, *values: Any, **options: Any):
        self.kind = kind
        self.values = values
        self.options = {self.renames.get(key, key): value for key, value in options.items()}

    def spec(self) -> dict[str, Any]:
        """The layer spec ``zorb.build_network`` takes (positional values named here)."""
        spec = {"type": self.kind}
        if self.values:
            from zorb.core.layers import LAYERS
            from zorb.core.layers.base import build_parameters
            from zorb.errors import ConfigError

            if self.kind not in LAYERS:
                raise ConfigError(f"unknown layer type {self.kind!r}; known types: {', '.join(LAYERS)}")
            accepted, _ = build_parameters(LAYERS[self.kind])
            if len(self.values) > len(accepted):
                raise ConfigError(f"{self.kind} takes at most {len(accepted)} positional value(s) "
                                  f"({', '.join(accepted) or 'none'}), got {len(self.values)}")
            spec.update(zip(accepted, self.values))
        for key, value in self.options.items():
            if key in spec:
                from zorb.errors import ConfigError

                raise ConfigError(f"{self.kind} option {key!r} is given twice")
            spec[key] = value
        return spec

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.spec().items() if k != 'type')})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Layer) and self.spec() == other.spec()


_KERAS = {"strides": "stride", "use_bias": "bias"}


def _layer_class(name: str, kind: str, renames: dict[str, str] | None = None) -> type:
    def __init__(self, *values, **options):
        Layer.__init__(self, kind, *values, **options)

    doc = f"The ``{kind}`` layer (``zorb.core.layers``) as a spec; options as in docs/layers.md."
    return type(name, (Layer,), {"__init__": __init__, "__doc__": doc, "renames": {**_KERAS, **(renames or {})},
                                 "__module__": __name__})


Dense = _layer_class("Dense", "dense")
Conv2D = _layer_class("Conv2D", "conv2d")
Convolution2D = _layer_class("Convolution2D", "conv2d", {"n_kernels": "filters", "size": "kernel_size"})
Flatten = _layer_class("Flatten", "flatten")
Identity = _layer_class("Identity", "identity")
Sigmoid = _layer_class("Sigmoid", "sigmoid")
Tanh = _layer_class("Tanh", "tanh")
ReLU = _layer_class("ReLU", "relu")
Softmax = _layer_class("Softmax", "softmax")
Step = _layer_class("Step", "step")
Sign = _layer_class("Sign", "sign")
Quantize = _layer_class("Quantize", "quantize")
HardTanh = _layer_class("HardTanh", "hardtanh")

__all__ = ["Layer", "Dense", "Conv2D", "Convolution2D", "Flatten", "Identity", "Sigmoid", "Tanh", "ReLU", "Softmax",
           "Step", "Sign", "Quantize", "HardTanh"]
