"""Save and load a network in a safe format: one ``.npz`` of plain arrays plus a JSON header.

Nothing is pickled: ``load`` reads only float and text arrays (it parses each ``.npy``
header itself, so an object array is refused before numpy sees it) and rebuilds layers
through the layer registry from their specs, so a file can carry data but never code.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import zipfile
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from zorb.errors import ConfigError
from zorb.core.layers import LAYERS
from zorb.core.network import Network

FORMAT = "zorb.core.network"
VERSION = 1
_HEADER = "__zorb__"
_MAX_SIDE = 2 ** 31  # an input size beyond this is no image or table zorb can fit


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


class _Damaged(Exception):
    """What is wrong with a network file, as the end of a sentence."""


def load(path: str | os.PathLike) -> Network:
    """Read a network written by ``save``; it predicts exactly as the saved one did.

    Raises ``ConfigError`` (one sentence naming the file and what is wrong) for any file
    ``save`` did not write: damaged, truncated, or crafted (unknown layer types or options,
    arrays of the wrong shape or dtype, object arrays, sizes the file does not hold). Each
    array's size is checked against the bytes the file holds, and each layer's weight shapes
    against its spec (computed without allocating) before anything is built.
    """
    where = os.fspath(path)
    try:
        header, arrays = _read(where)
        return _build(header, arrays)
    except _Damaged as problem:
        raise ConfigError(f"{where} is not a usable zorb network file: {problem}") from None


def _read(where: str) -> tuple[dict, dict[str, np.ndarray]]:
    """The header and arrays of the ``.npz`` at ``where``, each member's ``.npy`` header
    checked (plain numeric dtype, size equal to the bytes stored) before it is read."""
    try:
        archive = zipfile.ZipFile(where)
    except FileNotFoundError:
        raise _Damaged("it does not exist") from None
    except IsADirectoryError:
        raise _Damaged("it is a folder") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise _Damaged(f"it is not a NumPy .npz archive ({_short(error)}); write it with zorb.save") from None
    arrays: dict[str, np.ndarray] = {}
    with archive:
        try:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise _Damaged(f"it holds {info.filename!r}, which is not a NumPy array")
                arrays[info.filename[:-4]] = _read_member(archive, info)
        except _Damaged:
            raise
        except (zipfile.BadZipFile, OSError, ValueError, TypeError, SyntaxError, EOFError, KeyError, zlib.error,
                NotImplementedError, RuntimeError, MemoryError, RecursionError, OverflowError) as error:
            raise _Damaged(f"the archive is damaged ({_short(error)})") from None
    if _HEADER not in arrays:
        raise _Damaged("it has no zorb header (it was not written by zorb.save)")
    text = arrays.pop(_HEADER)
    if text.dtype.kind != "U" or text.shape != ():
        raise _Damaged("its header is not a text entry")
    try:
        header = json.loads(str(text))
    except (ValueError, RecursionError):
        raise _Damaged("its header is not valid JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("version") != VERSION:
        raise _Damaged(f"its header does not say format {FORMAT!r}, version {VERSION}")
    return header, arrays


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise _Damaged(f"array {info.filename!r} has .npy version {version}, which zorb does not write")
        shape, fortran, dtype = read_header(member, max_header_size=10000)
        name = info.filename[:-4]
        if dtype.hasobject or dtype.kind not in "fU" or dtype.fields is not None or dtype.subdtype is not None:
            raise _Damaged(f"array {name!r} has dtype {dtype}, but zorb stores only float arrays and text "
                           f"(it never loads Python objects)")
        count = math.prod(shape)
        if count * dtype.itemsize != info.file_size - member.tell():
            raise _Damaged(f"array {name!r} claims shape {shape} of {dtype}, {count * dtype.itemsize} bytes, "
                           f"but the file holds {max(info.file_size - member.tell(), 0)} bytes for it")
        data = member.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise _Damaged(f"array {name!r} is truncated")
    array = np.frombuffer(data, dtype=dtype)
    return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)


def _build(header: dict, arrays: dict[str, np.ndarray]) -> Network:
    """The network the (checked) header and arrays describe."""
    from zorb.core.network import DTYPES

    shape, dtype, specs = header.get("input_shape"), header.get("dtype"), header.get("layers")
    if not isinstance(shape, list) or not shape or \
            not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= _MAX_SIDE for d in shape):
        raise _Damaged(f"its input_shape must be a list of positive sizes, got {shape!r}")
    if dtype not in DTYPES:
        raise _Damaged(f"its dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not isinstance(specs, list) or not specs or not all(isinstance(spec, dict) for spec in specs):
        raise _Damaged("its layers must be a non-empty list of layer specs")
    in_shape, dtype = tuple(shape), jnp.dtype(dtype)
    layers, used = [], set()
    for index, spec in enumerate(specs, 1):
        spec = dict(spec)
        kind = spec.pop("type", None)
        if not isinstance(kind, str) or kind not in LAYERS:
            raise _Damaged(f"layer {index} has type {kind!r}, not one of {', '.join(LAYERS)}")
        cls = LAYERS[kind]
        try:
            # the layer's shapes from its spec, computed without allocating its weights
            abstract = jax.eval_shape(lambda key: cls.build(in_shape, key, dtype, **spec), jax.random.key(0))
        except Exception as error:  # noqa: BLE001 - a spec's TypeError/ValueError/ZorbError all mean the same
            raise _Damaged(f"layer {index} ({kind}) cannot be built from {spec}: {_short(error)}") from None
        state = {}
        for name, expected in abstract.arrays().items():
            key = f"layer{index}.{name}"
            if key not in arrays:
                if expected is not None:
                    raise _Damaged(f"layer {index} ({kind}) has no {name!r} array")
                continue
            array = arrays[key]
            if array.dtype != dtype or (expected is not None and tuple(array.shape) != tuple(expected.shape)):
                want = f"{tuple(expected.shape)} " if expected is not None else ""
                raise _Damaged(f"array {key!r} is {array.dtype} {tuple(array.shape)}, but layer {index} ({kind}) "
                               f"needs {want}{dtype}")
            state[name] = jnp.asarray(array)
            used.add(key)
        layer = cls.build(in_shape, jax.random.key(0), dtype, **spec)
        layers.append(dataclasses.replace(layer, **state))
        in_shape = layer.out_shape
    unused = sorted(set(arrays) - used)
    if unused:
        raise _Damaged(f"it holds array {unused[0]!r}, which no layer uses")
    return Network(input_shape=tuple(shape), layers=tuple(layers))


def _short(error: BaseException) -> str:
    """An error's first line, without numpy's advice to load pickles."""
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    unknown = re.search(r"unexpected keyword argument '(\w+)'", text)
    if unknown:
        return f"it has no option {unknown.group(1)!r}"
    if "malformed node" in text:
        return "an array's .npy header is not a plain Python literal"
    return type(error).__name__ if "pickle" in text.lower() else text[:200]
