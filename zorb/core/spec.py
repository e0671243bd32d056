"""A network written on one line: ``"conv2d[8,3] sigmoid flatten dense[1024] sigmoid dense[10] softmax"``.

Grammar (whitespace separates layers; no expression is ever evaluated)::

    network := layer (" " layer)*
    layer   := NAME | NAME "[" arg ("," arg)* "]"
    arg     := value | NAME "=" value
    value   := integer | decimal | true | false | outputs | NAME

``NAME`` is a registered layer type (``dense``, ``conv2d``, a plugin's ``my_layer``) or the
name of its class (``Dense``, ``Conv2D``, ``Convolution2D``), in any case. Positional values
fill the layer's options in the order its ``build`` lists them (``dense[units, bias]``,
``conv2d[filters, kernel_size, stride, bias]``, ``quantize[levels, low, high, margin]``);
``name=value`` sets one by name. ``parse_spec`` returns the layer specs ``build_network`` takes.
"""

from __future__ import annotations

import re

from zorb.errors import ConfigError
from zorb.core.layers import LAYERS
from zorb.core.layers.base import build_parameters

ALIASES = {"convolution2d": "conv2d"}
"""Class names of the keras-style facade (``zorb.layers``) that differ from a class's own."""

_TOKEN = re.compile(r"\S+")
_LAYER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[(.*)\])?$")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")
_INT = re.compile(r"[+-]?\d+$")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")


def layer_type(name: str) -> str | None:
    """The registered type a name in a spec stands for (its kind or its class's name, any case)."""
    lowered = name.lower()
    lowered = ALIASES.get(lowered, lowered)
    if lowered in LAYERS:
        return lowered
    for kind, cls in LAYERS.items():
        if cls.__name__.lower() == lowered:
            return kind
    return None


def _value(text: str):
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if _NAME.match(text):
        return text  # 'outputs', or a word option such as relu[clip]
    raise ValueError(text)


def parse_spec(text: str) -> list[dict]:
    """Layer specs from a one-line network; ``ConfigError`` naming the offending token."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("network.spec must be a non-empty string such as \"dense[16] tanh dense[outputs] sigmoid\"")
    specs = []
    for number, match in enumerate(_TOKEN.finditer(text), 1):
        token, where = match.group(), f"network.spec token {number} {match.group()!r} (character {match.start() + 1})"
        found = _LAYER.match(token)
        if found is None:
            raise ConfigError(f"{where} is not a layer: write name or name[value, key=value] with no spaces inside "
                              f"the brackets")
        kind = layer_type(found.group(1))
        if kind is None:
            raise ConfigError(f"{where}: unknown layer type {found.group(1)!r}; known types: {', '.join(LAYERS)}")
        spec = {"type": kind}
        accepted, _ = build_parameters(LAYERS[kind])
        args = found.group(2)
        if args is not None:
            for position, arg in enumerate(args.split(",")):
                key, _, value = arg.rpartition("=")
                key = key.strip()
                if key and key not in accepted:
                    raise ConfigError(f"{where}: {kind} has no option {key!r} (it takes {', '.join(accepted) or 'none'})")
                if not key:
                    if position >= len(accepted):
                        raise ConfigError(f"{where}: {kind} takes at most {len(accepted)} value(s) "
                                          f"({', '.join(accepted) or 'none'}), got {len(args.split(','))}")
                    key = accepted[position]
                if key in spec:
                    raise ConfigError(f"{where}: {kind} option {key!r} is given twice")
                try:
                    spec[key] = _value(value.strip())
                except ValueError:
                    raise ConfigError(f"{where}: {value.strip()!r} is not a number, true, false or a name") from None
        specs.append(spec)
    return specs
