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
import inspect
from typing import Any, ClassVar

import jax

from zorb.errors import ConfigError

Shape = tuple[int, ...]


def layer_class(*, data: tuple[str, ...] = ()):
    """Make ``cls`` a frozen dataclass and a pytree whose leaves are the fields in ``data``."""

    def wrap(cls):
        cls = dataclasses.dataclass(frozen=True, eq=False)(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"layer {cls.__name__}: data names {unknown[0]!r}, which is not one of its fields")
        meta = [n for n in names if n not in data]
        jax.tree_util.register_dataclass(cls, data_fields=list(data), meta_fields=meta)
        cls.data_fields = tuple(data)
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

    records_inverse_state: ClassVar[bool] = False
    """Whether ``inverse`` returns a layer with new state taken from the whole target (a
    global statistic): a chunked or multi-device fit cannot compute that chunk by chunk and
    refuses such a layer (Sigmoid and Tanh, whose range the fit gathers itself, excepted)."""
    data_fields: ClassVar[tuple[str, ...]] = ()
    """The array fields (pytree leaves), set by ``layer_class``."""

    in_shape: Shape

    @classmethod
    def build(cls, in_shape: Shape, key, dtype, **options):
        """The layer for inputs of shape ``in_shape`` (no sample axis) from its spec's options.
        By default the options are the dataclass's configuration fields."""
        return cls(in_shape=in_shape, **options)

    @property
    def out_shape(self) -> Shape:
        return self.in_shape

    def observe(self, x, **layout):
        return self.forward(x, **layout), self

    def spec(self) -> dict[str, Any]:
        """The options that rebuild this layer (``type`` plus its configuration fields)."""
        return {"type": self.kind, **{name: getattr(self, name) for name in option_fields(type(self))}}

    def arrays(self) -> dict[str, Any]:
        """The arrays ``zorb.save`` writes (by default every field in ``data_fields``)."""
        return {name: getattr(self, name) for name in self.data_fields}


def option_fields(cls) -> list[str]:
    """The configuration fields of a layer class: its dataclass fields less ``in_shape`` and arrays."""
    return [f.name for f in dataclasses.fields(cls) if f.init and f.name != "in_shape" and f.name not in cls.data_fields]


def build_parameters(cls) -> tuple[list[str], list[str]]:
    """``(accepted, required)`` option names of ``cls.build``: its keyword parameters, or, for
    the default ``build(**options)``, the class's configuration fields."""
    parameters = inspect.signature(cls.build).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        accepted = option_fields(cls)
        required = [n for n in accepted if fields[n].default is dataclasses.MISSING
                    and fields[n].default_factory is dataclasses.MISSING]
        return accepted, required
    accepted = [p for p in parameters if p not in ("in_shape", "key", "dtype")]
    required = [p for p in accepted if parameters[p].default is inspect.Parameter.empty]
    return accepted, required


LAYER_METHODS = ("build", "forward", "inverse")

LAYERS: dict[str, type] = {}
"""Layer classes by the name a spec's ``type`` uses; ``register_layer`` adds to it."""


def register_layer(cls=None, *, data: tuple[str, ...] = (), replace: bool = False):
    """Add a layer type to the registry under its ``kind`` (decorator).

        @zorb.register_layer(data=("scale",))
        class Scale(zorb.Layer):
            in_shape: tuple
            factor: float = 2.0
            scale: Any = None
            kind = "scale"
            ...

    A class that is not yet a dataclass is made one by ``layer_class(data=data)``. Raises
    ``ConfigError`` for a class without a ``kind``, without ``forward``/``inverse``, or whose
    ``kind`` is taken (unless ``replace``).
    """

    def wrap(cls):
        kind = getattr(cls, "kind", "")
        if not isinstance(kind, str) or not kind.isidentifier():
            raise ConfigError(f"layer class {cls.__name__} needs a kind: a name such as 'my_layer' as a class attribute")
        if not isinstance(cls, type) or not issubclass(cls, Layer):
            raise ConfigError(f"layer class {cls.__name__} must subclass zorb.Layer")
        if not all(callable(getattr(cls, m, None)) for m in LAYER_METHODS):
            raise ConfigError(f"layer class {cls.__name__} must define forward and inverse")
        if kind in LAYERS and not replace and LAYERS[kind] is not cls:
            raise ConfigError(f"layer type {kind!r} is already registered (by {LAYERS[kind].__module__}."
                              f"{LAYERS[kind].__name__}): pick another kind or pass replace=True")
        if not dataclasses.is_dataclass(cls) or "data_fields" not in cls.__dict__:
            cls = layer_class(data=data)(cls)
        LAYERS[kind] = cls
        return cls

    return wrap if cls is None else wrap(cls)


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
