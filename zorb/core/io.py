"""Save and load a network in a safe format: one ``.npz`` of plain arrays plus a JSON header.

Nothing is pickled: ``load`` reads with ``allow_pickle=False`` and rebuilds layers through
the layer registry from their specs, so a file can carry data but never code.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from zorb.errors import ConfigError
from zorb.core.layers import LAYERS
from zorb.core.network import Network

FORMAT = "zorb.core.network"
VERSION = 1
_HEADER = "__zorb__"


def save(network: Network, path: str | os.PathLike) -> None:
    """Write layer specs, weights and activation state (output ranges, softmax normalisers)."""
    header = {"format": FORMAT, "version": VERSION, "input_shape": list(network.input_shape),
              "dtype": str(network.dtype), "layers": [layer.spec() for layer in network.layers]}
    arrays = {_HEADER: np.array(json.dumps(header))}
    for i, layer in enumerate(network.layers):
        for name, value in layer.arrays().items():
            if value is not None:
                arrays[f"layer{i + 1}.{name}"] = np.asarray(value)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def load(path: str | os.PathLike) -> Network:
    """Read a network written by ``save``; it predicts exactly as the saved one did."""
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data[_HEADER]))
            arrays = {k: data[k] for k in data.files if k != _HEADER}
    except (OSError, KeyError, ValueError) as error:
        raise ConfigError(f"{os.fspath(path)} is not a zorb network file ({error})") from None
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise ConfigError(f"{os.fspath(path)} is not a zorb network file of version {VERSION}")
    shape = tuple(header["input_shape"])
    dtype = jnp.dtype(header["dtype"])
    layers = []
    for i, spec in enumerate(header["layers"]):
        spec = dict(spec)
        cls = LAYERS[spec.pop("type")]
        layer = cls.build(shape, jax.random.key(0), dtype, **spec)
        state = {name: jnp.asarray(arrays[f"layer{i + 1}.{name}"])
                 for name in layer.arrays() if f"layer{i + 1}.{name}" in arrays}
        layers.append(dataclasses.replace(layer, **state))
        shape = layer.out_shape
    return Network(input_shape=tuple(header["input_shape"]), layers=tuple(layers))
